"""Staging, running and scoring: one student's notebooks, one sandbox, verdicts made outside.

``grade_all`` is the grading run's core (``grade.py`` wraps it in the CLI and the report folder):

1. ``Judge`` computes every exercise's case once, with a secret seed, and writes the plans to
   a read-only ``cases/`` folder; the grading view of the package is generated (``view.py``);
2. ``stage`` reads each submission (never writing to it), matches its assignment and prepares
   the copy that runs: outputs cleared, every check cell replaced by a *probe cell* recording
   the answer (deleted ones put back, extra ones dropped; ``restore_checks``);
3. the notebooks are grouped by student (``student_groups``): one sandbox runs all of one
   student's notebooks together with ``pytest --nbval-lax`` and the grading plugin (warm
   kernels forked from a server inside the sandbox); never two students in one sandbox.
   Each sandbox has its own cgroup and tmpfs where possible (``limits.py``), and a student's
   runs stop at ``--student-limit`` seconds in all;
4. ``score`` loads each recorded answer and asks the judge: an exercise earns its points iff
   the judge passes. The sandbox's JUnit report only explains a missing answer.
"""
from __future__ import annotations

import ast
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
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from . import limits, plugin, sandbox, verdicts
from ..exercises import Assignment, source_of, tags_of
from .report import ExerciseResult, Result
from .submissions import InvalidSubmission, find_assignment, read_submission

MAX_JUNIT_BYTES = 32 * 2**20
PACKAGE_FILES = ("plugin.py", "warm.py", "launcher.py", "confine.py")
EXTRA_CELLS = 10                # learner cells beyond the solution's that the watchdog allows for
STUDENT_LIMIT_S = 600.0         # default wall-clock limit for all of one student's notebooks


@dataclass
class Settings:
    """What a grading run needs besides the submissions (see ``grade.Options``)."""

    timeout: float
    jobs: int = 1
    device: str | None = None
    warm_kernels: bool = True
    sandbox: bool = True                # False: the fallback, even where bwrap works
    student_limit: float = STUDENT_LIMIT_S   # wall-clock seconds for one student, re-runs included


@dataclass
class Staged:
    """A prepared copy of one submission, waiting for its student's sandbox."""

    result: Result
    assignment: Assignment
    nb: dict                            # the notebook that runs
    limit: float                        # watchdog seconds for this notebook alone
    notes: dict[str, str] = field(default_factory=dict)      # exercise -> check cell tampering
    identical: dict[str, str] = field(default_factory=dict)  # exercise -> the reference copied

    @property
    def key(self) -> str:
        return self.assignment.name


# ----------------------------------------------------------------------------- preparing

def _clean_cell(cell: dict, index: int) -> dict:
    """A copy of ``cell`` fit to run: outputs cleared, only its tags kept as metadata."""
    new = {"cell_type": cell["cell_type"], "metadata": {},
           "source": source_of(cell), "id": f"cell-{index}"}
    tags = tags_of(cell)
    if tags:
        new["metadata"]["tags"] = tags
    if new["cell_type"] == "code":
        new.update(outputs=[], execution_count=None)
    return new


def _exercise_of(cell: dict) -> str | None:
    return plugin.exercise_of(tags_of(cell))


def restore_checks(cells: list[dict], a: Assignment) -> list[dict]:
    """Put back the solution's check cells, matching exercises by their ``ex:<id>`` tag.

    A submitted check cell of a known exercise is replaced by the original in place (first one
    only); other cells tagged ``check`` are dropped; a missing one is inserted after the last
    cell of its exercise, or, if the exercise has no cells left, before the first cell of a
    later exercise (else at the end).
    """
    known = [ex.id for ex in a.exercises]
    placed: set[str] = set()
    out = []
    for cell in cells:
        ex = _exercise_of(cell)
        if "check" in tags_of(cell):
            if ex in known and ex not in placed:
                out.append(a.check_cell(ex))
                placed.add(ex)
            continue
        out.append(cell)
    for pos, ex_id in enumerate(known):
        if ex_id not in placed:
            out.insert(_insert_index(out, ex_id, known[pos + 1:]), a.check_cell(ex_id))
    return out


