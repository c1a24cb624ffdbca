"""Hostile submissions: forged verdicts, dptlearn's reference handed in, attacks on the sandbox.

Two grading runs, each with honest classmates in the same run:

* ``fixture_run``: the grading fixture (tests/grading/fixtures, exercises ``add`` 1 point,
  ``grid`` 2, ``factor`` 3) — forgeries of every kind, reference use, reading files that the
  sandbox hides, writing outside the scratch folder, killpg, fork/memory/file-size abuse and an
  output flood, one crafted submission each;
* ``course_run``: the real solutions — every delegation form to dptlearn's head (direct call,
  wrapper instance, subclass, borrowed forward, importlib), a copy of the reference's source,
  and forgeries of ``dptlearn.checks`` from inside the kernel.

Isolation cases turn what the sandbox let them do into their answer: ``add`` is right only if
every attempt failed, so the score says whether the sandbox held. Every test asserts exact
per-exercise points and a message or flag; afterwards every file outside the grader's own
temporary folder that a submission could aim at is byte-identical. Needs a working bubblewrap
(``make sandbox-deps``); without one the fallback is not a sandbox and these tests are skipped.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import socket
import sys
from pathlib import Path

import pytest

from dptlearn.course.grading import grade, limits, sandbox
from dptlearn.course.grading.settings import Settings
from dptlearn.course.grading.reportdir import MANIFEST

from _helpers import ROOT
from grading import crafted

PROBLEM = sandbox.bwrap_problem()
pytestmark = pytest.mark.skipif(PROBLEM is not None, reason=f"no sandbox: {PROBLEM}")

HONEST = {"add": 1, "grid": 2, "factor": 3}
ZERO = {"add": 0, "grid": 0, "factor": 0}

# ----------------------------------------------------------------------------- the fixture cases
# Each case: (edit of the solution notebook, expected points, {exercise: (text, flags)}).
# ``{...}`` fields in sources are filled in with the run's host paths by ``fill``.


def wrong_answers(nb):
    crafted.mistake_add(nb)
    crafted.mistake_grid(nb)
    crafted.mistake_factor(nb)


def append(nb, ex, source):
    cell = crafted.cell(nb, ex, "solution")
    cell["source"] = ["".join(cell["source"]) + "\n" + source]


def only_if(condition: str) -> str:
    """An ``add`` that is right only if ``condition`` holds in the kernel."""
    return (f"_held = bool({condition})\n"
            "def add(a, b):\n    return a + b if _held else a - b\n")


PATCH_CHECKS = """
from dptlearn import checks as _c
import dptlearn.course.checks as _cc
for _n in ("check_add", "check_to_grid", "check_resample_factor", "tokens_to_grid"):
    setattr(_c, _n, lambda *a, **k: print("passed"))
_cc.CHECKS = {}
"""
REBIND = """class _Pass:
    def __getattr__(self, name):
        return lambda *a, **k: print("passed")
checks = _Pass()
"""
SWAP_PROBE = """
import sys, types, dptlearn.course
_fake = types.SimpleNamespace(record=lambda *a, **k: print("passed"))
sys.modules["dptlearn.course.probe"] = dptlearn.course.probe = _fake
"""
FAKE_RESULTS = """
import os, sys, types, torch, dptlearn.course
def _record(ex, name, obj):
    torch.save({"check": name, "results": [{"value": "passed", "calls": []}] * 4},
               os.path.join(os.environ["DPTLEARN_PROBE_DIR"], "results", ex + ".pt"))
sys.modules["dptlearn.course.probe"] = dptlearn.course.probe = types.SimpleNamespace(record=_record)
"""
PATCH_TORCH = """
import builtins, torch
torch.equal = lambda *a, **k: True
torch.allclose = lambda *a, **k: True
torch.Tensor.__eq__ = lambda *a, **k: True
builtins.AssertionError = type("AssertionError", (Exception,), {})
"""
HIDE_ERRORS = """
import sys
get_ipython().set_custom_exc((BaseException,), lambda *a, **k: None)
sys.excepthook = lambda *a: None
"""
OUTSIDE_RECORD = """
import os, torch
_dir = os.environ["DPTLEARN_PROBE_DIR"]
_plan = torch.load(os.path.join(_dir, "cases", "add.pt"), weights_only=True)
torch.save({"check": "check_add",
            "results": [{"value": s["args"][0] + s["args"][1], "calls": []} for s in _plan]},
           os.path.join(_dir, "results", "add.pt"))
