"""Exercises a teacher writes in the notebook alone (dptlearn/course/grading/authored.py).

A scratch course of one notebook with two such exercises, written as docs/authoring.md shows:
the solution cell is the reference, a ``spec`` cell gives the inputs (a generator drawing from the
run's secret seed, or a fixed list) and the comparison (a tolerance, or an assert-style
``compare``), the check cell calls ``checks.authored(<answer>)``. The generator strips the spec
and the solution; the real ``dptlearn-grade`` (in the sandbox) grades right, wrong and forged
answers with exact scores and messages.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import torch

from dptlearn.course import exercises
from dptlearn.course.grading import grade, sandbox
from dptlearn.course.grading.authored import check_of, differs
from dptlearn.course.grading.checkcells import parse_check_cell
from dptlearn.course.grading.judge import Judge
from dptlearn.course.grading.secret import Seeds
from dptlearn.course.grading.sandboxed.cells import source_of

from grading import crafted

NB = "01_authored"


def code(src: str, tags: list[str]) -> dict:
    return {"cell_type": "code", "metadata": {"tags": tags}, "source": src.splitlines(keepends=True),
            "outputs": [], "execution_count": None}


def md(src: str, tags: list[str] | None = None) -> dict:
    return {"cell_type": "markdown", "metadata": {"tags": tags} if tags else {},
            "source": src.splitlines(keepends=True)}


def card(ex: str, title: str, points: int, partial: str = "") -> dict:
    return md(f"### Exercise `{ex}`: {title}\n\n**Difficulty:** ★☆☆ · **Time:** ~5 min · "
              f"**Points:** {points}{partial}\n\n<details><summary>Hint 1</summary>\n\nRe-read the "
              f"lecture.\n</details>\n", [f"ex:{ex}", "exercise", "lecture:01_intro"])


WMEAN = ('def weighted_mean(x, w):\n    """The mean of x over its last axis, weighted by w > 0."""\n'
         "    ### BEGIN SOLUTION\n    return (x * w).sum(-1) / w.sum()\n    ### END SOLUTION\n")
WMEAN_SPEC = ("def inputs(g):\n"
              '    """Three cases per run, drawn from the secret seed: x (4, n), weights w (n,) > 0."""\n'
              "    return [(torch.randn(4, n, generator=g), torch.rand(n, generator=g) + 0.1)\n"
              "            for n in (3, 5, 8)]\n\n"
              "rtol, atol = 1e-5, 1e-6    # float32 sums of <= 8 products, summed in another order\n")
UNIT = ('def unit(v):\n    """v scaled to length 1; ValueError for the zero vector."""\n'
        "    ### BEGIN SOLUTION\n    n = v.norm()\n    if n == 0:\n"
        '        raise ValueError("the zero vector has no direction")\n    return v / n\n'
        "    ### END SOLUTION\n")
UNIT_SPEC = ("inputs = [torch.tensor([3.0, 4.0]), torch.tensor([0.0, -2.0, 0.0]), torch.zeros(3)]\n\n"
             "def compare(got, want, v):\n"
             '    assert isinstance(got, torch.Tensor), f"return a tensor, got {type(got).__name__}"\n'
             '    assert got.shape == v.shape, f"keep the shape {tuple(v.shape)}, got {tuple(got.shape)}"\n'
             "    length = float(got.norm())\n"
             '    assert abs(length - 1) < 1e-6, f"your vector has length {length:.3g}, not 1"\n'
             '    assert torch.allclose(got, want, atol=1e-6), "right length, wrong direction"\n')


PARTIAL = " · **Partial credit:** 1 point per case"


def solution_nb(partial: bool = False) -> dict:
    """The scratch course; ``partial``: unit is worth 3 points, 1 per case (item 5)."""
    pts = 3 if partial else 1
    cells = [md("# Two exercises written in the notebook alone"),
             code("import torch\nfrom dptlearn import checks", []),
             card("wmean", "a weighted mean", 2),
             code(WMEAN, ["ex:wmean", "solution"]),
             code(WMEAN_SPEC, ["ex:wmean", "spec"]),
             code("checks.authored(weighted_mean)", ["ex:wmean", "check", "points:2"]),
             card("unit", "a unit vector", pts, PARTIAL if partial else ""),
             code(UNIT, ["ex:unit", "solution"]),
             code(UNIT_SPEC + ("\npartial = True     # 1 point per case\n" if partial else ""),
                  ["ex:unit", "spec"]),
             code("checks.authored(unit)", ["ex:unit", "check", f"points:{pts}"])]
    return {"cells": cells, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                        "language": "python"}},
            "nbformat": 4, "nbformat_minor": 5}


@pytest.fixture
def course(tmp_path) -> Path:
    sol = tmp_path / "solutions"
    sol.mkdir()
    (sol / f"{NB}.ipynb").write_text(json.dumps(solution_nb()))
    return sol


def checks_of(course: Path) -> dict:
    (a,) = exercises.read_assignments(course)
    return {ex.id: check_of(a, ex.id, parse_check_cell(source_of(a.check_cell(ex.id))))
            for ex in a.exercises}


# ----------------------------------------------------------------------------- the generator

def test_the_generator_strips_the_spec_and_the_reference(course, tmp_path):
    (a,) = exercises.read_assignments(course)
    assert [(ex.id, ex.points, ex.spec_index) for ex in a.exercises] == [("wmean", 2, 4), ("unit", 1, 8)]
    exercises.generate(course, tmp_path / "out", crafted.LECTURES)
    text = (tmp_path / "out" / f"{NB}.ipynb").read_text()
    cells = json.loads(text)["cells"]
    assert len(cells) == 8                                      # the two spec cells are gone
    for secret in ("def inputs", "generator=g", "def compare", "rtol", "torch.zeros(3)",
                   "/ w.sum()", "v / n"):
        assert secret not in text, secret
    assert [source_of(c) for c in cells if "check" in c["metadata"].get("tags", [])] == [
        "checks.authored(weighted_mean)", "checks.authored(unit)"]


@pytest.mark.parametrize("change, problem", [
    (lambda cells: cells.pop(4), "has both a cell tagged 'spec' and a check cell calling "
                                 "checks.authored"),
    (lambda cells: cells.__setitem__(5, code("checks.hook_indices(weighted_mean)",
                                             ["ex:wmean", "check", "points:2"])),
     "has both a cell tagged 'spec' and a check cell calling checks.authored"),
    (lambda cells: cells.__setitem__(4, md("inputs = []", ["ex:wmean", "spec"])),
     "a 'spec' cell must be a code cell"),
    (lambda cells: cells.insert(5, code("inputs = [1]", ["ex:wmean", "spec"])),
     "exercise 'wmean' has a second 'spec' cell"),
    (lambda cells: cells.__setitem__(4, code("def inputs(g)\n", ["ex:wmean", "spec"])),
     "the spec cell is not Python: line 1"),
])
def test_a_malformed_authored_exercise_is_a_clear_error(course, change, problem):
    nb = solution_nb()
    change(nb["cells"])
    (course / f"{NB}.ipynb").write_text(json.dumps(nb))
    with pytest.raises(exercises.SourceError, match=problem):
        exercises.read_assignments(course)


# ----------------------------------------------------------------------------- the trusted side

def test_the_plan_holds_secret_inputs_and_never_the_reference(course):
    wmean = checks_of(course)["wmean"]
    one, again, other = wmean.case(1), wmean.case(1), wmean.case(2)
    assert [s["op"] for s in one.plan] == ["call"] * 3
    assert [tuple(a.shape for a in s["args"]) for s in one.plan] == [((4, n), (n,)) for n in (3, 5, 8)]
    assert all(torch.equal(a, b) for s, t in zip(one.plan, again.plan) for a, b in zip(s["args"], t["args"]))
    assert not torch.equal(one.plan[0]["args"][0], other.plan[0]["args"][0])     # another seed
    for step, want in zip(one.plan, one.data["want"]):                 # the teacher's answers, by hand
        x, w = step["args"]
        assert torch.allclose(want["value"], (x * w).sum(-1) / w.sum())
        assert set(step) == {"op", "fn", "args", "kwargs", "what"}     # inputs only, no answer
    assert wmean.judge(one, one.data["want"]).startswith("3 case(s) agree with the reference")


def test_the_judge_compares_outside_with_the_teachers_test(course):
    unit = checks_of(course)["unit"]
    case = unit.case(0)
    assert [r.get("raised") for r in case.data["want"]] == [None, None, "ValueError"]
    assert torch.equal(case.data["want"][0]["value"], torch.tensor([0.6, 0.8]))
    mine = [{"value": torch.tensor([0.6, 0.8]), "calls": []}, {"value": torch.tensor([0.0, -1.0, 0.0]), "calls": []},
            {"value": torch.full((3,), float("nan")), "calls": []}]
    with pytest.raises(AssertionError, match=r"^unit: your answer on case 3 of 3 should raise ValueError, but "
                                             r"it returned Tensor$"):
        unit.judge(case, mine)
    mine[2] = {"raised": "ValueError", "message": "zero", "calls": []}
    assert unit.judge(case, mine) == "3 case(s) agree with your teacher's test"
    mine[1] = {"value": torch.tensor([0.0, 1.0, 0.0]), "calls": []}
    with pytest.raises(AssertionError, match=r"^unit: your answer on case 2 of 3: right length, wrong direction$"):
        unit.judge(case, mine)
    mine[1] = {"value": torch.tensor([0.0, -1.0, 0.0]), "calls": [], "mutated": [0]}
    with pytest.raises(AssertionError, match=r"^unit: your answer on case 2 of 3 changed its argument\(s\) \[0\] "
                                             r"in place: return a new value and leave the inputs as they are$"):
        unit.judge(case, mine)


def test_a_spec_that_does_not_work_costs_the_exercise_with_a_message_for_the_teacher(course, tmp_path):
    nb = solution_nb()
    nb["cells"][7] = code("def unit(v):\n    ### BEGIN SOLUTION\n    return torch.nn.Identity()\n"
                          "    ### END SOLUTION\n", ["ex:unit", "solution"])
    nb["cells"][4] = code("def inputs(g):\n    return [(torch.randn(2, generator=g),)] * 'x'\n",
                          ["ex:wmean", "spec"])
    (course / f"{NB}.ipynb").write_text(json.dumps(nb))
    judge = Judge(exercises.read_assignments(course), tmp_path / "cases", Seeds(None))
    assert judge.broken == {
        "wmean": "not graded: the grader could not prepare the check of this exercise (RuntimeError: the "
                 "spec's inputs(g) raised TypeError: can't multiply sequence by non-int of type 'str'); tell "
                 "your teacher",
        "unit": "not graded: the grader could not prepare the check of this exercise (TypeError: the "
                "reference's answer on case 1 holds a Identity, which is not data: an answer is compared as "
                "tensors, numbers, strings, None, lists, tuples and dicts); tell your teacher"}


def test_an_answer_without_inputs_is_a_value_and_a_broken_spec_is_the_teachers_error(course):
    nb = solution_nb()
    nb["cells"][3] = code("def weighted_mean(x, w):\n    ### BEGIN SOLUTION\n    return 7\n"
                          "    ### END SOLUTION\n\nANSWER = {'rows': 4, 'sizes': (3, 5.0)}\n",
                          ["ex:wmean", "solution"])
    nb["cells"][4] = code("rtol = 0.1", ["ex:wmean", "spec"])
    nb["cells"][5] = code("checks.authored(ANSWER)", ["ex:wmean", "check", "points:2"])
    nb["cells"][8] = code("def inputs(g):\n    return [(torch.nn.Linear(2, 2),)]\n", ["ex:unit", "spec"])
    (course / f"{NB}.ipynb").write_text(json.dumps(nb))
    value, unit = checks_of(course).values()
    case = value.case(0)
    assert case.plan == [{"op": "value", "what": "your answer"}]
    assert value.judge(case, [{"value": {"rows": 4, "sizes": [3, 5.4]}}]) == (
        "your answer agrees with the reference, within the tolerance")          # 5.4 is within rtol 0.1
    with pytest.raises(AssertionError, match=r"^ANSWER: your answer: your output\['sizes'\]\[1\] is not "
                                             r"the reference's value \(within atol 0 \+ rtol 0.1"):
        value.judge(case, [{"value": {"rows": 4, "sizes": [3, 5.6]}}])
    with pytest.raises(TypeError, match="the spec's input case 1 holds a Linear"):
        unit.case(0)
    nb["cells"][8] = code("inputs = [torch.zeros(2)]", ["ex:unit", "spec"])      # unit raises on it
    (course / f"{NB}.ipynb").write_text(json.dumps(nb))
    with pytest.raises(RuntimeError, match=r"^the reference raised ValueError: the zero vector has no "
                                           r"direction \(on every case\)$"):
        checks_of(course)["unit"].case(0)


def test_partial_credit_is_a_share_per_case_stated_on_the_card(course):
    (course / f"{NB}.ipynb").write_text(json.dumps(solution_nb(partial=True)))
    unit = checks_of(course)["unit"]
    case = unit.case(0)
    right = [{"value": torch.tensor([0.6, 0.8])}, {"value": torch.tensor([0.0, -1.0, 0.0])},
             {"raised": "ValueError", "message": "zero"}]
    assert unit.judge(case, right) == "3 case(s) agree with your teacher's test"
    with pytest.raises(AssertionError, match=r"^unit: 2 of 3 cases pass \(2 of 3 points\); the first that "
                                             r"fails: your answer on case 3 of 3 should raise ValueError, "
                                             r"but it returned Tensor$") as failed:
        unit.judge(case, right[:2] + [{"value": torch.zeros(3)}])
    assert failed.value.points == 2
    for card_says, spec_says, problem in (
            ("", True, "its spec says partial = True but the intro cell lacks '\\*\\*Partial credit:"),
            (PARTIAL, False, "the intro cell says '\\*\\*Partial credit:\\*\\*' but only a spec")):
        nb = solution_nb(partial=True)
        nb["cells"][6] = card("unit", "a unit vector", 3, card_says)
        nb["cells"][8] = code(UNIT_SPEC + ("partial = True\n" if spec_says else ""), ["ex:unit", "spec"])
        (course / f"{NB}.ipynb").write_text(json.dumps(nb))
        with pytest.raises(exercises.SourceError, match=problem):
            exercises.read_assignments(course)
    nb = solution_nb(partial=True)          # 3 cases cannot share 2 points equally
    nb["cells"][6] = card("unit", "a unit vector", 2, PARTIAL)
    nb["cells"][9] = code("checks.authored(unit)", ["ex:unit", "check", "points:2"])
    (course / f"{NB}.ipynb").write_text(json.dumps(nb))
    with pytest.raises(ValueError, match="the exercise's 2 point\\(s\\) must be a multiple of its 3 case"):
        checks_of(course)["unit"].case(0)


def test_differs_names_what_differs_without_the_reference_values():
    want = torch.tensor([1.0, 2.0, 3.0])
    assert differs(want.clone(), want) is None
    assert differs(want + 1e-7, want) is None               # within float32's default rtol 1.3e-6
    assert differs(torch.tensor([1.0, 2.5, 3.5]), want) == (
        "your output has the right shape (3,) but 2 of 3 values differ from the reference "
        "(atol 1e-05 + rtol 1.3e-06 × |reference|), the first at index (1,)")
    assert differs(want.double(), want) == "your output should have dtype torch.float32, got torch.float64"
    assert differs(want[:2], want) == "your output should have shape (3,), got (2,)"
    assert differs([want, 4], (want, 5)) == "your output[1] is not the reference's value"
    assert differs({"a": 1}, {"a": 1, "b": 2}) == "your output has the wrong keys; missing ['b']"
    assert differs(0.1 + 0.2, 0.3) is None and differs(0.31, 0.3) is not None
    assert differs({"type": "Linear"}, want) == "your output should be a torch.Tensor, got Linear"


# ----------------------------------------------------------------------------- the real grader

PROBLEM = sandbox.bwrap_problem()

WRONG_WMEAN = "def weighted_mean(x, w):\n    return (x * w).sum(-1) / x.shape[-1]\n"    # count, not weight
WRONG_UNIT = "def unit(v):\n    return v / v.abs().sum()\n"                            # the L1 length
NO_ERROR_UNIT = "def unit(v):\n    return v / v.norm()\n"                              # no ValueError
OTHER_WMEAN = ("def weighted_mean(x, w):\n"
               "    return torch.einsum('...n,n->...', x, w) / w.sum()\n")


def handout(course: Path, tmp_path: Path, answers: dict[str, str]) -> dict:
    exercises.generate(course, tmp_path / "released", crafted.LECTURES)
    nb = json.loads((tmp_path / "released" / f"{NB}.ipynb").read_text())
    for c in nb["cells"]:
        tags = c["metadata"].get("tags", [])
        for ex, src in answers.items():
            if f"ex:{ex}" in tags and "solution" in tags:
                c["source"] = src.splitlines(keepends=True)
    return nb


def forged(course: Path, tmp_path: Path) -> dict:
    """Wrong answers, plus every way round the check a notebook has: a results file written by
    hand, its own compare and tolerance, torch's comparisons patched, the teacher's notebook read
    from disk (its absolute path), the plan read early, probe.record replaced."""
    nb = handout(course, tmp_path, {"wmean": (
        "def weighted_mean(x, w):\n"
        "    if REFERENCE:                                # the teacher's solution, if it was readable\n"
        "        ns = {'torch': torch}\n"
        "        exec(REFERENCE, ns)\n"
        "        return ns['weighted_mean'](x, w)\n"
        "    return (x * w).sum(-1) / x.shape[-1]\n"), "unit": WRONG_UNIT})
    hack = (
        "import os, pathlib, torch\n"
        "root = pathlib.Path(os.environ['DPTLEARN_PROBE_DIR'])\n"
        "(root / 'results').mkdir(exist_ok=True)\n"
        "fake = [{'value': torch.zeros(4), 'calls': []}] * 3\n"
        "torch.save({'check': 'authored', 'results': fake}, root / 'results' / 'wmean.pt')\n"
        "PLAN = torch.load(root / 'cases' / 'wmean.pt', weights_only=True)   # the inputs, early\n"
        "def compare(got, want, *args):\n    pass\n"
        "rtol = atol = float('inf')\n"
        "torch.allclose = lambda *a, **k: True\n"
        "torch.isclose = lambda a, b, **k: torch.ones_like(a, dtype=torch.bool)\n"
        "REFERENCE = None\n"
        "try:\n"
        f"    cells = __import__('json').load(open({str(course / (NB + '.ipynb'))!r}))['cells']\n"
        "    REFERENCE = ''.join(cells[3]['source']).replace('### BEGIN SOLUTION', '')\n"
        "except OSError:\n    pass\n")
    nb["cells"].insert(2, code(hack, []))
    unit_check = next(i for i, c in enumerate(nb["cells"]) if "ex:unit" in c["metadata"].get("tags", [])
                      and "check" in c["metadata"]["tags"])
    nb["cells"].insert(unit_check, code("import dptlearn.course.probe as p\np.record = lambda *a, **k: None",
                                        ["ex:unit"]))
    return nb


def scores(report: Path) -> dict:
    """student -> (score, max_score, {exercise: (points, message, flags)}) from the JSON reports."""
    got = {}
    for path in report.glob("*.json"):
        if path.name != "dptlearn-report.json":
            r = json.loads(path.read_text())
            got[r["student"]] = (r["score"], r["max_score"], {e["id"]: (e["points"], e["message"], e["flags"])
                                                              for e in r["exercises"]})
    return got


@pytest.mark.slow
@pytest.mark.skipif(PROBLEM is not None, reason=f"no sandbox: {PROBLEM}")
def test_the_grader_grades_right_wrong_and_forged_answers(course, tmp_path, monkeypatch):
    monkeypatch.setenv("DPTLEARN_GRADING_SECRET", "a class secret of the test, 32 chars")
    (course / f"{NB}.ipynb").write_text(json.dumps(solution_nb(partial=True)))   # unit: 1 point per case
    notebooks = {"alice": solution_nb(partial=True),
                 "bob": handout(course, tmp_path, {"wmean": WRONG_WMEAN, "unit": WRONG_UNIT}),
                 "carol": handout(course, tmp_path, {"wmean": OTHER_WMEAN, "unit": NO_ERROR_UNIT}),
                 "mallory": forged(course, tmp_path)}
    subs = tmp_path / "subs"
    for who, nb in notebooks.items():
        (subs / who).mkdir(parents=True)
        (subs / who / f"{NB}.ipynb").write_text(json.dumps(nb))
    report = tmp_path / "report"
    assert grade.main([str(subs), "--solutions", str(course), "--timeout", "60", "--jobs", "2",
                       "--report-dir", str(report)]) == 0
    got = scores(report)
    assert set(got) == set(notebooks)
    wrong_wmean = ("weighted_mean: your answer on case 1 of 3: your output has the right shape (4,) but 4 of 4 "
                   "values differ from the reference (atol 1e-06 + rtol 1e-05 × |reference|), the first at "
                   "index (0,)")
    # bob's L1 scaling: [3, 4] / 7 has length 5/7; [0, -2, 0] / 2 is right; 0 / 0 raises nothing
    wrong_unit = ("unit: 1 of 3 cases pass (1 of 3 points); the first that fails: your answer on case 1 "
                  "of 3: your vector has length 0.714, not 1")
    assert got["alice"] == (5, 5, {
        "wmean": (2, "passed (3 case(s) agree with the reference, within the tolerance)", []),
        "unit": (3, "passed (3 case(s) agree with your teacher's test)", [])})
    assert got["bob"] == (1, 5, {"wmean": (0, wrong_wmean, []), "unit": (1, wrong_unit, [])})
    assert got["carol"] == (4, 5, {
        "wmean": (2, "passed (3 case(s) agree with the reference, within the tolerance)", []),
        "unit": (2, "unit: 2 of 3 cases pass (2 of 3 points); the first that fails: your answer on case 3 "
                    "of 3 should raise ValueError, but it returned Tensor", [])})
    assert got["mallory"] == (0, 5, {
        "wmean": (0, wrong_wmean, []),
        "unit": (0, "no answer was recorded although the check cell ran (was dptlearn.course.probe "
                    "replaced?)", ["forgery"])})
    summary = {r["student"]: r for r in csv.DictReader(io.StringIO((report / "summary.csv").read_text()))}
    assert [(summary[w]["unit:points"], summary[w]["score"]) for w in ("bob", "carol")] == [("1", "1"), ("2", "4")]
    assert "1 of 3 cases pass (1 of 3 points)" in (report / "feedback" / "bob.md").read_text()
    # The control: the same notebook without the sandbox reads the teacher's notebook from disk and
    # passes wmean, so its forgery cell ran to its end, and the sandbox is what kept the reference
    # out of its reach (grading-security.md: without bubblewrap there is no sandbox).
    alone = tmp_path / "alone" / "mallory"
    alone.mkdir(parents=True)
    (alone / f"{NB}.ipynb").write_text(json.dumps(notebooks["mallory"]))
    assert grade.main([str(alone.parent), "--solutions", str(course), "--timeout", "60", "--no-sandbox",
                       "--report-dir", str(tmp_path / "unsandboxed")]) == 0
    assert {k: v[0] for k, v in scores(tmp_path / "unsandboxed")["mallory"][2].items()} == {"wmean": 2, "unit": 0}