def _insert_index(cells: list[dict], ex_id: str, later: list[str]) -> int:
    """Where a missing check cell of ``ex_id`` goes (see restore_checks)."""
    mine = [i for i, c in enumerate(cells) if _exercise_of(c) == ex_id]
    if mine:
        return mine[-1] + 1
    after = [i for i, c in enumerate(cells) if _exercise_of(c) in later]
    return after[0] if after else len(cells)


def _probe_cell(cell: dict, a: Assignment) -> dict:
    """The solution's check cell ``cell`` turned into its probe cell (same tags)."""
    ex_id = _exercise_of(cell)
    source = verdicts.probe_cell_source(ex_id, verdicts.check_call(source_of(a.check_cell(ex_id))))
    return {**cell, "source": source}


def prepare(nb: dict, a: Assignment) -> dict:
    """The notebook that is actually run: probe cells for checks, no outputs, tidy metadata."""
    cells = [_probe_cell(c, a) if "check" in tags_of(c) else c
             for c in restore_checks(list(nb["cells"]), a)]
    return {"cells": [_clean_cell(c, i) for i, c in enumerate(cells)],
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                        "language": "python"},
                         "dptlearn": {"assignment": a.name}},
            "nbformat": 4, "nbformat_minor": 5}


def watchdog_seconds(nb: dict, a: Assignment, timeout: float) -> float:
    """Wall-clock limit for one notebook: generous enough for a replay after every cell.

    Counted on the *solution's* code cells, plus the learner's extra ones up to
    ``EXTRA_CELLS``: a notebook of a million cells gets no more time than that.
    """
    n_solution = sum(c.get("cell_type") == "code" for c in a.nb["cells"])
    n_code = min(sum(c["cell_type"] == "code" for c in nb["cells"]), n_solution + EXTRA_CELLS)
    return 60 + 2 * n_code * (timeout + plugin.KILL_GRACE_S + 5)


def stage(result: Result, assignments: list[Assignment], timeout: float,
          forms: dict[str, str]) -> Staged | None:
    """Read, match and prepare one submission; None (and a zero) when it cannot be graded."""
    path = Path(result.submission)
    nb = None
    try:
        nb = read_submission(path)
        a = find_assignment(nb, path, assignments, result.notes)
        if a is None:
            raise InvalidSubmission(f"not graded: no assignment matches {path.name!r} (expected "
                                    f"one of {sorted(x.name for x in assignments)})")
        set_assignment(result, a)
        prepared = prepare(nb, a)
        identical, copies = verdicts.identical_to_reference(nb["cells"], a, forms)
        result.notes += copies
        return Staged(result, a, prepared, watchdog_seconds(prepared, a, timeout),
                      verdicts.check_cell_flags(nb["cells"], a), identical)
    except InvalidSubmission as exc:
        a = find_assignment(nb, path, assignments, [])
        if a is not None:
            set_assignment(result, a)
        fail_all(result, a, str(exc))
    except Exception as exc:  # a grader bug must cost one submission, not the class run
        fail_all(result, None, plugin.clean_message(
            f"grader error: {type(exc).__name__}: {exc}", 400))
    return None


def set_assignment(result: Result, a: Assignment) -> None:
    result.assignment, result.max_score = a.name, a.max_score


def fail_all(result: Result, a: Assignment | None, message: str) -> None:
    result.error = message
    result.exercises = [ExerciseResult(ex.id, 0, ex.points, False, message)
                        for ex in (a.exercises if a else [])]


def preload_modules(assignments: list[Assignment]) -> list[str]:
    """Modules that the solutions' set-up cells (code cells of no exercise) import.

    The warm-kernel server imports them once; every kernel forked from it starts with them in
    ``sys.modules``. Set-up cells run first in every submission, so a kernel that would have
    imported them anyway sees no difference. ``from a import b`` also names ``a.b`` (it may be
    a submodule; the server skips what does not import).
    """
    mods: list[str] = []
    for a in assignments:
        for cell in a.nb["cells"]:
            if cell.get("cell_type") != "code" or _exercise_of(cell) is not None:
                continue
            src = "\n".join(line for line in source_of(cell).splitlines()
                            if not line.lstrip().startswith(("%", "!")))
            try:
                tree = ast.parse(src)
            except SyntaxError:
                continue
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    mods += [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    mods += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names
                                             if alias.name != "*"]
    return list(dict.fromkeys(m for m in mods if m != "__future__"
                              and not m.startswith("__future__.")))


