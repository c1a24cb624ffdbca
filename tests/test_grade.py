"""Tests of the grader (dptlearn.grade + dptlearn._grade_plugin) on crafted submissions.

One class run grades every crafted submission of tests/grading/crafted.py (plus the generated
stub notebook and a renamed file) through ``python -m dptlearn.grade --jobs 4``; the tests then
read its reports. The fixture assignment is tests/grading/fixtures/solutions/01_fixture.ipynb.
"""
from __future__ import annotations

import copy
import csv
import hashlib
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from dptlearn import _grade_plugin as plugin
from dptlearn.course import exercises
from dptlearn.course.grading import grade

sys.path.insert(0, str(Path(__file__).parent / "grading"))
import crafted  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CELL_TIMEOUT = "5"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_grader(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
    return subprocess.run([sys.executable, "-m", "dptlearn.course.grading.grade", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def class_run(tmp_path_factory):
    """Grade every crafted submission once; return (cases, report dir, hashes, process)."""
    root = tmp_path_factory.mktemp("class")
    cases = crafted.write_cases(root / "subs")
    exercises.generate(crafted.SOLUTIONS, root / "released", crafted.LECTURES)
    stub = root / "subs" / "stub" / f"{crafted.ASSIGNMENT}.ipynb"
    stub.parent.mkdir()
    stub.write_bytes((root / "released" / f"{crafted.ASSIGNMENT}.ipynb").read_bytes())
    cases["stub"] = (stub, 0)
    renamed = root / "subs" / "renamed" / "my homework.ipynb"    # matched by its metadata
    renamed.parent.mkdir()
    nb = json.loads(stub.read_text())
    for ex, (role, src) in {"add": ("solution", "def add(a, b):\n    return a + b")}.items():
        crafted.set_source(nb, ex, role, src)
    renamed.write_text(json.dumps(nb))
    cases["renamed"] = (renamed, 1)
    hashes = {p: sha256(p) for p, _ in cases.values()}
    report = root / "report"
    proc = run_grader(*[str(p) for p, _ in cases.values()], "--solutions", str(crafted.SOLUTIONS),
                      "--report-dir", str(report), "--jobs", "4", "--timeout", CELL_TIMEOUT)
    return cases, report, hashes, proc


def result_of(class_run, case: str) -> dict:
    cases, report, _, _ = class_run
    path = str(cases[case][0])
    for f in report.glob("*.json"):
        data = json.loads(f.read_text())
        if data["submission"] == path:
            return data
    raise AssertionError(f"no JSON report for {path} in {report}")


ALL_CASES = list(crafted.CASES) + list(crafted.BROKEN) + ["stub", "renamed"]


def test_grading_completes_with_status_0(class_run):
    proc = class_run[3]
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("case", ALL_CASES)
def test_expected_score(class_run, case):
    expected = class_run[0][case][1]
    res = result_of(class_run, case)
    assert (res["score"], res["max_score"]) == (expected, crafted.MAX_SCORE), \
        json.dumps(res["exercises"], indent=1)
    assert [e["id"] for e in res["exercises"]] == ["add", "grid", "factor"]
    assert res["score"] == sum(e["points"] for e in res["exercises"])
    for e in res["exercises"]:
        assert set(e) >= {"id", "points", "max_points", "passed", "message"}
        assert e["points"] == (e["max_points"] if e["passed"] else 0)


def test_submissions_are_byte_identical_afterwards(class_run):
    cases, _, hashes, _ = class_run
    changed = [str(p) for p, _ in cases.values() if sha256(p) != hashes[p]]
    assert changed == []
    beside = [str(f) for p, _ in cases.values() for f in p.parent.iterdir() if f != p]
    assert beside == [], "the grader wrote next to a submission"


@pytest.mark.parametrize("case, exercise, text", [
    ("mistake_grid", "grid", "AssertionError: token 1 should land at grid position (row 0, col 1)"),
    ("mistake_factor", "factor", "AssertionError: wrong resampling factor"),
    ("infinite_loop", "grid", "Timeout: the cell ran longer than 5 s"),
    ("unstoppable_loop", "grid", "Timeout"),
    ("os_exit", "grid", "KernelDied"),
    ("exit_call", "grid", "exit() or quit()"),
    ("crash_in_check", "grid", "KernelDied"),
    ("syntax_error", "factor", "SyntaxError"),
    ("stub", "factor", "NotImplementedError: Exercise factor: replace this stub with your code"
                       " — see notebooks/01_intro.ipynb"),
    ("correct", "add", "passed"),
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
    cases, report, _, _ = class_run
    jsons = sorted(report.glob("*.json"))
    junits = sorted(report.glob("*.junit.xml"))
    assert len(jsons) == len(junits) == len(cases)     # every file is called 01_fixture.ipynb
    assert {p.name[: -len(".json")] for p in jsons} == \
        {p.name[: -len(".junit.xml")] for p in junits}
    for p in junits:
        ET.parse(p)                                       # well-formed


def test_junit_carries_exercise_and_points(class_run):
    _, report, _, _ = class_run
    name = next(p for p in report.glob("*.json")
                if json.loads(p.read_text())["submission"].endswith(
                    f"mistake_grid/{crafted.ASSIGNMENT}.ipynb")).name[: -len(".json")]
    cases = [grade.case_info(tc) for tc in
             ET.parse(report / f"{name}.junit.xml").getroot().iter("testcase")]
    checks = {c["exercise"]: c for c in cases if c.get("role") == "check"}
    assert {k: v["points"] for k, v in checks.items()} == {"add": "1", "grid": "2", "factor": "3"}
    assert checks["grid"]["outcome"] == "failure"
    assert checks["grid"]["message"].startswith("AssertionError: token 1")


def test_class_summary(class_run):
    cases, report, _, _ = class_run
    rows = list(csv.DictReader((report / "summary.csv").open(encoding="utf-8")))
    assert len(rows) == len(cases)
    row = next(r for r in rows if "mistake_factor" in r["submission"])
    assert (row["score"], row["max_score"], row["factor:points"]) == ("3", "6", "0")
    assert row["factor:message"].startswith("AssertionError: wrong resampling factor")
    md = (report / "summary.md").read_text(encoding="utf-8")
    assert "| submission | assignment | score | `add` | `grid` | `factor` |" in md
    assert "✗ 0/3: AssertionError: wrong resampling factor" in md
    assert "\x1b" not in md and "\x1b" not in (report / "summary.csv").read_text()


# ----------------------------------------------------------------------------- no kernels

def fixture_assignment() -> exercises.Assignment:
    return exercises.read_assignment(crafted.SOLUTIONS / f"{crafted.ASSIGNMENT}.ipynb")


def check_sources(cells) -> list[tuple[str, str]]:
    return [(plugin.exercise_of(exercises.tags_of(c)), exercises.source_of(c))
            for c in cells if "check" in exercises.tags_of(c)]


def test_restore_checks_replaces_reinserts_and_drops():
    a = fixture_assignment()
    nb = crafted.solution_nb()
    originals = check_sources(nb["cells"])
    crafted.tampered_checks(nb)
    nb["cells"].remove(crafted.cell(nb, "grid", "check"))
    nb["cells"].append(crafted.code_cell("pass", ["ex:bonus", "check", "points:9"]))
    nb["cells"].append(crafted.code_cell("pass", ["ex:add", "check", "points:9"]))
    restored = grade.restore_checks(nb["cells"], a)
    assert check_sources(restored) == originals
    grid = [i for i, c in enumerate(restored) if "ex:grid" in exercises.tags_of(c)]
    assert "check" in exercises.tags_of(restored[grid[-1]])      # after the exercise's last cell


def test_restore_checks_when_a_whole_exercise_is_gone():
    a = fixture_assignment()
    nb = crafted.solution_nb()
    nb["cells"] = [c for c in nb["cells"] if "ex:grid" not in exercises.tags_of(c)]
    restored = grade.restore_checks(nb["cells"], a)
    assert [ex for ex, _ in check_sources(restored)] == ["add", "grid", "factor"]


def test_prepare_clears_outputs_and_keeps_the_input():
    a = fixture_assignment()
    nb = crafted.solution_nb()
    crafted.huge_output(nb)
    before = copy.deepcopy(nb)
    prepared = grade.prepare(nb, a)
    assert nb == before
    assert all(c.get("outputs", []) == [] and c.get("execution_count") is None
               for c in prepared["cells"])


def test_find_assignment_by_metadata_then_name():
    a = [fixture_assignment()]
    assert grade.find_assignment({"metadata": {"dptlearn": {"assignment": "01_fixture"}}},
                                 Path("x/whatever.ipynb"), a) is a[0]
    assert grade.find_assignment({}, Path("x/01_fixture.ipynb"), a) is a[0]
    assert grade.find_assignment({}, Path("x/01_fixture-alice (2).ipynb"), a) is a[0]
    assert grade.find_assignment({"metadata": {"dptlearn": "junk"}}, Path("x/02.ipynb"), a) is None


def test_report_names_are_unique():
    assert grade.report_names(["alice/03.ipynb", "bob/03.ipynb", "carol/x/04.ipynb"]) == \
        ["alice__03", "bob__03", "04"]
    assert grade.report_names(["a/b.ipynb", "a/b.ipynb"]) == ["b", "b-2"]
    assert grade.report_names(["c/my work (1).ipynb"]) == ["my_work__1_"]


def test_batches_cover_every_notebook_once():
    items = list(range(19))
    for jobs in (1, 2, 4, 30):
        parts = grade.batches(items, jobs, 8)
        assert sorted(sum(parts, [])) == items
        assert len(parts) >= min(jobs, 19) and max(map(len, parts)) <= 8


def test_clean_message_strips_ansi_and_truncates():
    msg = plugin.clean_message("\x1b[0;31mAssertionError\x1b[0m: bad\n  value " + "x" * 500)
    assert msg.startswith("AssertionError: bad value x") and len(msg) == plugin.MESSAGE_CHARS
    assert msg.endswith("…") and "\x1b" not in msg


@pytest.mark.parametrize("args, text", [
    (["missing.ipynb"], "no such submission file: missing.ipynb"),
    (["--jobs", "0", "x.ipynb"], "--jobs: expected a positive number"),
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
    opts = grade.Options(ROOT / "solutions", tmp_path / "report", jobs=2)
    results = grade.grade([str(p) for p in released], opts, progress=lambda _: None)
    for r in results:
        assert r.error is None, (r.submission, r.error)
        assert r.score == 0 and r.max_score > 0, (r.submission, r.score)
        for e in r.exercises:
            assert "NotImplementedError" in e.message, (r.submission, e.id, e.message)


def test_device_and_threads_reach_the_kernel_environment(tmp_path):
    opts = grade.Options(crafted.SOLUTIONS, tmp_path, device="cuda", jobs=2)
    env = grade._kernel_env(opts, tmp_path / "plugin")
    assert env["DPTLEARN_DEVICE"] == "cuda"
    assert env["PYTHONPATH"].split(os.pathsep)[:3] == [
        str(tmp_path / "plugin"), str(ROOT), str(crafted.SOLUTIONS.resolve())]


def test_partial_scores_from_the_running_log(tmp_path):
    log = tmp_path / "b.checks.jsonl"
    log.write_text('{"submission": "s1", "exercise": "add", "passed": true, "message": null}\n'
                   '{"submission": "s1", "exercise": "grid", "passed": false, "message": "Ass')
    got = grade.score_partial(grade.read_check_log(log)["s1"], fixture_assignment(), "late")
    assert [(e.id, e.points, e.message) for e in got] == \
        [("add", 1, "passed"), ("grid", 0, "late"), ("factor", 0, "late")]


def test_watchdog_kills_a_runaway_run_and_keeps_finished_checks(tmp_path, monkeypatch):
    """A cell that outlives the run's wall-clock limit (not the cell timeout) is cut off."""
    nb = crafted.solution_nb()
    crafted.set_source(nb, "grid", "solution", "import time\ntime.sleep(600)")
    sub = tmp_path / "slow" / f"{crafted.ASSIGNMENT}.ipynb"
    sub.parent.mkdir()
    sub.write_text(json.dumps(nb))
    monkeypatch.setattr(grade, "watchdog_seconds", lambda nb, timeout: 8.0)
    opts = grade.Options(crafted.SOLUTIONS, tmp_path / "report", timeout=300)
    (r,) = grade.grade([str(sub)], opts, progress=lambda _: None)
    assert r.error.startswith("not graded: the notebook ran past the grader's limit of 8 s")
    assert [e.passed for e in r.exercises][1:] == [False, False] and r.score in (0, 1)
    assert (tmp_path / "report" / "01_fixture.junit.xml").exists()


# ----------------------------------------------------------------------------- warm kernels

PROBE = """import os, random, sys
facts = {"pid": os.getpid(), "cwd": os.getcwd(), "path0": sys.path[0],
         "parent": open(f"/proc/{os.getppid()}/cmdline").read().replace("\\0", " "),
         "random": random.random(), "mpl": os.environ.get("MPLBACKEND"), "path": sys.path,
         "leak": "leak" in globals(), "preloaded": "fixture_checks" in sys.modules}
leak = 1
with open(os.environ["PROBE_OUT"], "a") as fh:
    fh.write(repr(facts) + "\\n")
"""


def probe_submissions(tmp_path: Path, n: int) -> list[str]:
    nb = crafted.solution_nb()
    nb["cells"].insert(0, crafted.code_cell(PROBE))
    paths = []
    for i in range(n):
        sub = tmp_path / f"student{i}" / f"{crafted.ASSIGNMENT}.ipynb"
        sub.parent.mkdir(parents=True)
        sub.write_text(json.dumps(nb))
        paths.append(str(sub))
    return paths


def read_probes(path: Path) -> list[dict]:
    import ast
    return [ast.literal_eval(line) for line in path.read_text().splitlines()]


def test_every_notebook_gets_its_own_fresh_kernel(tmp_path, monkeypatch):
    """Warm kernels are forked from the preloading server; each is a separate process that
    sees none of another notebook's names, has its own random state and runs in its copy's
    folder, with the sys.path and environment of a kernel started from scratch (cold)."""
    probes = {}
    for warm in (True, False):
        out = tmp_path / f"probes-{warm}.txt"
        monkeypatch.setenv("PROBE_OUT", str(out))
        subs = probe_submissions(tmp_path / str(warm), 3)
        opts = grade.Options(crafted.SOLUTIONS, tmp_path / f"report-{warm}", timeout=30,
                             jobs=1, warm_kernels=warm)
        results = grade.grade(subs, opts, progress=lambda _: None)
        assert [(r.score, r.error) for r in results] == [(crafted.MAX_SCORE, None)] * 3
        probes[warm] = read_probes(out)
    for warm, got in probes.items():
        assert len(got) == 3 and len({p["pid"] for p in got}) == 3
        assert all(("--fork-server" in p["parent"]) == warm for p in got)
        assert all(p["preloaded"] == warm for p in got)   # fixture_checks: a set-up import
        assert len({p["random"] for p in got}) == 3
        assert not any(p["leak"] for p in got)
        assert all(p["mpl"] == "Agg" for p in got)
        assert len({p["cwd"] for p in got}) == 3
        assert not any(str(tmp_path) in p["cwd"] for p in got)   # a copy, not the submission
        for p in got:                                             # no kernel outlives the run
            with pytest.raises(ProcessLookupError):
                os.kill(p["pid"], 0)

    def normal(p):
        return [x.replace(os.path.dirname(p["cwd"]), "ROOT") for x in p["path"]]
    assert normal(probes[True][0]) == normal(probes[False][0])


def test_preload_modules_come_from_set_up_cells():
    a = fixture_assignment()
    assert grade.preload_modules([a]) == ["fixture_checks"]
    a.nb["cells"] = [crafted.code_cell("%matplotlib inline\nimport os.path, json as j\n"
                                       "from collections import abc\nfrom . import rel"),
                     crafted.code_cell("import secret_solution_module", ["ex:add", "solution"]),
                     crafted.code_cell("this is not python")] + a.nb["cells"]
    assert grade.preload_modules([a])[:4] == ["os.path", "json", "collections",
                                              "collections.abc"]
    assert "secret_solution_module" not in grade.preload_modules([a])


def test_launcher_falls_back_to_a_plain_kernel_without_its_server(tmp_path):
    warm = plugin.WarmKernels([], str(tmp_path))
    warm.proc.kill()
    warm.proc.wait()
    km, kc = warm.start_kernel(str(tmp_path), 60)
    try:
        seen = []
        kc.execute_interactive("import os; print(os.getppid())", timeout=60,
                               output_hook=lambda m: seen.append(m["content"].get("text", "")))
        assert "".join(seen).strip() == str(os.getpid())      # exec'd in place of the launcher
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
        warm.close()
