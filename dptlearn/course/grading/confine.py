"""First program of a student's sandbox: set resource limits, drop root, exec the grading run.

Run as ``python -I -S confine.py UID DATA_BYTES NPROC FSIZE_BYTES CPU_S -- COMMAND...``. UID 0
means "keep the current user" (the fallback without bubblewrap, or a grader that is not root).
Limits are set here rather than by the grader, so that the grader never forks with threads
running, and after the switch to UID so that RLIMIT_NPROC counts that user's processes only
(root ignores it). Standard library only.
"""
import os
import resource
import sys


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


def main(argv: list[str]) -> None:
    split = argv.index("--")
    uid, data, nproc, fsize, cpu = (int(v) for v in argv[:split])
    confine(uid, data, nproc, fsize, cpu)
    os.execv(argv[split + 1], argv[split + 1:])


if __name__ == "__main__":
    main(sys.argv[1:])
