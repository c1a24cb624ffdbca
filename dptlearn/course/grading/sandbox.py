"""One student's sandbox: bubblewrap, a private scratch folder, no network, resource limits.

Every run of a student's notebooks (pytest, nbval, the warm-kernel server and the kernels) runs
in a bubblewrap sandbox (``bwrap``, Debian package ``bubblewrap``) that sees:

* read-only: ``/usr`` (and the ``/bin``, ``/lib*``, ``/sbin`` links into it), ``/etc``, the
  Python installation the venv's interpreter points to, the venv, and the *grading view* of
  dptlearn (``view.py``) at the path where the editable install finds the package;
* read-only: ``/grade/plugin`` (a copy of ``sandboxed/``: the grading plugin, the warm-kernel
  server, the launcher, ``confine.py``) and ``/grade/probe/cases`` (the plans);
* read-write: ``/grade/work`` (the staged notebooks, the JUnit report) and
  ``/grade/probe/results`` (the answers the probes record), both fresh host folders owned by
  the sandbox's user (on a tmpfs of their own where possible), and a private ``/tmp`` (tmpfs,
  ``TMP_BYTES``);
* its own PID (``confine.py`` is its init), network (loopback only), IPC and UTS namespaces,
  a new session, and it dies with the grader.

When the grader runs as root, ``confine.py`` switches to a user of its own for each sandbox
(``UID_BASE`` + index, where each run starts its indexes at a random offset): not root, so the
limits below all bite and nothing of the grader's can be written or signalled. The repository
(``solutions/``, ``tests/``, ``exercises/``, ``.git``), other students' files and the report
folder are not in the sandbox at all.

Beside these per-process limits, ``limits.py`` gives each sandbox (where root may) a cgroup
for all its processes together and a tmpfs of fixed size as its host folder (``new_box``).

Without a working ``bwrap`` the grader says so once and falls back to a process group, the
same resource limits (without NPROC: root ignores it) and private copies of the plans; the
kernel then finds the grading view first on ``PYTHONPATH``, but the real files stay readable.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import limits
from .offered import Hider

BWRAP = "bwrap"
INSIDE = Path("/grade")
DATA_BYTES = 4 * 2**30          # RLIMIT_DATA per process (heap and anonymous mappings)
NPROC = 256                     # processes and threads of the sandbox's user
FSIZE_BYTES = 256 * 2**20       # the largest file a sandbox may write
TMP_BYTES = 512 * 2**20         # its private /tmp
UID_BASE = 200_000              # sandbox k runs as user UID_BASE + k when the grader is root
PASS_ENV = ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "LANG", "LC_ALL")
SANDBOXED = Path(__file__).with_name("sandboxed")   # the package that runs inside the sandbox
SANDBOXED_AS = "_dptlearn_grading"      # its name there, in ``Layout.plugin``


@dataclass
class Layout:
    """The host folders of one grading run that every sandbox shares (read-only)."""

    root: Path          # the run's private temporary folder
    view: Path          # the grading view: root/view/<package name>
    package: Path       # where the interpreter finds the real package (the view's mount point)
    plugin: Path        # holds the copy of the sandboxed package, as SANDBOXED_AS
    cases: Path         # <exercise id>.pt: the plans, one per exercise of the run
    hider: Hider | None = None  # covers the installed packages the exercises do not need


@dataclass
class Box:
    """The host folders of one sandbox run: ``work`` (scratch) and ``results`` (answers)."""

    index: int
    dir: Path
    mounted: bool = False       # ``dir`` is a tmpfs of its own (``limits.mount_scratch``)

    @property
    def work(self) -> Path:
        return self.dir / "work"

    @property
    def results(self) -> Path:
        return self.dir / "probe" / "results"


def new_box(layout: Layout, index: int, sandboxed: bool, scratch: bool = False) -> Box:
    """Fresh scratch and results folders, writable by the sandbox's user only; with
    ``scratch``, on a tmpfs of their own (``remove_box`` unmounts it)."""
    box = Box(index, Path(tempfile.mkdtemp(prefix=f"box{index:04d}-", dir=layout.root)))
    if scratch:
        try:
            limits.mount_scratch(box.dir)
            box.mounted = True
        except limits.LimitError:          # the caller notes that the box has no tmpfs
            pass
    box.work.mkdir()
    box.results.mkdir(parents=True)
    if not sandboxed:                   # a private copy of the plans, next to the results
        shutil.copytree(layout.cases, box.dir / "probe" / "cases")
    uid = sandbox_uid(index, sandboxed)
    if uid:
        for path in (box.dir, box.work, box.results):
            os.chown(path, uid, uid)
            path.chmod(0o700)
    return box


def remove_box(box: Box) -> None:
    """Delete a box's folders (unmounting its tmpfs first)."""
    if box.mounted:
        limits.unmount_scratch(box.dir)
    shutil.rmtree(box.dir, ignore_errors=True)


def sandbox_uid(index: int, sandboxed: bool) -> int:
    """The sandbox's own user when the grader is root and bwrap works, else 0 (unchanged)."""
    return UID_BASE + index if sandboxed and os.geteuid() == 0 else 0