def student_groups(staged: list[Staged]) -> list[list[Staged]]:
    """One group per sandbox: one student's notebooks, at most one per assignment.

    A student who handed in the same assignment twice gets a second sandbox for the second
    copy (both would record answers under the same exercise ids).
    """
    groups: dict[str, list[list[Staged]]] = {}
    for s in staged:
        mine = groups.setdefault(s.result.student_key, [])
        free = next((g for g in mine if all(o.key != s.key for o in g)), None)
        if free is None:
            mine.append(free := [])
        free.append(s)
    return [g for mine in groups.values() for g in mine]


# ----------------------------------------------------------------------------- running

def kernel_env(settings: Settings) -> dict[str, str]:
    """Variables the kernels get on top of the sandbox's clean environment."""
    threads = str(max(1, (os.cpu_count() or 1) // max(1, settings.jobs)))
    env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
           "MPLBACKEND": "Agg"}             # figures are never compared: don't render them
    if settings.device:
        env["DPTLEARN_DEVICE"] = settings.device
    return env


class Run:
    """Everything one grading run's sandboxes share, and how to run one of them."""

    def __init__(self, root: Path, assignments: list[Assignment], settings: Settings,
                 package: Path, progress=print):
        self.settings = settings
        self.judge = verdicts.Judge(assignments, root / "cases")
        plugin_dir = root / "plugin"
        (plugin_dir / "_dptlearn_grading").mkdir(parents=True)
        (plugin_dir / "_dptlearn_grading" / "__init__.py").write_text("")
        for name in PACKAGE_FILES:
            shutil.copyfile(Path(__file__).with_name(name), plugin_dir / "_dptlearn_grading" / name)
        from .view import build_view

        view = build_view(package, root / "view")
        for path in [plugin_dir, *plugin_dir.rglob("*"), root / "view", root]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        self.layout = sandbox.Layout(root, view, package, plugin_dir, root / "cases")
        problem = sandbox.bwrap_problem() if settings.sandbox else "--no-sandbox was given"
        self.sandboxed = problem is None
        if problem:
            progress(f"dptlearn-grade: no sandbox ({problem}); falling back to process groups, "
                     f"resource limits and private copies")
        self.preload = ([verdicts.PROBE_MODULE, *preload_modules(assignments)]   # probe cells
                        if settings.warm_kernels else None)              # import it
        self.cgroups, self.scratch = whole_box_limits(root, progress)
        self.cpus = max(1, (os.cpu_count() or 1) // max(1, settings.jobs))

        # sandbox k runs as user UID_BASE + k: a random start keeps concurrent runs apart
        self._index = itertools.count(1 + secrets.randbelow(10_000) * 1_000)
        self._lock = threading.Lock()

    def next_index(self) -> int:
        with self._lock:
            return next(self._index)

    def pytest_argv(self, keys: list[str]) -> list[str]:
        argv = [sys.executable, "-m", "pytest", "-q", "--color=no", "-c", "{work}/pytest.ini",
                "--rootdir", "{work}", "-p", "no:cacheprovider", "-p", "_dptlearn_grading.plugin",
                "--dptlearn-grading", "--nbval-lax", "--nbval-current-env",
                "--nbval-cell-timeout", f"{self.settings.timeout:g}",
                "--junitxml", "{work}/junit.xml", "-o", "junit_family=xunit1", "-W", "ignore"]
        if self.preload is not None:
            argv.append(f"--dptlearn-preload={','.join(self.preload)}")
        return argv + [f"{{work}}/{k}.ipynb" for k in keys]

    def run_group(self, group: list[Staged], deadline: float | None = None) -> None:
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

    def _run_in(self, box: sandbox.Box, cgroup: list[Path], group: list[Staged], deadline: float,
                own: float, limit: float) -> None:
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
                cases = [case_info(tc) for tc in (junit or {}).get(s.key, [])]
                score(s, self.judge, box.results, cases, why or (
                    None if cases else "not graded: pytest reported nothing for this notebook"))
                s.result.duration_s = sum(c["time"] for c in cases) if cases else elapsed

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


# ----------------------------------------------------------------------------- scoring

def read_junit(path: Path) -> dict[str, list[ET.Element]] | None:
    """The testcases of a sandbox's JUnit report grouped by ``submission`` (None: no report)."""
    try:
        root = ET.fromstring(verdicts.read_untrusted(path, MAX_JUNIT_BYTES))
    except (verdicts.UnreadableResults, ET.ParseError):
        return None
    groups: dict[str, list[ET.Element]] = {}
    for tc in root.iter("testcase"):
        props = {p.get("name"): p.get("value") for p in tc.iter("property")}
        groups.setdefault(props.get("submission", ""), []).append(tc)
    return groups


def case_info(tc: ET.Element) -> dict:
    """A testcase's properties plus ``outcome``, ``failure`` (its message) and ``time``."""
    props = {p.get("name"): p.get("value") for p in tc.iter("property")}
    bad = [el for el in tc if el.tag in ("failure", "error", "skipped")]
    props["outcome"] = bad[0].tag if bad else "passed"
    props["failure"] = bad[0].get("message", "") if bad else ""
    try:
        props["time"] = float(tc.get("time") or 0)
    except ValueError:
        props["time"] = 0.0
    return props


def _case_message(case: dict) -> str:
    return case.get("message") or case.get("failure") or case["outcome"]


def score(s: Staged, judge: verdicts.Judge, results: Path, cases: list[dict],
          why: str | None) -> None:
    """Judge each exercise's recorded answer; the JUnit cases only explain a missing one."""
    out = []
    for ex in s.assignment.exercises:
        mine = [c for c in cases if c.get("exercise") == ex.id]
        check = next((c for c in mine if c.get("role") == "check"), None)
        flags: list[str] = []
        ran = None if check is None else check["outcome"] == "passed"
        if ex.id in judge.broken:                     # the verdict of a check the grader could not set up
            out.append(ExerciseResult(ex.id, 0, ex.points, *judge.verdict(ex.id, None)))
            continue
        try:
            payload = verdicts.load_results(results / f"{ex.id}.pt")
        except verdicts.UnreadableResults as exc:
            passed = False
            if str(exc) != "no answer was recorded":
                message, flags = str(exc), ["forgery"]
            elif ran is False:
                message = f"the check cell did not run: {_case_message(check)}"
            elif ran:
                message = ("no answer was recorded although the check cell ran (was "
                           "dptlearn.course.probe replaced?)")
                flags = ["forgery"]
            else:
                message = why or "the check cell did not run"
        else:
            if ran is False:        # the probe never finished, yet an answer is there
                passed, flags = False, ["forgery"]
                message = (f"an answer was recorded outside the check cell, which failed "
                           f"({_case_message(check)}): written outside probe.record?")
            else:
                passed, message, flags = judge.verdict(ex.id, payload)
        if not passed and check is not None:
            before = mine[:mine.index(check)]
            earlier = next((c for c in before if c["outcome"] in ("failure", "error")), None)
            if earlier is not None and _case_message(earlier) not in message:
                message = (f"{plugin.clean_message(message, 240)} (earlier in this exercise: "
                           f"{plugin.clean_message(_case_message(earlier), 120)})")
        if ex.id in s.notes:
            flags.append("forgery")
            message = (f"{plugin.clean_message(message, 280)} [{s.notes[ex.id]}: the grader "
                       f"ran its own check]")
        if ex.id in s.identical:
            flags.append("identical")
            message = (f"{plugin.clean_message(message, 300)} [identical to "
                       f"{s.identical[ex.id]} after normalisation]")
        out.append(ExerciseResult(ex.id, ex.points if passed else 0, ex.points, passed,
                                  plugin.clean_message(message, 400), sorted(set(flags))))
    s.result.exercises = out
    if why:
        s.result.error = why


def grade_all(results: list[Result], assignments: list[Assignment], settings: Settings,
              package: Path, progress=print) -> None:
    """Grade every result's submission in sandboxes; fills in the results' exercises."""
    forms = verdicts.reference_forms(package)
    with tempfile.TemporaryDirectory(prefix="dptlearn-grade-") as tmp:
        run = Run(Path(tmp), assignments, settings, package, progress)
        staged = [s for r in results
                  if (s := stage(r, assignments, settings.timeout, forms)) is not None]
        try:
            with ThreadPoolExecutor(max_workers=settings.jobs) as pool:
                list(pool.map(run.run_group, student_groups(staged)))
        finally:
            if run.cgroups is not None:
                run.cgroups.close()
