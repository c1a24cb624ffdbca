"""First program of a student's sandbox: set resource limits, drop root, exec the grading run.

Run as ``python -I -S confine.py UID DATA_BYTES NPROC FSIZE_BYTES CPU_S -- COMMAND...``. UID 0
means "keep the current user" (the fallback without bubblewrap, or a grader that is not root).
Limits are set here rather than by the grader, so that the grader never forks with threads
running, and after the switch to UID so that RLIMIT_NPROC counts that user's processes only
(root ignores it). Standard library only.

In a sandbox (``bwrap --as-pid-1``) this program is the PID namespace's init: it runs COMMAND as
its child, reaps every orphan, and exits with COMMAND's status (128 + N when signal N killed
it). Being init, nothing inside can kill it; the grader then sees how the run ended, and the
CPU time of every reaped process is accounted to the grader.

``end_namespace`` (called by the grading plugin before pytest writes its JUnit report) kills every
other process of the namespace: a process the notebook left behind (a ``setsid`` double fork
escapes the kernel's process group, and lives until this init exits) cannot rewrite the report
after pytest wrote it.
"""
import os
import resource
import signal
import sys
import time

END_TRIES = 2000                # kill(-1) rounds before giving up (a fork bomb meets NPROC first)


def confine(uid: int, data: int, nproc: int, fsize: int, cpu: int) -> None:
    limits = {resource.RLIMIT_DATA: data, resource.RLIMIT_FSIZE: fsize,
              resource.RLIMIT_CPU: cpu, resource.RLIMIT_CORE: 0}
    if uid:
        limits[resource.RLIMIT_NPROC] = nproc
    for which, value in limits.items():
        resource.setrlimit(which, (value, value))
    if uid:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)                  # also drops every capability


def end_namespace() -> bool:
    """In a sandbox whose init is this program (pytest is its child), SIGKILL every process of
    the PID namespace but init and the caller, until none is left; False (nothing done) outside
    one: without bubblewrap ``kill(-1)`` would reach the grader's own processes."""
    try:
        with open("/proc/1/cmdline", "rb") as fh:
            init = fh.read()
    except OSError:
        return False
    if os.getpid() == 1 or os.getppid() != 1 or b"confine.py" not in init:
        return False
    for _ in range(END_TRIES):
        try:
            os.kill(-1, signal.SIGKILL)     # in a PID namespace: its processes only, not init
        except (ProcessLookupError, PermissionError):
            return True                     # none left that this user may signal
        try:                                # our own children stay zombies until reaped
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            pass
        time.sleep(0.001)
    return True


def main(argv: list[str]) -> None:
    split = argv.index("--")
    uid, data, nproc, fsize, cpu = (int(v) for v in argv[:split])
    confine(uid, data, nproc, fsize, cpu)
    if os.getpid() != 1:
        os.execv(argv[split + 1], argv[split + 1:])
    child = os.fork()
    if child == 0:
        os.execv(argv[split + 1], argv[split + 1:])
    while True:
        pid, status = os.wait()
        if pid == child:
            code = os.waitstatus_to_exitcode(status)
            os._exit(code if code >= 0 else 128 - code)


if __name__ == "__main__":
    main(sys.argv[1:])
