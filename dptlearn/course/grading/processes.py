"""Process orchestration: the sandboxes of one grading run, their processes and cgroups.

``grade_all`` is the grading run's core (``grade.py`` wraps it in the CLI and the report folder):

1. ``ClassRun`` sets up what every sandbox shares: the ``Judge`` computes every exercise's case
   once, with a secret seed, and writes the plans to a read-only ``cases/`` folder; the
   sandboxed package (``sandboxed/``) is copied whole, as ``_dptlearn_grading``; the grading
   view of the package is generated (``view.py``), and the stubs that hide every installed
   package the exercises do not need (``offered.py``);
2. every submission is staged (``staging.py``);
3. the staged notebooks are grouped by student: one sandbox runs all of one student's notebooks
   together with ``pytest --nbval-lax`` and the grading plugin (warm kernels forked from a
   server inside the sandbox); never two students in one sandbox. Each sandbox has its own
   cgroup and tmpfs where possible (``limits.py``); a student's sandboxes run one after the
   other and stop at ``--student-limit`` seconds in all (one budget, copies included), and
   a student's copies of one assignment beyond ``MAX_COPIES`` are refused, not run;
4. each notebook is scored (``scoring.py``) from its recorded answers, read without trusting
   them (``untrusted.py``); the sandbox's JUnit report only explains a missing answer.

An exception of the grader's own code while running or scoring one student's notebooks costs
those notebooks only (``staging.grader_error``): the class run goes on. What the grader creates
for the sandboxes is made under its own umask (``GRADER_UMASK``), whatever the caller's: with
077 the sandbox's user could read none of it. A run in which no sandbox reported on any
notebook is the grader's or the machine's failure, not the class's: ``SandboxFailure``.
"""
from __future__ import annotations

import itertools
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from . import limits, offered, safetext, sandbox
from ..exercises import Assignment
from .checkcells import PROBE_MODULE
from .integrity import reference_forms
from .judge import Judge
from .report import Result
from .scoring import score
from .settings import Settings
from .staging import (StagedNotebook, fail_all, grader_error, preload_modules, stage,
                      student_groups)
from .untrusted import cell_report, read_junit
from .view import build_view

GRADER_UMASK = 0o022    # what the grader stages is readable by the sandbox's own user
MAX_COPIES = 2          # copies of one assignment one student may hand in; more are refused
SILENT = "not graded: pytest reported nothing for this notebook"


class SandboxFailure(RuntimeError):
    """No sandbox of the run reported on any notebook: the grader's or the machine's failure."""


