"""Tests of the grader (dptlearn.course.grading) on crafted submissions.

One class run grades every crafted submission of tests/grading/crafted.py (plus the generated
stub notebook and a renamed file) through ``python -m dptlearn.course.grading.grade --jobs 4``;
the tests then read its reports. The fixture assignment is
tests/grading/fixtures/solutions/01_fixture.ipynb, judged by fixture_checks.py beside it (the
checks' contract of dptlearn.course.checks). Hostile submissions: tests/test_grade_hostile.py.
"""
from __future__ import annotations

import copy
import csv
import hashlib
import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import NamedTuple

import pytest

from dptlearn.course import exercises
from dptlearn.course.grading import grade, integrity, processes, staging, untrusted
from dptlearn.course.grading import judge as judging
from dptlearn.course.grading.checkcells import CheckCellCall, parse_check_cell
from dptlearn.course.grading.sandboxed import cells, warm
from dptlearn.course.grading.settings import Settings

from grading import crafted
from _helpers import ROOT, run_grader, submission_reports  # noqa: E402

CELL_TIMEOUT = "5"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class GradedClass(NamedTuple):
    """Every crafted submission graded once: the cases, the report folder, each file's SHA-256
    before grading, the grader's process."""
    cases: dict[str, crafted.Written]
    report: Path
    hashes: dict[Path, str]
    proc: subprocess.CompletedProcess


@pytest.fixture(scope="module")
def class_run(tmp_path_factory) -> GradedClass:
    """Grade every crafted submission once."""
    root = tmp_path_factory.mktemp("class")
    cases = crafted.write_cases(root / "subs")
    exercises.generate(crafted.SOLUTIONS, root / "released", crafted.LECTURES)
    stub = root / "subs" / "stub" / f"{crafted.ASSIGNMENT}.ipynb"
    stub.parent.mkdir()
    stub.write_bytes((root / "released" / f"{crafted.ASSIGNMENT}.ipynb").read_bytes())
    cases["stub"] = crafted.Written(stub, 0)
    renamed = root / "subs" / "renamed" / "my homework.ipynb"    # matched by its metadata
    renamed.parent.mkdir()
    nb = json.loads(stub.read_text())
    for ex, (role, src) in {"add": ("solution", "def add(a, b):\n    return a + b")}.items():
        crafted.set_source(nb, ex, role, src)
    renamed.write_text(json.dumps(nb))
    cases["renamed"] = crafted.Written(renamed, 1)
    hashes = {c.path: sha256(c.path) for c in cases.values()}
    report = root / "report"
    proc = run_grader(*[str(c.path) for c in cases.values()], "--solutions", str(crafted.SOLUTIONS),
                      "--report-dir", str(report), "--jobs", "4", "--timeout", CELL_TIMEOUT)
    return GradedClass(cases, report, hashes, proc)


def result_of(class_run, case: str) -> dict:
    path = str(class_run.cases[case].path)
    for f in submission_reports(class_run.report):
        data = json.loads(f.read_text())
        if data["submission"] == path:
            return data
    raise AssertionError(f"no JSON report for {path} in {class_run.report}")


ALL_CASES = list(crafted.CASES) + list(crafted.BROKEN) + ["stub", "renamed"]


def test_grading_completes_with_status_0(class_run):
    proc = class_run.proc
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("case", ALL_CASES)
def test_expected_score(class_run, case):
    expected = class_run.cases[case].score
    res = result_of(class_run, case)
    assert (res["score"], res["max_score"]) == (expected, crafted.MAX_SCORE), \
        json.dumps(res["exercises"], indent=1)
    assert [e["id"] for e in res["exercises"]] == ["add", "grid", "factor"]
    assert res["score"] == sum(e["points"] for e in res["exercises"])
    for e in res["exercises"]:
        assert set(e) >= {"id", "points", "max_points", "passed", "message"}
        assert e["points"] == (e["max_points"] if e["passed"] else 0)


def test_submissions_are_byte_identical_afterwards(class_run):
    cases, hashes = class_run.cases, class_run.hashes
    changed = [str(c.path) for c in cases.values() if sha256(c.path) != hashes[c.path]]
    assert changed == []
    beside = [str(f) for c in cases.values() for f in c.path.parent.iterdir() if f != c.path]
    assert beside == [], "the grader wrote next to a submission"


