"""Scoring without a sandbox: the ``Verdict`` steps and the score of a staged notebook, on
hand-made cell reports, results files and a stand-in judge (dptlearn.course.grading.scoring)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dptlearn.course.exercises import Assignment, Exercise
from dptlearn.course.grading.report import ExerciseResult, Result
from dptlearn.course.grading.scoring import Verdict, answer_verdict, earlier_failure, score
from dptlearn.course.grading.staging import StagedNotebook


class StandInJudge:
    """Passes every answer it is given, and remembers what it was given."""

    def __init__(self, broken: dict[str, str] | None = None):
        self.broken = broken or {}
        self.seen: list[tuple[str, object]] = []

    def verdict(self, ex_id, payload):
        self.seen.append((ex_id, payload))
        if ex_id in self.broken:
            return Verdict(False, self.broken[ex_id], {"grader-error"})
        return Verdict(True, "passed (3 cases)")


def report(exercise: str, role: str, outcome: str = "passed", message: str = "") -> dict:
    """A cell's report as ``untrusted.cell_report`` gives it."""
    return {"exercise": exercise, "role": role, "outcome": outcome, "failure": message,
            "time": 0.5, **({"message": message} if message else {})}


def recorded(folder: Path, ex_id: str, payload) -> None:
    folder.mkdir(exist_ok=True)
    torch.save(payload, folder / f"{ex_id}.pt")


# ----------------------------------------------------------------------------- the steps

def test_a_failed_verdict_names_the_first_earlier_failure_once():
    v = Verdict(False, "check_add: add(1, 2) returned 4, expected 3")
    v.after_earlier_failure("NameError: name 'np' is not defined")
    assert v.message == ("check_add: add(1, 2) returned 4, expected 3 (earlier in this exercise: "
                         "NameError: name 'np' is not defined)")
    again = Verdict(False, "NameError: name 'np' is not defined")
    again.after_earlier_failure("NameError: name 'np' is not defined")
    assert again.message == "NameError: name 'np' is not defined"


def test_a_passed_verdict_keeps_its_message_whatever_failed_before():
    v = Verdict(True, "passed")
    v.after_earlier_failure("ValueError: a demo cell")
    v.after_earlier_failure(None)
    assert (v.passed, v.message, v.flags) == (True, "passed", set())


def test_flags_add_to_the_message_but_never_take_points_away_or_give_them():
    v = Verdict(True, "passed")
    v.check_cell_tampered("the check cell was edited")
    v.identical_to("dptlearn.grid.tokens_to_grid")
    result = v.exercise_result(Exercise("grid", points=2))
    assert result == ExerciseResult(
        "grid", 2, 2, True, "passed [the check cell was edited: the grader ran its own check] "
        "[identical to dptlearn.grid.tokens_to_grid after normalisation]", ["forgery", "identical"])
    failed = Verdict(False, "wrong", {"reference"})
    failed.check_cell_tampered("the check cell was deleted")
    assert failed.exercise_result(Exercise("grid", points=2)).points == 0
    assert failed.exercise_result(Exercise("grid", points=2)).flags == ["forgery", "reference"]


def test_the_report_message_is_one_line_of_at_most_400_characters():
    v = Verdict(False, "\x1b[31mAssertionError\x1b[0m:\n" + "x " * 500)
    message = v.exercise_result(Exercise("add", points=1)).message
    assert len(message) == 400 and message.endswith("…")
    assert "\n" not in message and "\x1b" not in message
    assert message.startswith("AssertionError: x x")


def test_the_earlier_failure_is_the_first_before_the_check_cell():
    reports = [report("add", "cell"), report("add", "solution", "failure", "TypeError: first"),
               report("add", "cell", "error", "KeyError: second"), report("add", "check"),
               report("add", "cell", "failure", "ValueError: after the check")]
    assert earlier_failure(reports, reports[3]) == "TypeError: first"
    assert earlier_failure(reports[3:], reports[3]) is None
    assert earlier_failure(reports, None) is None


# ----------------------------------------------------------------------------- the answer

def test_an_answer_that_is_there_goes_to_the_judge(tmp_path):
    judge = StandInJudge()
    payload = {"check": "check_add", "results": [{"value": 3}]}
    recorded(tmp_path, "add", payload)
    v = answer_verdict(judge, "add", tmp_path, report("add", "check"), None)
    assert (v.passed, v.message) == (True, "passed (3 cases)")
    assert judge.seen == [("add", payload)]


