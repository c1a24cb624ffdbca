"""Scoring: one exercise's ``Verdict``, built in steps, and the score of one staged notebook.

An exercise earns its points iff the judge passes its recorded answer (``judge.py``), or the
share of them a judge with partial credit gives (``partial``: an authored exercise whose spec
says so, ``authored.py``). The steps
after that only add to the message and the flags, never points:

1. the verdict on the answer, or why there is none (``answer_verdict``: no answer recorded, an
   unreadable or forged results file, a check cell that failed; the sandbox's JUnit report only
   explains a missing answer);
2. an earlier failure in the exercise's cells, when the answer failed (``after_earlier_failure``);
3. a tampered check cell (``check_cell_tampered``: flag ``forgery``);
4. a copy of the reference (``identical_to``: flag ``identical``);

and ``exercise_result`` turns it into the report's ``ExerciseResult``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..exercises import Exercise
from .feedback import exercise_code
from .written import written_results
from . import safetext
from .offered import MARKER as NOT_OFFERED
from .report import ExerciseResult
from .sandboxed.cells import clean_message
from .untrusted import UnreadableResults, load_results

NO_ANSWER = "no answer was recorded"
# ipykernel compiles each cell as a file of its own (/tmp/ipykernel_<pid>/<hash>.py): a message
# that names it says "(296811889.py, line 1)", which the student cannot find
CELL_FILE = re.compile(r"(\()?(?:[^\s(),]*ipykernel_\d+/)?\d{6,}\.py(?:, line |:)(\d+)(?(1)\))")


@dataclass
class Verdict:
    """One exercise's outcome: passed or not, why (one message) and the report's flags."""

    passed: bool
    message: str
    flags: set[str] = field(default_factory=set)
    partial: int = 0            # points of a failed answer (partial credit), else 0

    def after_earlier_failure(self, earlier: str | None) -> None:
        """A failed answer also names the exercise's first failing cell before its check cell
        (unless the message already says it)."""
        if not self.passed and earlier is not None and earlier not in self.message:
            self.message = (f"{clean_message(self.message, 240)} (earlier in this exercise: "
                            f"{clean_message(earlier, 120)})")

    def check_cell_tampered(self, what: str) -> None:
        self.flags.add("forgery")
        self.message = (f"{clean_message(self.message, 280)} [{what}: the grader ran its own "
                        f"check]")

    def identical_to(self, reference: str) -> None:
        self.flags.add("identical")
        self.message = (f"{clean_message(self.message, 300)} [identical to {reference} after "
                        f"normalisation]")

    def exercise_result(self, ex: Exercise) -> ExerciseResult:
        """The report's entry; the message is ``safetext.line`` (it quotes the submission). An
        answer that needed a package the grader does not offer gets the flag ``reference``."""
        message = safetext.line(self.message, 400)
        if not self.passed and NOT_OFFERED in message:
            self.flags.add("reference")
        points = ex.points if self.passed else min(max(int(self.partial), 0), ex.points - 1)
        return ExerciseResult(ex.id, points, ex.points, self.passed,
                              message, sorted(self.flags))


def report_message(report: dict) -> str:
    """What a cell's report (``untrusted.cell_report``) says went wrong, or its outcome; the
    kernel's file name of a cell is said as the student sees it (that cell, its line)."""
    text = report.get("message") or report.get("failure") or report["outcome"]
    cell = {"solution": "your code cell", "check": "the check cell"}.get(report.get("role"),
                                                                        "that cell")
    def said(m: re.Match) -> str:
        where = f"{cell} of this exercise, line {m.group(2)}"
        return f"({where})" if m.group(1) else where
    return CELL_FILE.sub(said, text)


def answer_verdict(judge, ex_id: str, results: Path, check_cell: dict | None,
                   why: str | None) -> Verdict:
    """The verdict on the answer recorded in ``results/<ex_id>.pt`` (``judge``: a ``Judge``).

    ``check_cell``: the report of the exercise's check cell, or None when it has none (the run
    ended before it); ``why``: why the run left no report, if it did not.
    """
    ran = None if check_cell is None else check_cell["outcome"] == "passed"
    try:
        payload = load_results(results / f"{ex_id}.pt")
    except UnreadableResults as exc:
        if str(exc) != NO_ANSWER:
            return Verdict(False, str(exc), {"forgery"})
        if ran is False:
            return Verdict(False, f"the check cell did not run: {report_message(check_cell)}")
        if ran:
            return Verdict(False, "no answer was recorded although the check cell ran (was "
                                  "dptlearn.course.probe replaced?)", {"forgery"})
        return Verdict(False, why or "the check cell did not run")
    if ran is False:                # the probe never finished, yet an answer is there
        return Verdict(False, f"an answer was recorded outside the check cell, which failed "
                              f"({report_message(check_cell)}): written outside probe.record?",
                       {"forgery"})
    return judge.verdict(ex_id, payload)


def earlier_failure(reports: list[dict], check_cell: dict | None) -> str | None:
    """The message of the first failing cell of an exercise before its check cell, or None."""
    if check_cell is None:
        return None
    before = reports[:reports.index(check_cell)]
    return next((report_message(r) for r in before if r["outcome"] in ("failure", "error")), None)


def score(staged, judge, results: Path, reports: list[dict], why: str | None) -> None:
    """Fill in ``staged.result`` (``staged``: a ``staging.StagedNotebook``): judge each
    exercise's recorded answer in ``results``; ``reports`` are the notebook's cell reports
    (``untrusted.cell_report``), which only explain a missing answer."""
    out = []
    for ex in staged.assignment.exercises:
        if ex.id in judge.broken:   # a check the grader could not set up: nothing else counts
            out.append(judge.verdict(ex.id, None).exercise_result(ex))
            continue
        mine = [r for r in reports if r.get("exercise") == ex.id]
        check_cell = next((r for r in mine if r.get("role") == "check"), None)
        verdict = answer_verdict(judge, ex.id, results, check_cell, why)
        verdict.after_earlier_failure(earlier_failure(mine, check_cell))
        if ex.id in staged.tampered:
            verdict.check_cell_tampered(staged.tampered[ex.id])
        if ex.id in staged.identical:
            verdict.identical_to(staged.identical[ex.id])
        out.append(verdict.exercise_result(ex))
        if not verdict.passed:              # the feedback shows the student their own code
            out[-1].code = exercise_code(staged.nb["cells"], ex.id)
    out += written_results(staged.assignment, staged.nb["cells"])     # scored by the teacher
    staged.result.exercises = out
    staged.result.max_score = sum(e.max_points for e in out if not e.unscored)   # decided so far
    if why:
        staged.result.error = why