"""
SYMLINK_RESULTS = """
import os
os.symlink("/etc/passwd", os.path.join(os.environ["DPTLEARN_PROBE_DIR"], "results", "grid.pt"))
"""
GARBAGE_RESULTS = """
import os
with open(os.path.join(os.environ["DPTLEARN_PROBE_DIR"], "results", "factor.pt"), "wb") as fh:
    fh.write(b"\\x80\\x02junk" * 1000)
"""
READ_FROM_DISK = """
import json
for _path in ["{solutions}/01_fixture.ipynb", "{repo}/solutions/02_rearrange.ipynb",
              "{repo}/tests/dust3r_reference.py"]:
    try:
        _text = open(_path).read()
    except OSError:
        continue
    exec("".join(json.loads(_text)["cells"][3]["source"]) if _path.endswith(".ipynb") else _text)
"""
WRITE_EVERYWHERE = """
import os
_hits = []
_targets = [{targets}]
for _dir, _subs, _files in os.walk("/"):
    _subs[:] = [s for s in _subs if os.path.join(_dir, s) not in (
        "/proc", "/sys", "/dev", "/grade/work", "/tmp", "/grade/probe")]
    _targets += [os.path.join(_dir, f) for f in _files if f.endswith(".ipynb")]
for _t in _targets:
    try:
        with open(_t, "ab") as fh:
            fh.write(b"#corrupted")
        _hits.append(_t)
    except OSError:
        pass
    try:
        os.utime(_t, (0, 0))
        _hits.append(_t)
    except OSError:
        pass
for _t in ["{report}/evil.json", "{repo}/evil.txt", "{classmate_dir}/evil.ipynb"]:
    try:
        open(_t, "w").write("x")
        _hits.append(_t)
    except OSError:
        pass
"""
READ_CLASSMATES = """
import os
_seen = []
for _t in ["{classmate}", "{repo}/solutions/01_tokens_and_hooks.ipynb", "/etc/shadow"]:
    try:
        open(_t, "rb").read(1)
        _seen.append(_t)
    except OSError:
        pass
for _dir, _subs, _files in os.walk("/"):
    _subs[:] = [s for s in _subs if os.path.join(_dir, s) not in ("/proc", "/sys", "/grade/work")]
    _seen += [os.path.join(_dir, f) for f in _files if f.endswith(".ipynb")]
"""
SIGNALS = """
import os, signal
_done = []
for _pid, _sig in (({grader_pid}, 0), ({grader_pid}, signal.SIGTERM)):
    try:
        os.kill(_pid, _sig)
        _done.append((_pid, _sig))
    except OSError:
        pass
_uid = os.getuid()
os.kill(1, signal.SIGKILL)      # the sandbox's init: ignored, so later exercises still count
"""
NETWORK = """
import socket
_connected = []
for _addr in [("127.0.0.1", {port}), ("10.0.0.1", 80), ("1.1.1.1", 53)]:
    try:
        socket.create_connection(_addr, timeout=2).close()
        _connected.append(_addr)
    except OSError:
        pass
"""
FORK_BOMB = """
import subprocess
_procs = []
try:
    for _ in range(400):
        _procs.append(subprocess.Popen(["sleep", "60"]))
except OSError:
    pass
_count = len(_procs)
for _p in _procs:
    _p.kill()
    _p.wait()
"""
MEMORY = """
_refused = False
try:
    _big = bytearray(6 * 2**30)
except MemoryError:
    _refused = True
"""
FILE_SIZE = """
import os
_refused = False
try:
    with open("big.bin", "wb") as fh:
        for _ in range(320):
            fh.write(b"\\0" * 2**20)
except OSError:
    _refused = True
os.remove("big.bin")
"""
FILL_SCRATCH = """
import os
_refused = False
try:
    for _i in range(3):             # each file under RLIMIT_FSIZE, together over the tmpfs
        with open(f"/grade/work/fill{_i}.bin", "wb") as fh:
            for _ in range(50):
                fh.write(b"\\1" * 2**20)
except OSError:
    _refused = True
for _i in range(3):
    if os.path.exists(f"/grade/work/fill{_i}.bin"):
        os.remove(f"/grade/work/fill{_i}.bin")
"""
FLOOD = """
import os
for _ in range(3000):
    print("y" * 10_000)
