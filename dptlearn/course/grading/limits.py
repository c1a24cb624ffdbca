"""Limits on a whole sandbox, not one process: a cgroup (memory, processes, CPU) and a scratch
folder on a tmpfs of fixed size.

Per-process resource limits (``confine.py``) let a notebook spread over several processes
(three kernels of 1.5 GiB each) and fill the host's disk one capped file at a time. Where the
grader may (root, a writable cgroup file system, ``mount``), each sandbox also gets

* its own cgroup, joined by the sandbox's first process before anything of the notebook runs:
  ``MEMORY_BYTES`` of memory for all its processes together (its tmpfs pages included; no
  swap), ``PIDS`` processes and threads, and ``cpus`` CPUs of time. cgroup v2 (``memory.max``,
  ``pids.max``, ``cpu.max``) where ``/sys/fs/cgroup`` is one, else cgroup v1's ``memory``,
  ``pids`` and ``cpu`` hierarchies. Everything left in it is killed and the cgroup removed
  when the run ends;
* a tmpfs of ``SCRATCH_BYTES`` mounted on its host folder (scratch, recorded answers, the
  JUnit report): the grader reads the results from it after the run, then unmounts it.

Where a piece is not possible the grader says so once and goes on with the per-process limits
(see docs/grading-security.md, "Limits").
"""
from __future__ import annotations

import ctypes
import os
import signal
import time
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
MEMORY_BYTES = 4 * 2**30        # all processes of one sandbox together
PIDS = 256                      # processes and threads of one sandbox
SCRATCH_BYTES = 1 * 2**30       # its tmpfs: scratch, answers, report
CPU_PERIOD_US = 100_000
PREFIX = "dptlearn-grade-"      # cgroups and tmpfs sources are named PREFIX<grader pid>-...
MS_NOSUID, MS_NODEV, MNT_DETACH = 2, 4, 2
JOIN = 'while [ "$1" != -- ]; do echo $$ > "$1/cgroup.procs" || exit 125; shift; done; shift; exec "$@"'


class LimitError(Exception):
    """A cgroup or tmpfs could not be set up; the message says why."""


def _write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError as exc:
        raise LimitError(f"cannot write {path} ({exc.strerror})") from None


class Cgroups:
    """One grading run's cgroup folders; ``box`` makes a sandbox's own below them."""

    def __init__(self, name: str):
        self.v2 = (CGROUP_ROOT / "cgroup.controllers").exists()
        tops = ([CGROUP_ROOT] if self.v2 else
                [CGROUP_ROOT / c for c in ("memory", "pids", "cpu")])
        missing = [str(t) for t in tops if not (t / "cgroup.procs").exists()]
        if missing:
            raise LimitError(f"no cgroup hierarchy at {', '.join(missing)}")
        self.runs = [t / name for t in tops]
        try:
            for d in self.runs:
                d.mkdir()
        except OSError as exc:
            self.close()
            raise LimitError(f"cannot create a cgroup in {CGROUP_ROOT} ({exc.strerror})") from None
        if self.v2:
            try:
                _write(self.runs[0] / "cgroup.subtree_control", "+memory +pids +cpu")
            except LimitError:
                self.close()
                raise

    def box(self, name: str, cpus: int) -> list[Path]:
        """A sandbox's cgroup folder(s) with its limits written (``close_box`` removes them)."""
        dirs = [run / name for run in self.runs]
        try:
            for d in dirs:
                d.mkdir()
            quota = str(cpus * CPU_PERIOD_US)
            if self.v2:
                d = dirs[0]
                _write(d / "memory.max", str(MEMORY_BYTES))
                if (d / "memory.swap.max").exists():
                    _write(d / "memory.swap.max", "0")
                _write(d / "pids.max", str(PIDS))
                _write(d / "cpu.max", f"{quota} {CPU_PERIOD_US}")
            else:
                memory, pids, cpu = dirs
                _write(memory / "memory.limit_in_bytes", str(MEMORY_BYTES))
                if (memory / "memory.memsw.limit_in_bytes").exists():
                    _write(memory / "memory.memsw.limit_in_bytes", str(MEMORY_BYTES))
                _write(pids / "pids.max", str(PIDS))
                _write(cpu / "cpu.cfs_period_us", str(CPU_PERIOD_US))
                _write(cpu / "cpu.cfs_quota_us", quota)
        except (OSError, LimitError) as exc:
            close_box(dirs)
            raise LimitError(str(exc)) from None
        return dirs

    def close(self) -> None:
        for d in self.runs:
            _remove(d)


def join_command(dirs: list[Path], argv: list[str]) -> list[str]:
    """``argv`` run by a shell that first moves itself into the cgroup folders ``dirs`` (exit
    status 125 if it cannot): every process of the sandbox starts inside them."""
    return ["/bin/sh", "-c", JOIN, "dptlearn-cgroup", *map(str, dirs), "--", *argv]


def close_box(dirs: list[Path]) -> None:
    """Kill whatever is left in a sandbox's cgroup and remove it."""
    for d in dirs:
        if (d / "cgroup.kill").exists():
            try:
                (d / "cgroup.kill").write_text("1")
            except OSError:
                pass
        try:
            pids = [int(p) for p in (d / "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
            pids = []
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    for d in dirs:
        _remove(d)


def _remove(d: Path) -> None:
    """rmdir a cgroup folder, waiting up to 5 s for its killed processes to be gone."""
    deadline = time.monotonic() + 5
    while True:
        try:
            d.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                return
            time.sleep(0.01)


# ----------------------------------------------------------------------------- scratch tmpfs

_libc = ctypes.CDLL(None, use_errno=True)


def mount_scratch(folder: Path, size: int | None = None) -> None:
    """Mount a tmpfs of ``size`` bytes (default ``SCRATCH_BYTES``; mode 0700, no setuid, no
    devices) on ``folder``."""
    options = f"size={size or SCRATCH_BYTES},mode=0700".encode()
    if _libc.mount(f"{PREFIX}{os.getpid()}-scratch".encode(), str(folder).encode(), b"tmpfs",
                   MS_NOSUID | MS_NODEV, options) != 0:
        raise LimitError(f"cannot mount a tmpfs ({os.strerror(ctypes.get_errno())})")


def unmount_scratch(folder: Path) -> None:
    """Detach the tmpfs on ``folder`` (its files go with it)."""
    _libc.umount2(str(folder).encode(), MNT_DETACH)


# ----------------------------------------------------------------------------- leftovers

def _dead(name: str) -> bool:
    """Whether ``PREFIX<pid>-...`` names a grader that is no longer running."""
    try:
        pid = int(name[len(PREFIX):].split("-")[0])
    except ValueError:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        pass
    return False


def sweep_leftovers() -> None:
    """Remove the cgroups and unmount the tmpfs scratch folders of graders that were killed
    (a killed grader cannot clean up; its sandboxes died with it)."""
    tops = [CGROUP_ROOT] + [CGROUP_ROOT / c for c in ("memory", "pids", "cpu")]
    for top in tops:
        for run in (top.glob(f"{PREFIX}*") if top.is_dir() else []):
            if run.is_dir() and _dead(run.name):
                close_box([d for d in run.iterdir() if d.is_dir()])
                _remove(run)
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return
    for line in mounts:
        source, target = (line.split() + ["", ""])[:2]
        if source.startswith(PREFIX) and _dead(source):
            unmount_scratch(Path(target.replace("\\040", " ")))