def python_roots() -> list[Path]:
    """The venv and the installation its interpreter comes from (bound read-only)."""
    roots = [Path(sys.prefix), Path(os.path.realpath(sys.base_prefix))]
    return list(dict.fromkeys(roots))


def _system_binds() -> list[str]:
    args = ["--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/") / name
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    for root in python_roots():
        args += ["--ro-bind", str(root), str(root)]
    return args


def _parents(binds: list[str]) -> list[str]:
    """``--dir`` for every folder above a mount point, world-traversable (bwrap makes 0700)."""
    dests = [binds[i + 2] for i, a in enumerate(binds) if a in ("--ro-bind", "--bind")]
    above = {str(p) for d in dests for p in Path(d).parents if str(p) != "/"}
    out: list[str] = []
    for path in sorted(above, key=lambda p: (p.count("/"), p)):
        out += ["--perms", "0755", "--dir", path]
    return out


def bwrap_args(layout: Layout | None = None, box: Box | None = None, cuda: bool = False) -> list[str]:
    """The bwrap command line up to the program (without a layout: the self-test's)."""
    binds = _system_binds()
    if layout is not None and box is not None:
        binds += ["--ro-bind", str(layout.view), str(layout.package),
                  "--ro-bind", str(layout.plugin), str(INSIDE / "plugin"),
                  "--ro-bind", str(layout.cases), str(INSIDE / "probe" / "cases"),
                  "--bind", str(box.work), str(INSIDE / "work"),
                  "--bind", str(box.results), str(INSIDE / "probe" / "results")]
    # The private /tmp comes first: binds below it (a checkout or venv under /tmp, as in a CI
    # clone) are then mounted on top of it instead of being hidden by it.
    args = [BWRAP, "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
            "--unshare-cgroup-try", "--die-with-parent", "--new-session",
            "--size", str(TMP_BYTES), "--perms", "1777", "--tmpfs", "/tmp",
            "--proc", "/proc", "--dev", "/dev", *_parents(binds), *binds]
    if layout is not None and box is not None:
        if layout.hider is not None:        # after the venv's bind: stubs over what it holds
            args += layout.hider.bwrap_args()
        args += ["--as-pid-1", "--chdir", str(INSIDE / "work")]     # confine.py is the init
    if cuda:
        for dev in sorted(Path("/dev").glob("nvidia*")):
            args += ["--dev-bind", str(dev), str(dev)]
        args += ["--ro-bind-try", "/sys", "/sys"]
    return args


def bwrap_problem() -> str | None:
    """None when bubblewrap can run a sandbox here, else why not (one line)."""
    if shutil.which(BWRAP) is None:
        return "bubblewrap (bwrap) is not installed (scripts/install_bwrap.sh installs it)"
    try:
        proc = subprocess.run([*bwrap_args(), "--", sys.executable, "-I", "-S", "-c", "pass"],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bubblewrap does not work here: {exc}"
    if proc.returncode != 0:
        why = " ".join(proc.stderr.split())[:200] or f"exit status {proc.returncode}"
        return f"bubblewrap does not work here: {why}"
    return None


def command(layout: Layout, box: Box, argv: list[str], cpu_s: int, sandboxed: bool,
            env: dict[str, str]) -> tuple[list[str], dict[str, str], Path]:
    """(command line, environment, host working folder) that runs ``argv`` in the box.

    ``argv`` is the program to run, with ``{work}`` and ``{probe}`` in its arguments standing for
    the scratch and probe folders as the sandbox sees them. ``env`` adds variables to the
    sandbox's clean environment.
    """
    work = INSIDE / "work" if sandboxed else box.work
    probe = INSIDE / "probe" if sandboxed else box.dir / "probe"
    plugin = INSIDE / "plugin" if sandboxed else layout.plugin
    home = Path("/tmp") if sandboxed else box.dir / "home"
    if not sandboxed:
        home.mkdir(exist_ok=True)
    clean = {"PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin", "/bin"]),
             "HOME": str(home), "TMPDIR": "/tmp" if sandboxed else str(home),
             "PYTHONDONTWRITEBYTECODE": "1", "DPTLEARN_PROBE_DIR": str(probe),
             "PYTHONPATH": str(plugin) if sandboxed else os.pathsep.join(
                 [str(plugin), *([str(layout.hider.fallback)] if layout.hider else []),
                  str(layout.view.parent)])}
    clean.update({k: os.environ[k] for k in PASS_ENV if k in os.environ})
    clean.update(env)
    program = [a.format(work=work, probe=probe) for a in argv]
    confine = [sys.executable, "-I", "-S", str(plugin / SANDBOXED_AS / "confine.py"),
               str(sandbox_uid(box.index, sandboxed)), str(DATA_BYTES), str(NPROC),
               str(FSIZE_BYTES), str(cpu_s), "--"]
    if not sandboxed:
        return confine + program, clean, box.work
    cuda = env.get("DPTLEARN_DEVICE") == "cuda"
    return [*bwrap_args(layout, box, cuda), "--", *confine, *program], clean, box.work