os.write(1, b"z" * 30_000_000)
os.write(2, b"z" * 30_000_000)
"""
KILLPG = "import os, signal\nos.killpg(0, signal.SIGKILL)"
KILL_ALL = "import os, signal\nos.kill(-1, signal.SIGKILL)"

FORGERY = "forgery"
FIXTURE_CASES = {
    "patched_checks": (lambda nb: (wrong_answers(nb), append(nb, "add", PATCH_CHECKS)), ZERO,
                       {"add": ("check_add: add(", [])}),
    "rebound_checks": (lambda nb: (wrong_answers(nb), append(nb, "add", REBIND)), ZERO,
                       {"grid": ("check_to_grid: token 1 should land", [])}),
    "rebound_in_set_up": (lambda nb: (wrong_answers(nb), crafted.insert_after(
        nb, "add", "exercise", crafted.code_cell(REBIND))), ZERO,
        {"factor": ("wrong resampling factor", [])}),
    "swapped_probe": (lambda nb: (wrong_answers(nb), append(nb, "add", SWAP_PROBE)), ZERO,
                      {"add": ("no answer was recorded although the check cell ran", [FORGERY])}),
    "fake_results": (lambda nb: (wrong_answers(nb), append(nb, "add", FAKE_RESULTS)), ZERO,
                     {"add": ("got 'passed'", [])}),
    "patched_torch_and_builtins": (lambda nb: (wrong_answers(nb), append(nb, "add", PATCH_TORCH)),
                                   ZERO, {"add": ("check_add: add(", [])}),
    "hidden_errors": (lambda nb: (wrong_answers(nb), append(nb, "add", HIDE_ERRORS)), ZERO,
                      {"grid": ("check_to_grid: token 1 should land", [])}),
    "injected_check_cells": (lambda nb: (
        crafted.mistake_add(nb),
        crafted.insert_after(nb, "add", "solution", crafted.code_cell(
            "print('passed')", ["ex:add", "check", "points:1"])),
        nb["cells"].append(crafted.code_cell("print('passed')", ["ex:bonus", "check", "points:50"]))),
        {"add": 0, "grid": 2, "factor": 3},
        {"add": ("extra cell(s) tagged check", [FORGERY])}),
    "results_outside_record": (lambda nb: crafted.set_source(nb, "add", "solution", OUTSIDE_RECORD),
                               {"add": 0, "grid": 2, "factor": 3},
                               {"add": ("an answer was recorded outside the check cell", [FORGERY])}),
    "symlinked_results": (lambda nb: crafted.set_source(nb, "grid", "solution", SYMLINK_RESULTS),
                          {"add": 1, "grid": 0, "factor": 3},
                          {"grid": ("not a regular file", [FORGERY])}),
    "garbage_results": (lambda nb: crafted.set_source(nb, "factor", "solution", GARBAGE_RESULTS),
                        {"add": 1, "grid": 2, "factor": 0},
                        {"factor": ("not readable data", [FORGERY])}),
    "reference_call": (lambda nb: crafted.set_source(nb, "grid", "solution", (
        "import dptlearn.grid\ndef to_grid(tokens, nh, nw):\n"
        "    return dptlearn.grid.tokens_to_grid(tokens, nh, nw)")),
        {"add": 1, "grid": 0, "factor": 3},
        {"grid": ("uses dptlearn.grid.tokens_to_grid, the reference for this exercise: write your "
                  "own", ["reference"])}),
    "read_solutions_from_disk": (lambda nb: crafted.set_source(nb, "add", "solution", READ_FROM_DISK),
                                 {"add": 0, "grid": 2, "factor": 3},
                                 {"add": ("NameError: name 'add' is not defined", [])}),
    "write_everywhere": (lambda nb: append(nb, "add", WRITE_EVERYWHERE + only_if("not _hits")),
                         HONEST, {"add": ("passed", [])}),
    "read_classmates": (lambda nb: append(nb, "add", READ_CLASSMATES + only_if("not _seen")),
                        HONEST, {"add": ("passed", [])}),
    "signal_the_grader": (lambda nb: append(nb, "add", SIGNALS + only_if("not _done and _uid")),
                          HONEST, {"add": ("passed", [])}),
    "network": (lambda nb: append(nb, "add", NETWORK + only_if("not _connected")), HONEST,
                {"add": ("passed", [])}),
    "fork_bomb": (lambda nb: append(nb, "add", FORK_BOMB + only_if(f"_count < {sandbox.NPROC}")),
                  HONEST, {"add": ("passed", [])}),
    "memory_hog": (lambda nb: append(nb, "add", MEMORY + only_if("_refused")), HONEST,
                   {"add": ("passed", [])}),
    "file_size": (lambda nb: append(nb, "add", FILE_SIZE + only_if("_refused")), HONEST,
                  {"add": ("passed", [])}),
    "fill_scratch": (lambda nb: append(nb, "add", FILL_SCRATCH + only_if("_refused")), HONEST,
                     {"add": ("passed", [])}),
    "output_flood": (lambda nb: append(nb, "grid", FLOOD), HONEST, {"grid": ("passed", [])}),
    "killpg": (lambda nb: crafted.set_source(nb, "grid", "solution", KILLPG),
               {"add": 1, "grid": 0, "factor": 0},
               {"grid": ("the notebook's processes were killed from inside after", [])}),
    "kill_everything": (lambda nb: crafted.set_source(nb, "factor", "solution", KILL_ALL),
                        {"add": 1, "grid": 2, "factor": 0},
                        {"factor": ("killed from inside", [])}),
}
HONEST_STUDENTS = ("honest_ann", "honest_bob")
# a file named as Moodle would name the student "network"'s, in the spoofer's own folder
FILE_NAMES = {"spoofed_name": "network_1_assignsubmission_file_01_fixture.ipynb"}
FIXTURE_CASES["spoofed_name"] = (wrong_answers, ZERO, {"add": ("check_add: add(", [])})


def sha256_tree(paths: list[Path]) -> dict[str, str]:
    out = {}
    for top in paths:
        for p in sorted([top] if top.is_file() else top.rglob("*")):
            if p.is_file() and "__pycache__" not in p.parts:
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def guarded(*extra: Path) -> list[Path]:
    """What no submission may change: the repository's course files and the fixture."""
    return [ROOT / "solutions", ROOT / "exercises", ROOT / "tests" / "grading",
            ROOT / "tests" / "dust3r_reference.py", ROOT / "dptlearn" / "grid.py", *extra]


