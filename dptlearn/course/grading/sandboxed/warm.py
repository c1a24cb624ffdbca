"""Warm kernels: a fork server that imports the course's modules once, one fresh kernel per notebook.

Importing torch, matplotlib and dptlearn costs a kernel ~1.6 CPU-s, more than the rest of a
graded notebook. With ``--dptlearn-preload MODS`` the grading plugin starts a *fork server*
(``serve``): one process that imports MODS (the modules the solutions' set-up cells import) once,
then forks a fresh child for every kernel the run needs. Each child turns into an ordinary
ipykernel, so every notebook still gets its own process, its own namespace and its own copy of
every module's state. jupyter_client starts the tiny *launcher* (``launcher.py``) instead of
ipykernel: the launcher asks the server for a child, forwards signals (interrupts) to it and
exits with its status, so the kernel manager's liveness checks, interrupts and kills work as
for a plain kernel (the server SIGKILLs the child as soon as its launcher's connection closes).
A launcher that cannot reach the server execs the plain ``ipykernel_launcher`` instead.

The server runs wherever the pytest process runs: inside a student's sandbox when grading.
Standard library only at import time; run as ``python warm.py --fork-server SOCKET MODS...``.
"""
from __future__ import annotations

import json
import os
import sys

LAUNCHER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "launcher.py")


class WarmKernels:
    """The fork server of one pytest run and the kernel spec that starts kernels through it."""

    def __init__(self, preload: list[str], where: str | None = None):
        import subprocess
        import tempfile

        self.dir = tempfile.mkdtemp(prefix="kernels-", dir=where)
        if len(self.dir) > 80:          # AF_UNIX socket paths are limited to ~107 bytes
            os.rmdir(self.dir)
            self.dir = tempfile.mkdtemp(prefix="dptlearn-kernels-")
        self.socket = os.path.join(self.dir, "server.sock")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--fork-server", self.socket, *preload],
            stdin=subprocess.DEVNULL)

    def start_kernel(self, cwd, startup_timeout):
        """nbval's ``start_new_kernel``, with the launcher as the kernel's command."""
        from jupyter_client.manager import KernelManager
        from nbval.kernel import CURRENT_ENV_KERNEL_NAME, NbvalKernelspecManager

        launcher = [sys.executable, "-I", "-S", LAUNCHER, str(self.proc.pid), self.socket]

        class Specs(NbvalKernelspecManager):
            def get_kernel_spec(self, kernel_name):
                spec = super().get_kernel_spec(kernel_name)
                spec.argv = launcher + spec.argv[spec.argv.index("-f"):]
                return spec

        km = KernelManager(kernel_name=CURRENT_ENV_KERNEL_NAME, kernel_spec_manager=Specs())
        km.start_kernel(stderr=open(os.devnull, "w"), cwd=cwd)
        kc = km.client()
        kc.start_channels()
        try:
            kc.wait_for_ready(timeout=startup_timeout)
        except RuntimeError:
            kc.stop_channels()
            km.shutdown_kernel(now=True)
            raise
        return km, kc

    def close(self):
        import shutil

        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except Exception:
                self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def serve(path: str, preload: list[str]) -> None:
    """The fork server: import ``preload``, then fork one kernel per launcher that connects.

    Runs until its parent (the pytest process) ends or it is terminated; its children are
    killed with it. Single-threaded on purpose: forking is only safe without other threads.
    """
    import gc
    import importlib
    import select
    import signal
    import socket

    parent = os.getppid()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)                 # bound before the slow imports: launchers queue up
    listener.listen(128)
    for name in preload:
        try:
            importlib.import_module(name)
        except BaseException:           # a module that fails here fails in the kernel too
            pass
    gc.collect()
    gc.freeze()                         # keep the children from touching every shared page
    children: dict = {}                 # launcher connection -> child pid
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    try:
        while not stop and os.getppid() == parent:
            try:
                ready, _, _ = select.select([listener, *children], [], [], 0.05)
            except InterruptedError:
                ready = []
            for conn in ready:
                if conn is listener:
                    _fork_kernel(listener, children)
                elif not conn.recv(1):      # the launcher died or was killed: so must its kernel
                    _kill(children.pop(conn))
                    conn.close()
            while children:                 # report children that ended to their launchers
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    break
                for conn, kid in list(children.items()):
                    if kid == pid:
                        code = os.waitstatus_to_exitcode(status)
                        try:
                            conn.sendall(json.dumps({"status": code}).encode() + b"\n")
                        except OSError:
                            pass
                        conn.close()
                        del children[conn]
    finally:
        for pid in children.values():
            _kill(pid)
        for pid in children.values():
            try:
                os.waitpid(pid, 0)          # reaped, so their CPU time is accounted to the run
            except OSError:
                pass
        listener.close()


def _kill(pid: int) -> None:
    import signal

    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


def _fork_kernel(listener, children: dict) -> None:
    """Accept one launcher, read its request and fork a kernel for it."""
    import socket
    import struct

    conn, _ = listener.accept()
    fds: list[int] = []
    try:
        conn.settimeout(10)
        data, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
        if len(data) < 8 or len(fds) != 3:
            raise OSError("bad request")
        size = struct.unpack("!Q", data[:8])[0]
        data = data[8:]
        while len(data) < size:
            more = conn.recv(size - len(data))
            if not more:
                raise OSError("truncated request")
            data += more
        request = json.loads(data)
        conn.settimeout(None)
    except (OSError, ValueError):
        conn.close()
        for fd in fds:
            os.close(fd)
        return
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            listener.close()
            for other in children:
                other.close()
            conn.close()
            code = _become_kernel(request, fds)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            try:
                import atexit

                atexit._run_exitfuncs()
                for stream in (sys.stdout, sys.stderr):
                    stream.flush()
            finally:
                os._exit(code)
    for fd in fds:
        os.close(fd)
    try:
        conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
    except OSError:
        _kill(pid)
        conn.close()
        return
    children[conn] = pid


def _become_kernel(request: dict, fds: list[int]) -> int:
    """In the forked child: take the launcher's stdio, folder and environment, run ipykernel."""
    import random
    import signal

    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ["JPY_PARENT_PID"] = str(os.getppid())   # ipykernel exits if the server dies
    del sys.path[0]                     # this script's folder: ipykernel_launcher drops its
                                        # sys.path[0] too; IPython then inserts '' (the cwd)
    random.seed()                       # unseeded generators must differ between kernels
    if "numpy.random" in sys.modules:
        sys.modules["numpy.random"].seed()
    import ipykernel_launcher
    from ipykernel import kernelapp

    sys.argv = [ipykernel_launcher.__file__, *request["args"]]
    kernelapp.launch_new_instance()
    return 0


if __name__ == "__main__" and sys.argv[1:2] == ["--fork-server"]:
    serve(sys.argv[2], sys.argv[3:])