@pytest.mark.parametrize("case, exercise, text", [
    ("mistake_grid", "grid", "check_to_grid: token 1 should land at grid position (row 0, col 1)"),
    ("mistake_factor", "factor", "check_resample_factor: wrong resampling factor"),
    ("infinite_loop", "grid", "Timeout: the cell ran longer than 5 s"),
    ("unstoppable_loop", "grid", "Timeout"),
    ("os_exit", "grid", "KernelDied"),
    ("exit_call", "grid", "exit() or quit()"),
    ("crash_in_check", "grid", "the check cell did not run: KernelDied"),
    ("syntax_error", "factor", "SyntaxError"),
    ("stub", "factor", "NotImplementedError: Exercise factor: replace this stub with your code"
                       " — see notebooks/01_intro.ipynb"),
    ("correct", "add", "passed (4 sums)"),
    ("tampered_checks", "grid", "[the check cell was edited: the grader ran its own check]"),
    ("deleted_wrong", "grid", "[the check cell was deleted: the grader ran its own check]"),
])
def test_messages_explain_the_failure(class_run, case, exercise, text):
    res = result_of(class_run, case)
    msg = next(e["message"] for e in res["exercises"] if e["id"] == exercise)
    assert text in msg
    assert "\x1b" not in msg and "\n" not in msg and len(msg) <= 400


@pytest.mark.parametrize("case", list(crafted.BROKEN))
def test_broken_file_gets_a_clear_error_and_zero(class_run, case):
    res = result_of(class_run, case)
    assert res["error"].startswith("not a valid notebook")
    assert res["assignment"] == crafted.ASSIGNMENT       # matched by file name all the same
    assert "Traceback" not in res["error"]


def test_crashes_never_cost_more_than_their_exercise(class_run):
    for case in ("infinite_loop", "unstoppable_loop", "os_exit", "exit_call", "crash_in_check"):
        res = result_of(class_run, case)
        assert res["error"] is None
        passed = {e["id"] for e in res["exercises"] if e["passed"]}
        assert passed == {"add", "factor"}, (case, res["exercises"])


def test_report_files_are_unique_and_complete(class_run):
    cases, report = class_run.cases, class_run.report
    jsons = submission_reports(report)
    junits = sorted(report.glob("*.junit.xml"))
    assert len(jsons) == len(junits) == len(cases)     # every file is called 01_fixture.ipynb
    assert {p.name[: -len(".json")] for p in jsons} == \
        {p.name[: -len(".junit.xml")] for p in junits}
    for p in junits:
        ET.parse(p)                                       # well-formed


def test_junit_reports_the_verdicts(class_run):
    """The report's JUnit file has one testcase per exercise, failed exactly where the judge
    failed it (not where the sandbox's own report says)."""
    report = class_run.report
    for case, failed in (("mistake_grid", {"grid"}), ("tampered_checks", {"add", "grid", "factor"})):
        name = result_of(class_run, case)["name"]
        cases = [untrusted.cell_report(tc) for tc in
                 ET.parse(report / f"{name}.junit.xml").getroot().iter("testcase")]
        assert {c["exercise"]: c["points"] for c in cases} == {"add": "1", "grid": "2", "factor": "3"}
        assert {c["exercise"] for c in cases if c["outcome"] == "failure"} == failed


def test_check_cell_tampering_is_flagged(class_run):
    flags = {case: {e["id"]: e["flags"] for e in result_of(class_run, case)["exercises"]}
             for case in ("tampered_checks", "forged_exercise", "correct")}
    assert flags["tampered_checks"] == {"add": ["forgery"], "grid": ["forgery"], "factor": ["forgery"]}
    assert flags["forged_exercise"]["add"] == ["forgery"]
    assert flags["correct"] == {"add": [], "grid": [], "factor": []}


def test_class_summary(class_run):
    cases, report = class_run.cases, class_run.report
    rows = list(csv.DictReader((report / "summary.csv").open(encoding="utf-8")))
    assert len(rows) == len(cases)
    row = next(r for r in rows if "mistake_factor" in r["submission"])
    assert (row["score"], row["max_score"], row["factor:points"]) == ("3", "6", "0")
    assert row["factor:message"].startswith("check_resample_factor: wrong resampling factor")
    md = (report / "summary.md").read_text(encoding="utf-8")
    assert "| submission | assignment | score | `add` | `grid` | `factor` |" in md
    assert "✗ 0/3: `check_resample_factor: wrong resampling factor" in md   # a code span: inert
    assert "\x1b" not in md and "\x1b" not in (report / "summary.csv").read_text()


# ----------------------------------------------------------------------------- no kernels

def fixture_assignment() -> exercises.Assignment:
    return exercises.read_assignment(crafted.SOLUTIONS / f"{crafted.ASSIGNMENT}.ipynb")


def check_sources(nb_cells) -> list[tuple[str, str]]:
    return [(cells.cell_exercise(c), cells.source_of(c))
            for c in nb_cells if "check" in cells.cell_tags(c)]


def test_restore_checks_replaces_reinserts_and_drops():
    a = fixture_assignment()
    nb = crafted.solution_nb()
    originals = check_sources(nb["cells"])
    crafted.tampered_checks(nb)
    nb["cells"].remove(crafted.cell(nb, "grid", "check"))
    nb["cells"].append(crafted.code_cell("pass", ["ex:bonus", "check", "points:9"]))
    nb["cells"].append(crafted.code_cell("pass", ["ex:add", "check", "points:9"]))
    restored = staging.restore_check_cells(nb["cells"], a)
    assert check_sources(restored) == originals
    grid = [i for i, c in enumerate(restored) if "ex:grid" in cells.cell_tags(c)]
    assert "check" in cells.cell_tags(restored[grid[-1]])      # after the exercise's last cell


