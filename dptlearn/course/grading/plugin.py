"""pytest plugin that turns an nbval run into a fair, per-exercise grading run.

Loaded by ``dptlearn.grade`` with ``-p dptlearn._grade_plugin`` next to ``--nbval-lax``;
it does nothing unless ``--dptlearn-results`` is given. It relies on nbval 0.11 internals
(``IPyNbCell.cell`` / ``.options`` / ``.parent.kernel`` / ``.parent.timed_out`` and the
module-level ``nbval.plugin.RunningKernel``), which is why the project pins ``nbval==0.11.*``.

What it changes, cell by cell (see docs/grading.md, "Scoring rules"):

* Check cells (tags ``check`` + ``ex:<id>``) may not be excused: ``raises-exception`` and
  ``NBVAL_SKIP`` are ignored for them.
* Every cell's report carries JUnit properties: ``exercise``, ``role``
  (``check``/``solution``/``cell``), ``points`` (check cells) and, when it failed, a short
  ``message`` (``ExceptionName: text``, ANSI stripped).
* A timeout only fails the cell that timed out: nbval's "mark every later cell xfail" rule is
  switched off. A kernel that ignores the interrupt and keeps printing is killed after
  ``KILL_GRACE_S`` seconds.
* A kernel that dies (``os._exit``, ``exit()``, a segfault, out of memory) fails the running
  cell at once instead of after the full cell timeout; the next cell gets a fresh kernel in
  which the earlier cells are replayed silently (except the ones that crashed or timed out).
* Each cell's stream output is capped at ``OUTPUT_CAP_CHARS`` characters, so a cell printing
  gigabytes cannot exhaust the grader's memory.
* Every cell's report names its ``submission``: the folder the graded copy sits in (the
  grader runs several submissions in one pytest session, one folder and one kernel each).
* Each check cell's outcome is also appended to the ``--dptlearn-results`` JSON-lines file as
  it happens, so a run killed by the grader's watchdog still leaves partial results.
* With ``--dptlearn-preload MODULES`` every kernel (restarts included) is forked from a server
  that has imported MODULES once ("warm kernels", see ``WarmKernels``): still one process per
  notebook, but without paying ~1.6 CPU-s of torch/matplotlib imports each time.
"""
from __future__ import annotations

import json
import os
import re
import sys
import time
from queue import Empty

import pytest

if __name__ == "_dptlearn_grade_plugin":      # the copy a grading run's pytest loads (-p)
    # nbval -> nbformat -> jsonschema imports rfc3987_syntax, which builds ~40 lark grammars
    # (~1.2 CPU-s per pytest process) for IRI format checks notebook validation never makes.
    sys.modules.setdefault("rfc3987_syntax", None)

KILL_GRACE_S = 5.0          # after an interrupt, how long a still-busy kernel may keep talking
POLL_S = 0.2                # how often a waiting cell checks that its kernel is still alive
OUTPUT_CAP_CHARS = 1_000_000
START_ATTEMPTS = 3          # kernel start-ups tried before a notebook (or a restart) gives up
MESSAGE_CHARS = 300
ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


class KernelLost(Exception):
    """The kernel process ended (or asked to end) while a cell was running."""