def reports_by_submission(report: Path) -> dict[str, dict]:
    out = {}
    for p in report.glob("*.json"):
        if p.name != MANIFEST:
            data = json.loads(p.read_text())
            out[data["submission"]] = data
    return out


@pytest.fixture(scope="module")
def fixture_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    subs, report = root / "class", root / "report"
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    honest_paths = {}
    for name in HONEST_STUDENTS:
        path = subs / name / f"{crafted.ASSIGNMENT}.ipynb"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(crafted.solution_nb()))
        honest_paths[name] = path
    fill = {"solutions": crafted.SOLUTIONS, "repo": ROOT, "report": report,
            "classmate": honest_paths["honest_ann"], "classmate_dir": subs / "honest_ann",
            "grader_pid": os.getpid(), "port": listener.getsockname()[1],
            "targets": ", ".join(repr(str(p)) for p in [
                honest_paths["honest_ann"], crafted.SOLUTIONS / f"{crafted.ASSIGNMENT}.ipynb",
                ROOT / "solutions" / "01_tokens_and_hooks.ipynb",
                ROOT / "exercises" / "01_tokens_and_hooks.ipynb", ROOT / "dptlearn" / "grid.py",
                ROOT / "tests" / "dust3r_reference.py"])}
    paths = {}
    for name, (edit, _, _) in FIXTURE_CASES.items():
        nb = copy.deepcopy(crafted.solution_nb())
        edit(nb)
        for cell in nb["cells"]:
            text = "".join(cell["source"])
            for key, value in fill.items():
                text = text.replace("{" + key + "}", str(value))
            cell["source"] = [text]
        path = subs / name / FILE_NAMES.get(name, f"{crafted.ASSIGNMENT}.ipynb")
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(nb))
        paths[name] = path
    before = sha256_tree(guarded(subs))
    files = [str(p) for p in sorted(subs.rglob("*.ipynb"))]      # as a shell's subs/*/*.ipynb
    opts = Settings(crafted.SOLUTIONS, report, timeout=20, jobs=2, inputs=files)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(limits, "SCRATCH_BYTES", 128 * 2**20)   # fill_scratch writes 150 MiB
            results = grade.grade(files, opts, progress=lambda _: None)
    finally:
        listener.close()
    after = sha256_tree(guarded(subs))
    return {"paths": paths, "honest": honest_paths, "report": report, "before": before,
            "after": after, "results": {r.submission: r for r in results}}


def points(result) -> dict[str, int]:
    return {e.id: e.points for e in result.exercises}