@pytest.mark.parametrize("check_cell, why, message, flags", [
    (report("add", "check", "failure", "Timeout: the cell ran longer than 5 s"), None,
     "the check cell did not run: Timeout: the cell ran longer than 5 s", set()),
    (report("add", "check"), None,
     "no answer was recorded although the check cell ran (was dptlearn.course.probe replaced?)",
     {"forgery"}),
    (None, "not graded: the notebook ran past the grader's limit of 8 s",
     "not graded: the notebook ran past the grader's limit of 8 s", set()),
    (None, None, "the check cell did not run", set()),
])
def test_a_missing_answer_says_why_from_the_cell_reports(tmp_path, check_cell, why, message, flags):
    judge = StandInJudge()
    v = answer_verdict(judge, "add", tmp_path, check_cell, why)
    assert (v.passed, v.message, v.flags) == (False, message, flags)
    assert judge.seen == []


def test_an_answer_next_to_a_failed_check_cell_is_a_forgery(tmp_path):
    judge = StandInJudge()
    recorded(tmp_path, "add", {"check": "check_add", "results": []})
    v = answer_verdict(judge, "add", tmp_path, report("add", "check", "failure", "KeyError: x"), None)
    assert (v.passed, v.flags) == (False, {"forgery"})
    assert v.message == ("an answer was recorded outside the check cell, which failed (KeyError: "
                         "x): written outside probe.record?")
    assert judge.seen == []


def test_an_unreadable_answer_is_a_forgery_never_judged(tmp_path):
    judge = StandInJudge()
    (tmp_path / "add.pt").write_bytes(b"PK\x03\x04 not a zip")
    v = answer_verdict(judge, "add", tmp_path, report("add", "check"), None)
    assert (v.passed, v.flags) == (False, {"forgery"})
    assert v.message.startswith("the recorded answer is not readable data")
    assert judge.seen == []


# ----------------------------------------------------------------------------- one notebook

def staged_notebook(**notes) -> StagedNotebook:
    a = Assignment("01_fixture", Path("01_fixture.ipynb"), {"cells": []},
                   [Exercise("add", points=1), Exercise("grid", points=2)])
    return StagedNotebook(Result("ann/01_fixture.ipynb", "ann__01_fixture"), a, {"cells": []}, 60.0,
                          **notes)          # a staged notebook always has cells (scoring reads them)


def test_a_notebook_scores_each_exercise_from_its_own_answer(tmp_path):
    recorded(tmp_path, "grid", {"check": "check_grid", "results": []})
    reports = [report("add", "solution", "failure", "SyntaxError: invalid syntax"),
               report("add", "check"), report("grid", "check")]
    s = staged_notebook(tampered={"grid": "the check cell was edited"})
    score(s, StandInJudge(), tmp_path, reports, None)
    assert [(e.id, e.points, e.max_points, e.flags) for e in s.result.exercises] == [
        ("add", 0, 1, ["forgery"]), ("grid", 2, 2, ["forgery"])]
    assert s.result.exercises[0].message == (
        "no answer was recorded although the check cell ran (was dptlearn.course.probe "
        "replaced?) (earlier in this exercise: SyntaxError: invalid syntax)")
    assert s.result.exercises[1].message == ("passed (3 cases) [the check cell was edited: the "
                                             "grader ran its own check]")
    assert s.result.error is None


def test_a_check_the_grader_could_not_prepare_says_only_that(tmp_path):
    """Its exercise scores 0 with the flag grader-error, whatever the notebook did."""
    recorded(tmp_path, "add", {"check": "check_add", "results": []})
    s = staged_notebook(tampered={"add": "the check cell was deleted"},
                        identical={"add": "dptlearn.grid.patch_grid"})
    why = "not graded: pytest reported nothing for this notebook"
    score(s, StandInJudge(broken={"add": "not graded: tell your teacher"}), tmp_path, [], why)
    first = s.result.exercises[0]
    assert (first.points, first.message, first.flags) == (0, "not graded: tell your teacher",
                                                          ["grader-error"])
    assert s.result.exercises[1].message == why and s.result.error == why