def clean_message(text: str, limit: int = MESSAGE_CHARS) -> str:
    """Strip ANSI codes, fold whitespace to single spaces and cut to ``limit`` characters."""
    text = " ".join(ANSI_RE.sub("", str(text)).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def cell_tags(cell) -> list[str]:
    """The tags of a notebook cell (an empty list when it has none or they are malformed)."""
    tags = (cell.get("metadata") or {}).get("tags") or []
    return [t for t in tags if isinstance(t, str)] if isinstance(tags, list) else []


def exercise_of(tags: list[str]) -> str | None:
    """The ``<id>`` of the first ``ex:<id>`` tag, or None."""
    return next((t[3:] for t in tags if t.startswith("ex:") and len(t) > 3), None)


def points_of(tags: list[str]) -> str | None:
    """The ``<n>`` of the first ``points:<n>`` tag, or None."""
    return next((t[7:] for t in tags if t.startswith("points:")), None)


def _make_guarded_kernel_class():
    """Subclass nbval's RunningKernel (imported lazily: the plugin module must import cheaply)."""
    from nbval.kernel import RunningKernel

    class GuardedKernel(RunningKernel):
        """nbval's kernel wrapper, plus crash detection, a kill switch and an output cap."""

        def __init__(self, kernel_name, cwd=None, startup_timeout=60):
            """Start the kernel, retrying: parallel runs can race for the same free ports."""
            for attempt in range(START_ATTEMPTS):
                try:
                    if WARM is not None and kernel_name == CURRENT_ENV_KERNEL_NAME:
                        self.km, self.kc = WARM.start_kernel(cwd, startup_timeout)
                        self._ensure_iopub_up()
                    else:
                        super().__init__(kernel_name, cwd=cwd, startup_timeout=startup_timeout)
                    return
                except Exception:
                    self.dispose()
                    if attempt == START_ATTEMPTS - 1:
                        raise

        def execute_cell_input(self, cell_input, allow_stdin=None):
            self.exit_requested = False
            self.kill_deadline = None
            self.output_chars = 0
            self.output_capped = False
            return super().execute_cell_input(cell_input, allow_stdin=allow_stdin)

        def await_reply(self, msg_id, timeout=None):
            """Like nbval's, but polls so that a dead kernel is noticed within ``POLL_S``."""
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                left = POLL_S if deadline is None else min(POLL_S, deadline - time.monotonic())
                try:
                    msg = self.get_message(stream="shell", timeout=max(left, 0))
                except Empty:
                    if not self.is_alive():
                        raise KernelLost("the kernel died while running this cell "
                                         "(os._exit, a segfault or out of memory?)") from None
                    if deadline is not None and time.monotonic() >= deadline:
                        raise
                    continue
                if msg["parent_header"].get("msg_id") != msg_id:
                    continue
                if msg["content"].get("status") == "aborted":
                    raise RuntimeError("Kernel aborted execution request")
                for payload in msg["content"].get("payload") or []:
                    if payload.get("source") == "ask_exit" and not payload.get("keepkernel"):
                        self.exit_requested = True
                return

        def interrupt(self):
            """Interrupt, and arm the kill switch used by ``get_message``."""
            self.kill_deadline = time.monotonic() + KILL_GRACE_S
            if self.is_alive():
                super().interrupt()

        def get_message(self, stream, timeout=None):
            """nbval's reader, plus: kill a kernel that outlives its interrupt; cap output."""
            deadline = getattr(self, "kill_deadline", None)
            if stream == "iopub" and deadline is not None and time.monotonic() > deadline:
                self.kill()
                raise Empty
            msg = super().get_message(stream, timeout=timeout)
            if stream == "iopub":
                self._cap_output(msg)
            return msg

        def _cap_output(self, msg):
            """Blank stream text past ``OUTPUT_CAP_CHARS`` characters for the current cell."""
            if msg.get("msg_type") != "stream":
                return
            text = msg["content"].get("text", "")
            self.output_chars = getattr(self, "output_chars", 0) + len(text)
            if self.output_chars > OUTPUT_CAP_CHARS:
                if getattr(self, "output_capped", False):
                    msg["content"]["text"] = ""
                else:
                    self.output_capped = True
                    msg["content"]["text"] = "\n[output truncated by the grader]\n"

        def kill(self):
            """Kill the kernel process now (it ignored the interrupt)."""
            try:
                if hasattr(self, "km") and self.km.has_kernel:
                    self.km.kill_kernel()
            except Exception:  # already gone
                pass

        def dispose(self):
            """Release a kernel that is dead or about to be replaced (never raises)."""
            try:
                if hasattr(self, "km"):
                    self.stop()
            except Exception:
                pass

    return GuardedKernel


GuardedKernel = None  # set in pytest_configure when the plugin is active
CURRENT_ENV_KERNEL_NAME = ":nbval-parent-env"  # nbval.kernel's name for --nbval-current-env


# ----------------------------------------------------------------------------- warm kernels
#
# Importing torch, matplotlib and dptlearn costs a kernel ~1.6 CPU-s, more than the rest of a
# graded notebook. With ``--dptlearn-preload MODS`` the plugin starts a *fork server*: one
# process that imports MODS (the modules the solutions' set-up cells import) once, then forks
# a fresh child for every kernel the run needs. Each child turns into an ordinary ipykernel,
# so every notebook still gets its own process, its own namespace and its own copy of every
# module's state. jupyter_client starts a tiny *launcher* instead of ipykernel: the launcher
# asks the server for a child, forwards signals (interrupts) to it and exits with its status,
# so the kernel manager's liveness checks, interrupts and kills work as for a plain kernel
# (the server SIGKILLs the child as soon as its launcher's connection closes). A launcher that
# cannot reach the server execs the plain ``ipykernel_launcher`` instead.

LAUNCHER_SOURCE = r'''"""dptlearn-grade kernel launcher (see WarmKernels in the grading plugin)."""
import errno, json, os, signal, socket, struct, sys, time

REPLY_TIMEOUT_S = 40    # the server is still importing (or stuck): start a plain kernel

def plain():
    os.execv(sys.executable, [sys.executable, "-m", "ipykernel_launcher"] + sys.argv[3:])

def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False

def main():
    server, path, args = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    deadline = time.monotonic() + 30
    while True:                                   # the server may not have bound its socket yet
        try:
            sock.connect(path)
            break
        except OSError as exc:
            if exc.errno != errno.ENOENT or time.monotonic() > deadline or not alive(server):
                plain()
            time.sleep(0.05)
    req = json.dumps({"cwd": os.getcwd(), "env": dict(os.environ), "args": args}).encode()
    try:
        socket.send_fds(sock, [struct.pack("!Q", len(req)) + req], [0, 1, 2])
        sock.settimeout(REPLY_TIMEOUT_S)
        reply = sock.makefile("rb")
        pid = json.loads(reply.readline())["pid"]
    except (OSError, ValueError, KeyError):
        sock.close()
        plain()
    sock.settimeout(None)
    def forward(signum, frame):
        try:
            os.kill(pid, signum)
        except OSError:
            pass
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, forward)
    line = reply.readline()                       # {"status": ...} once the child has ended
    status = json.loads(line)["status"] if line else 1
    os._exit(status if status >= 0 else 128 - status)

main()
'''


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
        self.launcher = os.path.join(self.dir, "launcher.py")
        with open(self.launcher, "w", encoding="utf-8") as fh:
            fh.write(LAUNCHER_SOURCE)
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--fork-server", self.socket, *preload],
            stdin=subprocess.DEVNULL)

    def start_kernel(self, cwd, startup_timeout):
        """nbval's ``start_new_kernel``, with the launcher as the kernel's command."""
        from jupyter_client.manager import KernelManager
        from nbval.kernel import NbvalKernelspecManager

        launcher = [sys.executable, "-I", "-S", self.launcher, str(self.proc.pid), self.socket]

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