@pytest.mark.parametrize("case", list(FIXTURE_CASES))
def test_hostile_fixture_submission(fixture_run, case):
    _, expected, messages = FIXTURE_CASES[case]
    r = fixture_run["results"][str(fixture_run["paths"][case])]
    assert points(r) == expected, [(e.id, e.points, e.message, e.flags) for e in r.exercises]
    for ex_id, (text, flags) in messages.items():
        e = next(e for e in r.exercises if e.id == ex_id)
        assert text in e.message and e.flags == flags, (e.message, e.flags)
    for e in r.exercises:
        assert "Traceback" not in e.message and "\n" not in e.message and len(e.message) <= 400


def test_honest_classmates_keep_full_marks(fixture_run):
    for path in fixture_run["honest"].values():
        r = fixture_run["results"][str(path)]
        assert points(r) == HONEST and r.error is None
        assert all(e.flags == [] for e in r.exercises)


def test_a_download_name_in_ones_own_folder_claims_nobody(fixture_run):
    """``subs/spoofed_name/network_1_assignsubmission_file_01_fixture.ipynb``, given with every
    other file as a shell's ``subs/*/*.ipynb`` would, is graded as spoofed_name's, apart from
    the student ``network`` (who keeps her marks and gets no note)."""
    results = fixture_run["results"]
    spoof = results[str(fixture_run["paths"]["spoofed_name"])]
    victim = results[str(fixture_run["paths"]["network"])]
    assert (spoof.student, spoof.student_from, spoof.assignment) == (
        "spoofed_name", "folder", crafted.ASSIGNMENT)
    assert spoof.student_key != victim.student_key and victim.notes == [] == spoof.notes
    assert points(victim) == HONEST


def test_killpg_is_not_called_a_timeout(fixture_run):
    for case in ("killpg", "kill_everything"):
        r = fixture_run["results"][str(fixture_run["paths"][case])]
        assert r.error.startswith("not graded: the notebook's processes were killed from inside")
        assert "(os.kill/killpg?)" in r.error and "limit" not in r.error


def test_no_file_outside_the_scratch_changed(fixture_run):
    assert fixture_run["after"] == fixture_run["before"]


def test_the_report_holds_only_the_graders_files(fixture_run):
    report = fixture_run["report"]
    names = {p.name for p in report.iterdir()}
    assert "evil.json" not in names and not (ROOT / "evil.txt").exists()
    data = reports_by_submission(report)
    assert len(data) == len(FIXTURE_CASES) + len(HONEST_STUDENTS)
    for d in data.values():
        assert "Traceback" not in json.dumps(d)


# ----------------------------------------------------------------------------- the real course

REPO_SOLUTIONS = ROOT / "solutions"
COURSE_CASES = {
    # 02: importlib, a direct call, and a copy of the reference's source (passes, flagged)
    "delegating_02": ("02_rearrange", {
        "patch_grid": ("import importlib\npatch_grid = importlib.import_module('dptlearn.grid').patch_grid",),
        "tokens_to_grid": ("import dptlearn.grid\ndef tokens_to_grid(tokens, nh, nw):\n"
                           "    return dptlearn.grid.tokens_to_grid(tokens, nh, nw)",),
        "grid_to_tokens": ("COPY dptlearn/grid.py grid_to_tokens",)},
        {"patch_grid": (0, ["reference"]), "tokens_to_grid": (0, ["reference"]),
         "grid_to_tokens": (2, ["identical"])}),
    # 04: an instance of the reference inside a wrapper, a subclass, a borrowed forward
    "delegating_04": ("04_refinenet_fusion", {
        "residual_conv_unit": ("import dptlearn.fusion\n"
                               "def residual_conv_unit(x, w1, b1, w2, b2):\n"
                               "    unit = dptlearn.fusion.ResidualConvUnit(x.shape[1])\n"
                               "    return unit(x)",),
        "ResidualConvUnit": ("import dptlearn.fusion\n"
                             "class ResidualConvUnit(dptlearn.fusion.ResidualConvUnit):\n    pass",),
        "FusionBlock": ("APPEND\nimport dptlearn.fusion\n"
                        "FusionBlock.forward = dptlearn.fusion.FusionBlock.forward",)},
        {"residual_conv_unit": (0, ["reference"]), "ResidualConvUnit": (0, ["reference"]),
         "FusionBlock": (0, ["reference"])}),
}
CHECK_FORGERY = """
import sys, types
from dptlearn import checks as _real
for _name in ("patch_grid", "tokens_to_grid", "grid_to_tokens"):
    setattr(_real, _name, lambda *a, **k: print("✓ passed"))
sys.modules["dptlearn.checks"] = sys.modules["dptlearn.course.checks"] = types.SimpleNamespace(
    **{n: (lambda *a, **k: print("✓ passed")) for n in ("patch_grid", "tokens_to_grid", "grid_to_tokens")})
checks = types.SimpleNamespace(patch_grid=print, tokens_to_grid=print, grid_to_tokens=print)
"""