def test_restore_checks_when_a_whole_exercise_is_gone():
    a = fixture_assignment()
    nb = crafted.solution_nb()
    nb["cells"] = [c for c in nb["cells"] if "ex:grid" not in cells.cell_tags(c)]
    restored = staging.restore_check_cells(nb["cells"], a)
    assert [ex for ex, _ in check_sources(restored)] == ["add", "grid", "factor"]


def test_prepare_clears_outputs_keeps_the_input_and_probes_every_check():
    a = fixture_assignment()
    nb = crafted.solution_nb()
    crafted.huge_output(nb)
    crafted.tampered_checks(nb)
    before = copy.deepcopy(nb)
    prepared = staging.prepare(nb, a)
    assert nb == before
    assert all(c.get("outputs", []) == [] and c.get("execution_count") is None
               for c in prepared["cells"])
    assert check_sources(prepared["cells"]) == [
        (ex, "import dptlearn.course.probe as _dptlearn_probe\n"
             f"_dptlearn_probe.record({ex!r}, {name!r}, {obj})")
        for ex, name, obj in [("add", "check_add", "add"), ("grid", "check_to_grid", "to_grid"),
                              ("factor", "check_resample_factor", "resample_factor")]]


def test_one_sandbox_per_student_and_assignment():
    a, b = fixture_assignment(), fixture_assignment()
    b.name = "02_other"

    def staged(student, assignment):
        r = grade.Result(f"{student}/{assignment.name}.ipynb", student, student=student)
        return staging.StagedNotebook(r, assignment, {}, 1.0)
    items = [staged("ann", a), staged("bob", a), staged("ann", b), staged("ann", a)]
    groups = staging.student_groups(items)
    assert [[(s.result.student, s.key) for s in g] for g in groups] == [
        [("ann", "01_fixture"), ("ann", "02_other")], [("ann", "01_fixture")], [("bob", "01_fixture")]]


def test_clean_message_strips_ansi_and_truncates():
    msg = cells.clean_message("\x1b[0;31mAssertionError\x1b[0m: bad\n  value " + "x" * 500)
    assert msg.startswith("AssertionError: bad value x") and len(msg) == cells.MESSAGE_CHARS
    assert msg.endswith("…") and "\x1b" not in msg


@pytest.mark.parametrize("args, text", [
    (["missing.ipynb"], "no such submission file: missing.ipynb"),
    (["--jobs", "0", "x.ipynb"], "--jobs: expected a positive number"),
    (["--student-limit", "0", "x.ipynb"], "--student-limit: expected a positive number of seconds"),
    (["--solutions", "nowhere", "x.ipynb"], "--solutions: expected a folder"),
    ([], "the following arguments are required"),
])
def test_usage_errors_exit_2(tmp_path, monkeypatch, capsys, args, text):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.ipynb").write_text("{}")
    with pytest.raises(SystemExit) as exc:
        grade.main(args)
    assert exc.value.code == 2 and text in capsys.readouterr().err