WARM: WarmKernels | None = None


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


def pytest_addoption(parser):
    parser.getgroup("dptlearn").addoption(
        "--dptlearn-results", default=None, metavar="PATH",
        help="grading mode: write each check cell's outcome to this JSON-lines file")
    parser.getgroup("dptlearn").addoption(
        "--dptlearn-preload", default=None, metavar="MODULES",
        help="grading mode: fork kernels from a server that imported these modules "
             "(comma-separated; may be empty)")


def _active(config) -> bool:
    return bool(config.getoption("--dptlearn-results", default=None))


def pytest_configure(config):
    global GuardedKernel
    if not _active(config):
        return
    import nbval.plugin

    GuardedKernel = _make_guarded_kernel_class()
    nbval.plugin.RunningKernel = GuardedKernel   # IPyNbFile.setup builds its kernel from this
    preload = config.getoption("--dptlearn-preload", default=None)
    if preload is not None and hasattr(os, "fork") and hasattr(__import__("socket"), "send_fds"):
        global WARM
        results = os.path.abspath(config.getoption("--dptlearn-results"))
        WARM = WarmKernels([m for m in preload.split(",") if m], os.path.dirname(results))


def pytest_unconfigure(config):
    global WARM
    if WARM is not None:
        WARM.close()
        WARM = None


def _is_cell(item) -> bool:
    return hasattr(item, "cell") and hasattr(item, "options")


def pytest_collection_modifyitems(config, items):
    """Tag each cell item with its exercise/role/points and forbid excusing check cells."""
    if not _active(config):
        return
    for item in filter(_is_cell, items):
        tags = cell_tags(item.cell)
        ex = exercise_of(tags)
        role = "check" if "check" in tags else "solution" if "solution" in tags else "cell"
        submission = item.parent.path.parent.name
        item.dptlearn = {"exercise": ex, "role": role, "message": None, "lost": None,
                         "submission": submission}
        item.user_properties.append(("submission", submission))
        if ex:
            item.user_properties.append(("exercise", ex))
        item.user_properties.append(("role", role))
        if role == "check":
            item.user_properties.append(("points", points_of(tags) or "0"))
            item.options["check_exception"] = False
            item.options["skip"] = False


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Undo nbval's 'xfail after a timeout' and bring back a lost kernel before each cell."""
    if not (_active(item.config) and _is_cell(item)):
        return
    nb = item.parent
    nb.timed_out = False
    if nb.kernel is not None and not nb.kernel.is_alive():
        _restart_and_replay(nb, item.config)