def reference_source(spec: str) -> str:
    import ast

    _, rel, name = spec.split()
    tree = ast.parse((ROOT / rel).read_text())
    node = next(n for n in tree.body if getattr(n, "name", None) == name)
    return ast.get_source_segment((ROOT / rel).read_text(), node)


def course_notebook(assignment: str, answers: dict) -> dict:
    nb = json.loads((REPO_SOLUTIONS / f"{assignment}.ipynb").read_text())
    for ex_id, (source,) in answers.items():
        cell = next(c for c in nb["cells"] if f"ex:{ex_id}" in c["metadata"].get("tags", [])
                    and "solution" in c["metadata"]["tags"])
        if source.startswith("APPEND"):
            source = "".join(cell["source"]) + source[len("APPEND"):]
        elif source.startswith("COPY"):
            source = reference_source(source)
        cell["source"] = [source]
    return nb


@pytest.fixture(scope="module")
def course_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("course")
    subs = root / "class"
    honest = subs / "honest"
    honest.mkdir(parents=True)
    for nb in sorted(REPO_SOLUTIONS.glob("*.ipynb")):
        (honest / nb.name).write_bytes(nb.read_bytes())
    paths = {}
    for name, (assignment, answers, _) in COURSE_CASES.items():
        path = subs / name / f"{assignment}.ipynb"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(course_notebook(assignment, answers)))
        paths[name] = path
    stub = json.loads((ROOT / "exercises" / "02_rearrange.ipynb").read_text())
    setup = next(i for i, c in enumerate(stub["cells"]) if c["cell_type"] == "code")
    stub["cells"].insert(setup + 1, crafted.code_cell(CHECK_FORGERY))
    paths["forged_checks_02"] = subs / "forged_checks_02" / "02_rearrange.ipynb"
    paths["forged_checks_02"].parent.mkdir()
    paths["forged_checks_02"].write_text(json.dumps(stub))
    before = sha256_tree(guarded(subs))
    opts = Settings(REPO_SOLUTIONS, root / "report", jobs=2, inputs=[str(subs)])
    results = grade.grade([str(p) for p in sorted(subs.rglob("*.ipynb"))], opts,
                          progress=lambda _: None)
    return {"paths": paths, "honest": honest, "before": before, "after": sha256_tree(guarded(subs)),
            "results": {r.submission: r for r in results}}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(COURSE_CASES))
def test_reference_use_scores_zero_on_the_course(course_run, case):
    assignment, _, expected = COURSE_CASES[case]
    r = course_run["results"][str(course_run["paths"][case])]
    solution = next(a for a in grade.read_assignments(REPO_SOLUTIONS) if a.name == assignment)
    for ex in solution.exercises:
        e = next(e for e in r.exercises if e.id == ex.id)
        want_points, want_flags = expected.get(ex.id, (ex.points, []))
        assert (e.points, e.flags) == (want_points, want_flags), (ex.id, e.message)
        if "reference" in want_flags:
            assert "the reference for this exercise: write your own" in e.message, e.message
        if "identical" in want_flags:
            assert "identical to dptlearn.grid.grid_to_tokens" in e.message, e.message


@pytest.mark.slow
def test_forged_checks_on_the_course_score_zero(course_run):
    r = course_run["results"][str(course_run["paths"]["forged_checks_02"])]
    assert r.score == 0 and r.max_score == 5
    assert all("NotImplementedError" in e.message for e in r.exercises), r.exercises


@pytest.mark.slow
def test_honest_course_student_keeps_full_marks(course_run):
    honest = [r for p, r in course_run["results"].items() if Path(p).parent == course_run["honest"]]
    assert len(honest) == len(list(REPO_SOLUTIONS.glob("*.ipynb")))
    for r in honest:
        assert (r.score, r.error) == (r.max_score, None), (r.submission, r.exercises)
        assert all(e.flags == [] for e in r.exercises), r.exercises
    assert course_run["after"] == course_run["before"]