def kernel_env(settings: Settings) -> dict[str, str]:
    """Variables the kernels get on top of the sandbox's clean environment."""
    threads = str(max(1, (os.cpu_count() or 1) // max(1, settings.jobs)))
    env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
           "MPLBACKEND": "Agg",             # figures are never compared: don't render them
           "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}   # only nbval and ours: not a hidden package's
    if settings.device:
        env["DPTLEARN_DEVICE"] = settings.device
    return env


class ClassRun:
    """Everything the sandboxes of one grading run share, and how to run one of them."""

    def __init__(self, root: Path, assignments: list[Assignment], settings: Settings,
                 package: Path, progress=print):
        self.settings = settings
        self.judge = Judge(assignments, root / "cases")
        plugin_dir = root / "plugin"
        shutil.copytree(sandbox.SANDBOXED, plugin_dir / sandbox.SANDBOXED_AS,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        view = build_view(package, root / "view")
        for path in [plugin_dir, *plugin_dir.rglob("*"), root / "view", root]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        hider = offered.Hider(root / "offered", preload_modules(assignments))
        self.layout = sandbox.Layout(root, view, package, plugin_dir, root / "cases", hider)
        problem = sandbox.bwrap_problem() if settings.sandbox else "--no-sandbox was given"
        self.sandboxed = problem is None
        if problem:
            progress(f"dptlearn-grade: no sandbox ({problem}); falling back to process groups, "
                     f"resource limits and private copies")
        self.preload = ([PROBE_MODULE, *preload_modules(assignments)]    # probe cells import it
                        if settings.warm_kernels else None)
        self.cgroups, self.scratch = whole_box_limits(root, progress)
        self.cpus = max(1, (os.cpu_count() or 1) // max(1, settings.jobs))

        # sandbox k runs as user UID_BASE + k: a random start keeps concurrent runs apart
        self._index = itertools.count(1 + secrets.randbelow(10_000) * 1_000)
        self._lock = threading.Lock()
        self.heard = self.silent = 0        # notebooks pytest reported on / said nothing about
        self.silent_log = ""                # the last line of the first silent sandbox's log

    def next_index(self) -> int:
        with self._lock:
            return next(self._index)

    def pytest_argv(self, keys: list[str]) -> list[str]:
        argv = [sys.executable, "-m", "pytest", "-q", "--color=no", "-c", "{work}/pytest.ini",
                "--rootdir", "{work}", "-p", "no:cacheprovider",
                "-p", f"{sandbox.SANDBOXED_AS}.plugin", "-p", "nbval.plugin",
                "--dptlearn-grading", "--nbval-lax", "--nbval-current-env",
                "--nbval-cell-timeout", f"{self.settings.timeout:g}",
                "--junitxml", "{work}/junit.xml", "-o", "junit_family=xunit1", "-W", "ignore"]
        if self.preload is not None:
            argv.append(f"--dptlearn-preload={','.join(self.preload)}")
        return argv + [f"{{work}}/{k}.ipynb" for k in keys]

    def run_group(self, group: list[StagedNotebook], deadline: float | None = None) -> None:
        """Run one student's notebooks in one sandbox and score them; a run that ends without
        a report is re-run notebook by notebook, each in a fresh sandbox, until ``deadline``
        (``time.monotonic()``; by default the student's limit from now)."""
        if deadline is None:
            deadline = time.monotonic() + self.settings.student_limit
        own = sum(s.limit for s in group)
        limit = min(own, deadline - time.monotonic())
        if limit <= 0:
            nowhere = self.layout.root / "no-run"     # no run, so no answer was recorded
            for s in group:
                score(s, self.judge, nowhere, [], self.over_student_limit())
            return
        index = self.next_index()
        box = sandbox.new_box(self.layout, index, self.sandboxed, self.scratch)
        cgroup: list[Path] = []
        try:
            missing = [] if box.mounted or not self.scratch else ["its tmpfs scratch"]
            if self.cgroups is not None:
                try:
                    cgroup = self.cgroups.box(f"box{index}", self.cpus)
                except limits.LimitError as exc:
                    missing.append(f"its cgroup ({exc})")
            for s in group:
                s.result.notes += [f"ran without {what}" for what in missing]
            self._run_in(box, cgroup, group, deadline, own, limit)
        finally:
            limits.close_box(cgroup)
            sandbox.remove_box(box)

    def _run_in(self, box: sandbox.Box, cgroup: list[Path], group: list[StagedNotebook],
                deadline: float, own: float, limit: float) -> None:
        for s in group:
            (box.work / f"{s.key}.ipynb").write_text(json.dumps(s.nb, ensure_ascii=False),
                                                     encoding="utf-8")
        (box.work / "pytest.ini").write_text("[pytest]\n")
        cmd, env, cwd = sandbox.command(self.layout, box, self.pytest_argv([s.key for s in group]),
                                        int(limit) + 60, self.sandboxed, kernel_env(self.settings))
        if cgroup:
            cmd = limits.join_command(cgroup, cmd)
        t0 = time.monotonic()
        with open(box.dir / "pytest.log", "wb") as log:
            proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
            try:
                status, over = proc.wait(timeout=limit), False
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                status, over = proc.wait(), True
        elapsed = time.monotonic() - t0
        junit = None if over else read_junit(box.work / "junit.xml")
        if junit is None and len(group) > 1 and time.monotonic() < deadline:
            for s in group:
                self.run_group([s], deadline)
        else:
            why = None if junit is not None else (
                self.over_student_limit() if over and limit < own
                else ended_early(over, status, elapsed, limit))
            for s in group:
                try:
                    reports = [cell_report(tc) for tc in (junit or {}).get(s.key, [])]
                    self._count(box, bool(reports), (why or SILENT).startswith(SILENT))
                    score(s, self.judge, box.results, reports, why or (None if reports else SILENT))
                    s.result.duration_s = sum(r["time"] for r in reports) if reports else elapsed
                except Exception as exc:  # noqa: BLE001 - costs this notebook, not the class
                    grader_error(s.result, "scoring", exc, s.assignment)

    def _count(self, box: sandbox.Box, reported: bool, silent: bool) -> None:
        with self._lock:
            self.heard += reported
            if silent and not reported:
                self.silent += 1
                if not self.silent_log:
                    log = (box.dir / "pytest.log").read_bytes()[-4000:].decode("utf-8", "replace")
                    self.silent_log = safetext.line(next(
                        (ln for ln in reversed(log.splitlines()) if ln.strip()), ""), 300)

    def check_heard(self) -> None:
        """``SandboxFailure`` when notebooks ran and pytest reported on none of them."""
        if self.silent and not self.heard:
            raise SandboxFailure(
                f"the sandbox failed for every notebook of this run ({self.silent}: pytest "
                f"reported nothing), which points at the grader or the machine rather than "
                f"at the students; no report was written. The first sandbox's log ends: "
                f"{self.silent_log or '(empty)'}")

    def run_student(self, groups: list[list[StagedNotebook]]) -> None:
        """All of one student's sandboxes, one after the other, on one budget: together they
        stop at ``--student-limit`` seconds (a copy does not get a fresh limit)."""
        deadline = time.monotonic() + self.settings.student_limit
        for group in groups:
            self.run_isolated(group, deadline)

    def run_isolated(self, group: list[StagedNotebook], deadline: float | None = None) -> None:
        """``run_group``; an exception of the grader's own code costs this group only."""
        try:
            self.run_group(group, deadline)
        except Exception as exc:  # noqa: BLE001 - one student's notebooks, not the class run
            for s in group:
                grader_error(s.result, "running", exc, s.assignment)

    def over_student_limit(self) -> str:
        return (f"not graded: this student's notebooks ran past the grader's limit of "
                f"{self.settings.student_limit:.0f} s for one student (--student-limit)")


def whole_box_limits(root: Path, progress) -> tuple[limits.Cgroups | None, bool]:
    """(the run's cgroups or None, whether boxes get a tmpfs); says once what is missing."""
    if os.geteuid() != 0:
        progress("dptlearn-grade: not root: no cgroup or tmpfs per sandbox, per-process limits "
                 "only")
        return None, False
    missing = []
    limits.sweep_leftovers()
    try:
        cgroups = limits.Cgroups(f"{limits.PREFIX}{os.getpid()}-{secrets.token_hex(4)}")
    except limits.LimitError as exc:
        cgroups = None
        missing.append(f"no cgroup per sandbox: {exc}")
    probe = Path(tempfile.mkdtemp(prefix="probe-", dir=root))
    try:
        limits.mount_scratch(probe, 2**20)
        limits.unmount_scratch(probe)
        scratch = True
    except limits.LimitError as exc:
        scratch = False
        missing.append(f"no tmpfs scratch: {exc}")
    probe.rmdir()
    if missing:
        progress(f"dptlearn-grade: {'; '.join(missing)}; per-process limits only there")
    return cgroups, scratch


def ended_early(over: bool, status: int, elapsed: float, limit: float) -> str:
    """Why a sandbox left no report: the watchdog, its CPU limit, or its own processes."""
    if over:
        return f"not graded: the notebook ran past the grader's limit of {limit:.0f} s"
    sig = -status if status < 0 else status - 128 if status > 128 else 0
    if sig == signal.SIGXCPU:
        return "not graded: the notebook used more CPU time than the grader allows"
    if sig:
        return (f"not graded: the notebook's processes were killed from inside after "
                f"{elapsed:.0f} s (os.kill/killpg?)")
    return f"not graded: pytest reported nothing for this notebook (exit status {status})"


def grade_all(results: list[Result], assignments: list[Assignment], settings: Settings,
              package: Path, progress=print) -> None:
    """Grade every result's submission in sandboxes; fills in the results' exercises."""
    forms = reference_forms(package)
    with own_umask(), tempfile.TemporaryDirectory(prefix="dptlearn-grade-") as tmp:
        run = ClassRun(Path(tmp), assignments, settings, package, progress)
        staged = [s for r in results
                  if (s := stage(r, assignments, settings.timeout, forms)) is not None]
        try:
            students: dict[str, list[list[StagedNotebook]]] = {}
            for group in student_groups(cap_copies(staged)):
                students.setdefault(group[0].result.student_key, []).append(group)
            with ThreadPoolExecutor(max_workers=settings.jobs) as pool:
                list(pool.map(run.run_student, students.values()))
        finally:
            if run.cgroups is not None:
                run.cgroups.close()
        run.check_heard()


def cap_copies(staged: list[StagedNotebook]) -> list[StagedNotebook]:
    """The first ``MAX_COPIES`` copies of each assignment of each student, in the order given;
    every further copy is refused (0, its message, *Needs a look*) and not run."""
    count: dict[tuple[str, str], int] = {}
    kept = []
    for s in staged:
        n = count[s.result.student_key, s.key] = count.get((s.result.student_key, s.key), 0) + 1
        if n <= MAX_COPIES:
            kept.append(s)
            continue
        fail_all(s.result, s.assignment, safetext.line(
            f"not graded: copy {n} of {s.key} handed in by student {s.result.student or '?'!r}; "
            f"the grader runs at most {MAX_COPIES} copies of one assignment per student (hand "
            f"in one notebook per assignment)"))
        s.result.refused = True
    return kept


@contextmanager
def own_umask():
    """``GRADER_UMASK`` while the sandboxes' files are made, the caller's again after (the
    report folder keeps the caller's umask)."""
    before = os.umask(GRADER_UMASK)
    try:
        yield
    finally:
        os.umask(before)