def _restart_and_replay(nb, config):
    """Give notebook ``nb`` a fresh kernel and silently re-run its replayable cells."""
    from nbval.kernel import CURRENT_ENV_KERNEL_NAME

    old = nb.kernel
    if hasattr(old, "dispose"):
        old.dispose()
    opt = config.option
    if opt.nbval_current_env:
        name = CURRENT_ENV_KERNEL_NAME
    else:
        name = opt.nbval_kernel_name or nb.nb.metadata.get("kernelspec", {}).get("name", "python")
    try:
        nb.kernel = GuardedKernel(name, cwd=str(nb.fspath.dirname),
                                  startup_timeout=opt.nbval_kernel_startup_timeout)
    except Exception as exc:
        nb.kernel = old
        raise KernelLost(f"the kernel died earlier and could not be restarted: {exc}") from exc
    for source in getattr(nb, "dptlearn_replay", []):
        if not _replay_cell(nb.kernel, source, opt.nbval_cell_timeout):
            break


def _replay_cell(kernel, source: str, timeout: float) -> bool:
    """Run one earlier cell again, ignoring its result. False when the kernel is lost again."""
    try:
        msg_id = kernel.execute_cell_input(source, allow_stdin=False)
        try:
            kernel.await_reply(msg_id, timeout=timeout)
        except Empty:
            kernel.interrupt()
        kernel.await_idle(msg_id, KILL_GRACE_S)
        return kernel.is_alive()
    except (Empty, KernelLost, RuntimeError):
        return False


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """Turn a lost kernel into an ordinary cell failure with a clear message."""
    if not (_active(item.config) and _is_cell(item)):
        return (yield)
    try:
        result = yield
    except KernelLost as exc:
        _lose_kernel(item, str(exc))
    if getattr(item.parent.kernel, "exit_requested", False):
        _lose_kernel(item, "this cell shut the kernel down (exit() or quit())")
    return result


def _lose_kernel(item, why: str):
    """Fail the cell: its kernel died or asked to exit. Stop it so the next cell restarts it."""
    kernel = item.parent.kernel
    if hasattr(kernel, "dispose"):
        kernel.dispose()
    item.dptlearn["lost"] = why
    item.raise_cell_error(why)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the short message, remember replayable cells, log check-cell outcomes."""
    report = yield
    if not (_active(item.config) and _is_cell(item)) or call.when != "call":
        return report
    info = item.dptlearn
    nb = item.parent
    kernel_ok = nb.kernel is not None and nb.kernel.is_alive()
    if report.failed:
        info["message"] = _failure_message(item, call)
        item.user_properties.append(("message", info["message"]))
    if kernel_ok and not nb.timed_out and info["role"] != "check" and not report.skipped:
        nb.dptlearn_replay = getattr(nb, "dptlearn_replay", []) + [item.cell.source]
    if info["role"] == "check":
        _log_check(item, report.passed)
    return report


def _failure_message(item, call) -> str:
    """``ExceptionName: text`` for a failed cell (kernel error, timeout or lost kernel)."""
    if item.dptlearn.get("lost"):
        return clean_message(f"KernelDied: {item.dptlearn['lost']}")
    if item.parent.timed_out:
        secs = item.config.option.nbval_cell_timeout
        return clean_message(f"Timeout: the cell ran longer than {secs:g} s and was stopped "
                             f"(an infinite loop?)")
    exc = call.excinfo.value if call.excinfo else None
    text = str(exc) if exc is not None else "failed"
    errors = [o for o in (item.test_outputs or []) if o.get("output_type") == "error"]
    if errors:
        return clean_message(f"{errors[-1]['ename']}: {errors[-1]['evalue']}")
    return clean_message(text)


def _log_check(item, passed: bool) -> None:
    """Append one check cell's outcome to the --dptlearn-results file."""
    path = item.config.getoption("--dptlearn-results")
    info = item.dptlearn
    line = {"submission": info["submission"], "exercise": info["exercise"], "passed": bool(passed),
            "message": None if passed else info["message"]}
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(line) + "\n")


if __name__ == "__main__" and sys.argv[1:2] == ["--fork-server"]:
    serve(sys.argv[2], sys.argv[3:])