def test_invalid_solutions_are_reported(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sols").mkdir()
    (tmp_path / "sols" / "bad.ipynb").write_text("not json")
    (tmp_path / "x.ipynb").write_text("{}")
    assert grade.main(["x.ipynb", "--solutions", "sols"]) == 2
    assert "bad.ipynb: not a readable notebook" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the course

REPO_SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.skipif(not REPO_SOLUTIONS, reason="solutions/ holds no notebooks yet (issue 4: "
                                               "the exercise notebooks are written later)")
def test_committed_exercises_match_and_grade_to_zero(tmp_path):
    differing = exercises.generate(ROOT / "solutions", ROOT / "exercises", ROOT / "notebooks",
                                   check=True)
    assert differing == [], "exercises/ is out of date: run `make exercises`"
    released = sorted((ROOT / "exercises").glob("*.ipynb"))
    opts = Settings(ROOT / "solutions", tmp_path / "report", jobs=2)
    results = grade.grade([str(p) for p in released], opts, progress=lambda _: None)
    for r in results:
        assert r.error is None, (r.submission, r.error)
        assert r.score == 0 and r.max_score > 0, (r.submission, r.score)
        for e in r.exercises:
            if e.kind == "written":             # collected for the teacher, as handed out
                assert e.unscored and "the answer cell is as handed out" in e.message, e
                continue
            assert "NotImplementedError" in e.message, (r.submission, e.id, e.message)


def test_device_and_threads_reach_the_kernel_environment():
    env = processes.kernel_env(Settings(ROOT / "solutions", ROOT, timeout=5, jobs=2, device="cuda"))
    assert env["DPTLEARN_DEVICE"] == "cuda" and env["MPLBACKEND"] == "Agg"
    assert env["OMP_NUM_THREADS"] == str(max(1, (os.cpu_count() or 1) // 2))


@pytest.mark.parametrize("limit", ["notebook", "student"])
def test_watchdog_kills_a_runaway_run_and_keeps_finished_checks(tmp_path, monkeypatch, limit):
    """A cell that outlives the run's wall-clock limit (not the cell timeout) is cut off: the
    notebook's own limit, or the limit for all of one student's notebooks."""
    nb = crafted.solution_nb()
    crafted.set_source(nb, "grid", "solution", "import time\ntime.sleep(600)")
    sub = tmp_path / "slow" / f"{crafted.ASSIGNMENT}.ipynb"
    sub.parent.mkdir()
    sub.write_text(json.dumps(nb))
    opts = Settings(crafted.SOLUTIONS, tmp_path / "report", timeout=300)
    if limit == "notebook":
        monkeypatch.setattr(staging, "watchdog_seconds", lambda nb, a, timeout: 8.0)
        text = "not graded: the notebook ran past the grader's limit of 8 s"
    else:
        opts.student_limit = 8.0
        text = "not graded: this student's notebooks ran past the grader's limit of 8 s for one"
    (r,) = grade.grade([str(sub)], opts, progress=lambda _: None)
    assert r.error.startswith(text), r.error
    assert [e.passed for e in r.exercises][1:] == [False, False] and r.score in (0, 1)
    assert (tmp_path / "report" / "01_fixture.junit.xml").exists()


def test_a_report_write_error_stops_the_run_and_keeps_the_old_reports(tmp_path, monkeypatch, capsys):
    """A full disk is not a name the file system refuses: no renamed report, a clear error, exit 2,
    and the report folder of the last run untouched (nothing half-written left beside it)."""
    import errno

    sub = tmp_path / "eve" / f"{crafted.ASSIGNMENT}.ipynb"
    sub.parent.mkdir()
    sub.write_text(json.dumps(crafted.solution_nb()))
    args = [str(sub), "--solutions", str(crafted.SOLUTIONS), "--report-dir", str(tmp_path / "report")]
    assert grade.main(args) == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "report").rglob("*") if p.is_file()}

    def full(report_dir, r):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(grade, "write_result", full)
    capsys.readouterr()
    assert grade.main(args) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "was left as it was" in err, err
    assert {p.name: p.read_bytes() for p in (tmp_path / "report").rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eve", "report"]


def test_a_student_past_the_limit_gets_no_further_run(tmp_path):
    """Re-runs after a run without a report share the student's deadline: once it has passed,
    no sandbox starts and every exercise says why (no forgery flag)."""
    import time

    sub = tmp_path / "eve" / f"{crafted.ASSIGNMENT}.ipynb"
    sub.parent.mkdir()
    sub.write_text(json.dumps(crafted.solution_nb()))
    (tmp_path / "run").mkdir()
    assignments = exercises.read_assignments(crafted.SOLUTIONS)
    settings = Settings(crafted.SOLUTIONS, tmp_path / "report", 5, student_limit=7)
    run = processes.ClassRun(tmp_path / "run", assignments, settings, ROOT / "dptlearn",
                             progress=lambda _: None)
    try:
        r = grade.Result(str(sub), "eve")
        run.run_group([staging.stage(r, assignments, 5, {})], deadline=time.monotonic() - 1)
    finally:
        if run.cgroups is not None:
            run.cgroups.close()
    text = "not graded: this student's notebooks ran past the grader's limit of 7 s for one student"
    assert r.error.startswith(text)
    assert [(e.points, e.flags) for e in r.exercises] == [(0, [])] * 3
    assert all(e.message == r.error for e in r.exercises)
    assert not list((tmp_path / "run").glob("box*"))


def test_the_watchdog_counts_the_solutions_cells_not_the_submissions():
    a = fixture_assignment()
    n = sum(c["cell_type"] == "code" for c in a.nb["cells"])
    huge = {"cells": [crafted.code_cell("1")] * 100_000}
    assert staging.watchdog_seconds(huge, a, 10) == staging.watchdog_seconds(
        {"cells": [crafted.code_cell("1")] * (n + staging.EXTRA_CELLS)}, a, 10)
    assert staging.watchdog_seconds({"cells": []}, a, 10) == 60


@pytest.mark.parametrize("make, text", [
    (lambda nb: nb["cells"].extend([crafted.code_cell("1")] * 1000), "cells, more than the "
     "grader's limit of 1000"),
    (lambda nb: nb["metadata"].update(junk="x" * (21 * 2**20)), "MiB, more than the grader's "
     "limit of 20 MiB (clear the outputs"),
])
def test_oversized_notebooks_are_refused_at_intake(tmp_path, make, text):
    from dptlearn.course.grading.submissions import InvalidSubmission, read_submission

    nb = crafted.solution_nb()
    make(nb)
    (tmp_path / "big.ipynb").write_text(json.dumps(nb))
    with pytest.raises(InvalidSubmission, match=re.escape(text)):
        read_submission(tmp_path / "big.ipynb")


# ----------------------------------------------------------------------------- warm kernels

PROBE = """import os, random, subprocess, sys
parent = subprocess.run(["ps", "-o", "args=", "-p", str(os.getppid())], capture_output=True, text=True)
facts = {"pid": os.getpid(), "cwd": os.getcwd(), "path0": sys.path[0],
         "parent": parent.stdout,                  # ps, not /proc: macOS has no /proc
         "random": random.random(), "mpl": os.environ.get("MPLBACKEND"), "path": sys.path,
         "leak": "leak" in globals(), "preloaded": "colorsys" in sys.modules}
leak = 1
with open(os.environ["PROBE_OUT"], "a") as fh:
    fh.write(repr(facts) + "\\n")
"""


def run_plugin(root: Path, n: int, warm: bool, out: Path) -> subprocess.CompletedProcess:
    """pytest + nbval + the grading plugin (no sandbox) on ``n`` notebooks with PROBE's cell."""
    nb = {"cells": [crafted.code_cell(PROBE)], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    paths = []
    for i in range(n):
        path = root / f"student{i}" / "probe.ipynb"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(nb))
        paths.append(str(path))
    (root / "pytest.ini").write_text("[pytest]\n")
    cmd = [sys.executable, "-m", "pytest", "-q", "-c", str(root / "pytest.ini"), "--rootdir",
           str(root), "-p", "no:cacheprovider", "-p", "dptlearn.course.grading.sandboxed.plugin",
           "--dptlearn-grading", "--nbval-lax", "--nbval-current-env", "--nbval-cell-timeout",
           "60", "-W", "ignore", *paths] + (["--dptlearn-preload=colorsys"] if warm else [])
    env = dict(os.environ, PROBE_OUT=str(out), MPLBACKEND="Agg")
    return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)


def read_probes(path: Path) -> list[dict]:
    import ast
    return [ast.literal_eval(line) for line in path.read_text().splitlines()]


def test_every_notebook_gets_its_own_fresh_kernel(tmp_path):
    """Warm kernels are forked from the preloading server; each is a separate process that
    sees none of another notebook's names, has its own random state and runs in its notebook's
    folder, with the sys.path and environment of a kernel started from scratch (cold)."""
    probes = {}
    for forked in (True, False):
        out = tmp_path / f"probes-{forked}.txt"
        proc = run_plugin(tmp_path / str(forked), 3, forked, out)
        assert proc.returncode == 0, proc.stdout[-3000:]
        probes[forked] = read_probes(out)
    for forked, got in probes.items():
        assert len(got) == 3 and len({p["pid"] for p in got}) == 3
        assert all(("--fork-server" in p["parent"]) == forked for p in got)
        assert all(p["preloaded"] == forked for p in got)   # colorsys: --dptlearn-preload
        assert len({p["random"] for p in got}) == 3
        assert not any(p["leak"] for p in got)
        assert all(p["mpl"] == "Agg" for p in got)
        assert len({p["cwd"] for p in got}) == 3
        for p in got:                                             # no kernel outlives the run
            with pytest.raises(ProcessLookupError):
                os.kill(p["pid"], 0)

    def normal(p):
        return [x.replace(os.path.dirname(p["cwd"]), "ROOT") for x in p["path"]]
    assert normal(probes[True][0]) == normal(probes[False][0])


def test_preload_modules_come_from_set_up_cells():
    a = fixture_assignment()
    assert staging.preload_modules([a]) == ["fixture_checks"]
    a.nb["cells"] = [crafted.code_cell("%matplotlib inline\nimport os.path, json as j\n"
                                       "from collections import abc\nfrom . import rel"),
                     crafted.code_cell("import secret_solution_module", ["ex:add", "solution"]),
                     crafted.code_cell("this is not python")] + a.nb["cells"]
    assert staging.preload_modules([a])[:4] == ["os.path", "json", "collections",
                                               "collections.abc"]
    assert "secret_solution_module" not in staging.preload_modules([a])


def test_launcher_falls_back_to_a_plain_kernel_without_its_server(tmp_path):
    server = warm.WarmKernels([], str(tmp_path))
    server.proc.kill()
    server.proc.wait()
    km, kc = server.start_kernel(str(tmp_path), 60)
    try:
        seen = []
        kc.execute_interactive("import os; print(os.getppid())", timeout=60,
                               output_hook=lambda m: seen.append(m["content"].get("text", "")))
        assert "".join(seen).strip() == str(os.getpid())      # exec'd in place of the launcher
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
        server.close()


# ----------------------------------------------------------------------------- sandbox pieces

def test_grading_view_stubs_every_name_of_the_head(tmp_path):
    """Every top-level module but __init__ and device is stubbed (also ones added later): its
    functions and classes exist in the view and importing it works; using one raises
    ReferenceUseError naming it; literal constants stay; checks only print. The probe's call
    recorder watches the same modules."""
    import ast

    from dptlearn.course import probe
    from dptlearn.course.grading import view

    heads = view.head_modules(ROOT / "dptlearn")
    assert {"tokens", "grid", "fast", "dust3r", "dpt_large", "hf"} <= set(heads)
    assert not {"__init__", "device"} & set(heads) and probe.NOT_HEAD == view.REAL_MODULES
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "brand_new.py").write_text("def helper():\n    return 1\n")
    assert view.head_modules(tmp_path / "new") == ["brand_new"]
    view.build_view(ROOT / "dptlearn", tmp_path)
    for module in heads:
        real = {n.name for n in ast.parse((ROOT / "dptlearn" / f"{module}.py").read_text()).body
                if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        stub = {n.name for n in ast.parse((tmp_path / "dptlearn" / f"{module}.py").read_text()).body
                if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        assert real <= stub, (module, real - stub)
    assert not (tmp_path / "dptlearn" / "course" / "checks" / "harness.py").exists()
    code = """
import torch.nn as nn
import dptlearn.grid, dptlearn.fusion, dptlearn.reassemble
from dptlearn import checks
def err(f):
    try:
        f()
    except Exception as e:
        return f"{type(e).__name__}: {e}"
class Sub(dptlearn.fusion.FusionBlock):
    pass
class Borrow(nn.Module):
    forward = dptlearn.fusion.FusionBlock.forward
print(err(lambda: dptlearn.grid.tokens_to_grid(1, 2, 3)))
print(err(lambda: Sub()))
print(err(lambda: Borrow()(1)))
print(dptlearn.reassemble.REASSEMBLE_FACTORS)
checks.tokens_to_grid(print)
import dptlearn.viz.trace, dptlearn.train.loop, dptlearn.course.probe
import importlib
for _m in {heads!r}:
    importlib.import_module("dptlearn." + _m)
print(err(lambda: dptlearn.dpt_large.dpt_large_head()))
"""
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code.replace("{heads!r}", repr(heads))],
                         env=env, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines() == [
        "ReferenceUseError: uses dptlearn.grid.tokens_to_grid, the reference for this exercise: "
        "write your own",
        "ReferenceUseError: uses dptlearn.fusion.FusionBlock, the reference for this exercise: "
        "write your own",
        "ReferenceUseError: uses dptlearn.fusion.FusionBlock.forward, the reference for this "
        "exercise: write your own",
        "(4, 2, 1, 0.5)",
        "checks.tokens_to_grid: when grading, the checks run outside the notebook; the grader's "
        "own check cell records your answer",
        "ReferenceUseError: uses dptlearn.dpt_large.dpt_large_head, the reference for this "
        "exercise: write your own"]


def test_recorded_answers_are_read_defensively(tmp_path, monkeypatch):
    import torch

    good = tmp_path / "good.pt"
    torch.save({"check": "x", "results": [{"value": torch.ones(2)}]}, good)
    assert untrusted.load_results(good)["check"] == "x"
    (tmp_path / "link.pt").symlink_to(good)
    (tmp_path / "junk.pt").write_bytes(b"\x80\x02junk")
    (tmp_path / "dir.pt").mkdir()
    evil = tmp_path / "evil.pt"
    torch.save({"check": "x", "results": [Path("/")]}, evil)      # not weights_only data
    for name, text in [("missing.pt", "no answer was recorded"), ("link.pt", "not a regular file"),
                       ("junk.pt", "not readable data"), ("dir.pt", "not a regular file"),
                       ("evil.pt", "not readable data")]:
        with pytest.raises(untrusted.UnreadableResults, match=text):
            untrusted.load_results(tmp_path / name)
    monkeypatch.setattr(untrusted, "MAX_RESULTS_BYTES", 100)
    with pytest.raises(untrusted.UnreadableResults, match="more than the 0 MiB limit"):
        untrusted.load_results(good)


BOMBS = Path(__file__).parent / "grading" / "bombs"     # made by the red team (issue 9)


def test_results_bombs_are_refused_before_any_judge_sees_them(tmp_path):
    """A few kB of pickle reaching one list billions of times, deflated records, a stride-0
    tensor claiming 10^12 elements, an over-long string, deep nesting, a sparse tensor, and messages
    that are not strings: each refused quickly, with a message naming only types and sizes."""
    import torch

    def saved(name, obj):
        torch.save(obj, tmp_path / name)
        return tmp_path / name

    def nested(depth):
        return [nested(depth - 1)] if depth else 0

    one = torch.zeros(1)
    cases = [(BOMBS / "shared_lists.pt", "too large (more than 200000 items"),
             (BOMBS / "deflated.pt", "not as torch.save writes it (compressed entries"),
             (saved("view.pt", {"v": one.expand(10**6, 10**6)}), "more than 67108864 tensor"),
             (saved("str.pt", ["x" * (untrusted.MAX_STR_CHARS + 1)]), "a string of more than"),
             (saved("strs.pt", ["x" * 99_000] * 1000), "more than 4194304 in all"),
             (saved("wide.pt", [[0] * 10**5] * 10**5), "too large (more than 200000 items"),
             (saved("deep.pt", nested(45)), "levels deep"),
             (saved("sparse.pt", {"v": torch.eye(3).to_sparse()}), "holds a torch.sparse_coo tensor")]
    for path, text in cases:
        with pytest.raises(untrusted.UnreadableResults, match=re.escape(text)):
            untrusted.load_results(path)
    judge = judging.Judge.__new__(judging.Judge)
    judge.broken, judge.calls = {}, {"x": CheckCellCall("check_x", "x")}
    for step, text in [({"raised": "ValueError", "message": ["lol"] * 3}, "'message' is a list"),
                       ({"raised": 1, "message": "m"}, "'raised' is a int"),
                       ({"value": 1, "calls": [None]}, "'calls' is not a list of str")]:
        payload = untrusted.load_results(saved("steps.pt", {"check": "check_x", "results": [step]}))
        verdict = judge.verdict("x", payload)
        assert (verdict.passed, verdict.flags) == (False, {"forgery"}), verdict
        assert text in verdict.message, verdict.message


def test_copies_of_the_reference_are_flagged_wherever_they_are():
    """A verbatim copy in an untagged cell, in a string handed to exec, or in another exercise's
    cell is flagged on the exercise it answers; one that answers none is noted; the solutions
    themselves are clean."""
    import ast

    a = next(x for x in exercises.read_assignments(ROOT / "solutions") if x.name == "02_rearrange")
    grid_py = (ROOT / "dptlearn" / "grid.py").read_text()
    tree = ast.parse(grid_py)
    source = {n.name: ast.get_source_segment(grid_py, n) for n in tree.body
              if isinstance(n, ast.FunctionDef)}
    nb = copy.deepcopy(a.nb)
    crafted.set_source(nb, "tokens_to_grid", "solution", "# see the cell above")
    crafted.set_source(nb, "patch_grid", "solution", "exec(" + repr(source["patch_grid"]) + ")")
    crafted.set_source(nb, "grid_to_tokens", "solution",
                       "if True:\n" + "\n".join("    " + line for line in (
                           source["tokens_to_grid"].replace("def tokens_to_grid", "def _helper")
                           + "\n" + source["check_image_size"]).splitlines()))
    nb["cells"].insert(1, crafted.code_cell(source["tokens_to_grid"]))
    forms = integrity.reference_forms(ROOT / "dptlearn")
    found, notes = integrity.identical_to_reference(nb["cells"], a, forms)
    assert found == {"tokens_to_grid": "dptlearn.grid.tokens_to_grid",
                     "patch_grid": "dptlearn.grid.patch_grid",
                     "grid_to_tokens": "dptlearn.grid.tokens_to_grid"}
    assert notes == []
    nb["cells"].insert(1, crafted.code_cell(source["check_image_size"]))
    assert integrity.identical_to_reference(nb["cells"], a, forms)[1] == [
        "a cell holds a copy of dptlearn.grid.check_image_size (identical after normalisation)"]
    for x in exercises.read_assignments(ROOT / "solutions"):
        assert integrity.identical_to_reference(x.nb["cells"], x, forms) == ({}, [])


HOG = """
import subprocess, sys
kids = [subprocess.Popen([sys.executable, "-c", "import time; b = bytearray(100 * 2**20); "
                          "b[::4096] = b'x' * len(b[::4096]); print(flush=True); time.sleep(60)"],
                         stdout=subprocess.PIPE) for _ in range(3)]
for k in kids:
    k.stdout.readline()                  # each has its 100 MiB, or was killed
print(sum(k.poll() is None for k in kids), flush=True)              # how many hold it now
more = []
try:
    for _ in range(40):
        more.append(subprocess.Popen(["sleep", "60"], stdout=subprocess.DEVNULL))
    print(f"{len(more)} more processes")
except OSError:
    print("pids refused")
for k in kids + more:
    k.kill()
"""


def test_a_sandboxs_cgroup_bounds_its_processes_together(tmp_path, monkeypatch):
    """Three processes of 100 MiB each in a cgroup of 150 MiB: at most one is left holding it
    (the OOM killer ends the others, in the cgroup only); a process count; a CPU quota; everything in it is killed when the box
    closes."""
    from dptlearn.course.grading import limits

    monkeypatch.setattr(limits, "MEMORY_BYTES", 150 * 2**20)
    monkeypatch.setattr(limits, "PIDS", 30)
    try:
        cgroups = limits.Cgroups(f"dptlearn-test-{os.getpid()}")
    except limits.LimitError as exc:
        pytest.skip(f"no cgroups here: {exc}")
    box: list[Path] = []
    try:
        box = cgroups.box("box1", cpus=1)
        quota = ((box[0] / "cpu.max").read_text().split()[0] if cgroups.v2
                 else (box[2] / "cpu.cfs_quota_us").read_text().strip())
        assert quota == "100000"
        out = subprocess.run(limits.join_command(box, [sys.executable, "-c", HOG]),
                             capture_output=True, text=True, timeout=120)
        got, pids = out.stdout.split("\n")[:2]
        assert int(got) <= 1 and pids == "pids refused", out
    finally:
        limits.close_box(box)
        cgroups.close()
    assert not any(d.exists() for d in box + cgroups.runs)


def test_scratch_is_a_tmpfs_of_fixed_size(tmp_path):
    from dptlearn.course.grading import limits

    try:
        limits.mount_scratch(tmp_path, 2**20)
    except limits.LimitError as exc:
        pytest.skip(f"no tmpfs here: {exc}")
    try:
        with pytest.raises(OSError, match="No space left"):
            (tmp_path / "big").write_bytes(b"x" * 2 * 2**20)
    finally:
        limits.unmount_scratch(tmp_path)
    assert not (tmp_path / "big").exists()


def test_leftovers_of_a_killed_grader_are_swept(tmp_path, monkeypatch):
    """The cgroups and tmpfs of a grader that no longer runs go; a running grader's stay."""
    from dptlearn.course.grading import limits

    gone = subprocess.Popen(["true"])
    gone.wait()                                            # a pid that no longer runs
    monkeypatch.setattr(os, "getpid", lambda: gone.pid)
    try:
        dead = limits.Cgroups(f"{limits.PREFIX}{gone.pid}-test")
    except limits.LimitError as exc:
        pytest.skip(f"no cgroups here: {exc}")
    box = dead.box("box1", cpus=1)
    (tmp_path / "dead").mkdir()
    limits.mount_scratch(tmp_path / "dead", 2**20)
    monkeypatch.undo()
    alive = limits.Cgroups(f"{limits.PREFIX}{os.getpid()}-test")
    (tmp_path / "alive").mkdir()
    limits.mount_scratch(tmp_path / "alive", 2**20)
    try:
        limits.sweep_leftovers()
        assert not any(d.exists() for d in box + dead.runs)
        assert all(d.exists() for d in alive.runs)
        mounts = Path("/proc/self/mounts").read_text()
        assert str(tmp_path / "dead") not in mounts and str(tmp_path / "alive") in mounts
    finally:
        limits.unmount_scratch(tmp_path / "alive")
        alive.close()
        dead.close()


def test_without_bubblewrap_the_grader_says_so_once_and_falls_back(tmp_path, monkeypatch):
    from dptlearn.course.grading import sandbox

    monkeypatch.setattr(sandbox, "BWRAP", "no-such-bwrap")
    assert "bubblewrap (bwrap) is not installed" in sandbox.bwrap_problem()
    subs = []
    for student in ("ann", "bob"):
        path = tmp_path / student / f"{crafted.ASSIGNMENT}.ipynb"
        path.parent.mkdir()
        path.write_text(json.dumps(crafted.solution_nb()))
        subs.append(str(path))
    said = []
    opts = Settings(crafted.SOLUTIONS, tmp_path / "report", timeout=30, jobs=2,
                         inputs=[str(tmp_path)])
    results = grade.grade(subs, opts, progress=said.append)
    assert [(r.score, r.error) for r in results] == [(crafted.MAX_SCORE, None)] * 2
    assert [s for s in said if "no sandbox" in s] == [
        "dptlearn-grade: no sandbox (bubblewrap (bwrap) is not installed (scripts/install_bwrap.sh "
        "installs it)); falling back to process groups, resource limits and private copies"]


def test_a_check_that_cannot_be_prepared_costs_its_exercise_not_the_run(tmp_path, monkeypatch):
    a = fixture_assignment()
    real = judging.load_checks(a)
    first, *rest = [e.id for e in a.exercises]

    class Broken:
        def case(self, seed):
            raise KeyError("dust3r_head")

    name = parse_check_cell(cells.source_of(a.check_cell(first))).check
    monkeypatch.setattr(judging, "load_checks", lambda _a: {**real, name: Broken()})
    judge = judging.Judge([a], tmp_path / "cases")
    assert set(judge.broken) == {first}
    assert "could not prepare the check" in judge.broken[first] and "KeyError" in judge.broken[first]
    assert sorted(p.stem for p in (tmp_path / "cases").glob("*.pt")) == sorted(rest)
    verdict = judge.verdict(first, {"check": name, "results": []})
    assert not verdict.passed and verdict.flags == {"grader-error"}
    assert "tell your teacher" in verdict.message
