"""Written answers: collected by the grader, scored by the teacher, merged back in.

A written question is an exercise whose answer cell is Markdown, tagged ``ex:<id>``,
``written`` and ``points:<n>`` (docs/authoring.md); nothing runs for it. For each submission the
grader keeps the student's answer (the text of that cell in the submission, as safe text) in an
``ExerciseResult`` of kind ``written``, with 0 points and ``unscored`` set, and writes every
answer of the class into ``written-answers.csv`` (one row per answer: who, which question, the
points it may get, an empty ``points`` and ``comment`` for the teacher, the answer). The teacher
fills in ``points`` and runs ``dptlearn-grade merge REPORT --manual written-answers.csv
--report-dir OUT``: ``apply_scores`` puts each row's points into its result, so ``summary.csv``,
the gradebook and the feedback show them. A row left empty stays *not scored yet*: listed in
``summary.md`` and the feedback, shown as an empty cell in ``summary.csv``, never a silent 0.
A row scores only the answer the sheet was made from: its ``answer_sha256`` (or, in a sheet
without that column, its ``answer``) must match the report's answer, else (a regrade since) the
row is not applied, said so, and the answer stays not scored yet.
"""
from __future__ import annotations

import csv
import hashlib
import io
from pathlib import Path

from . import safetext
from .report import (ExerciseResult, Result, _Writer, csv_cell, ordered,  # noqa: F401
                     unscored_warnings)
from .sandboxed.cells import cell_exercise, cell_tags, source_of

SHEET = "written-answers.csv"
COLUMNS = ["report", "student", "student_id", "assignment", "question", "max_points", "points",
           "comment", "answer", "answer_sha256"]
ANSWER_CHARS = 20_000
NOT_SCORED = "not scored yet: your teacher scores written answers by hand"


def written_results(a, cells: list[dict]) -> list[ExerciseResult]:
    """The written questions of assignment ``a`` answered in ``cells`` (the submission's, as
    staged): one unscored result each, holding the answer."""
    out = []
    for ex in a.written:
        mine = [source_of(c) for c in cells if c.get("cell_type") == "markdown"
                and cell_exercise(c) == ex.id and "written" in cell_tags(c)]
        answer = safetext.text("\n\n".join(m.strip() for m in mine))[:ANSWER_CHARS]
        released = _released_text(a, ex)
        message = NOT_SCORED
        if not mine:
            message = "no answer: the notebook has no cell tagged for this written question"
        elif not answer.strip() or answer.strip() == released:
            message = f"{NOT_SCORED} (the answer cell is as handed out)"
        out.append(ExerciseResult(ex.id, 0, ex.points, False, message, [], code=answer,
                                  kind="written", unscored=True))
    return out


def _released_text(a, ex) -> str:
    from ..exercises import drop_md_regions
    return drop_md_regions(source_of(a.nb["cells"][ex.written_index])).strip()


def sheet_csv(results: list[Result]) -> str:
    """``written-answers.csv``: every written answer of the class, for the teacher to score."""
    buf = io.StringIO()
    w = _Writer(buf)
    w.writerow(COLUMNS)
    for r in ordered(results):
        for e in r.exercises:
            if e.kind == "written":
                w.writerow([r.name, r.student or "", r.student_id or "", r.assignment or "",
                            e.id, e.max_points, "" if e.unscored else e.points,
                            _comment_of(e), e.code, answer_hash(e.code)])
    return buf.getvalue()


def answer_hash(answer: str) -> str:
    """``sha256:`` and 16 hex digits of the answer with its whitespace folded (the prefix keeps
    a spreadsheet from reading it as a number)."""
    return "sha256:" + hashlib.sha256(" ".join(answer.split()).encode()).hexdigest()[:16]


def _same_answer(row: dict, answer: str) -> bool:
    """Whether the sheet's row was made from ``answer`` (its hash, else its answer text as the
    sheet wrote it, a spreadsheet's dropped leading ``'`` allowed)."""
    if (row.get("answer_sha256") or "").strip():
        return row["answer_sha256"].strip() == answer_hash(answer)
    if "answer" not in row:
        return True                                 # a hand-made sheet: report and question only
    fold = lambda t: " ".join((t or "").split()).lstrip("'")    # noqa: E731
    return fold(row["answer"]) == fold(csv_cell(answer))


def _comment_of(e: ExerciseResult) -> str:
    prefix = f"scored by your teacher: {e.points}/{e.max_points}"
    return e.message[len(prefix) + 3:] if e.message.startswith(prefix + " — ") else ""


def write_sheet(report_dir: Path, results: list[Result]) -> None:
    (report_dir / SHEET).write_text(sheet_csv(results), encoding="utf-8")


class ManualScoresError(ValueError):
    """The teacher's sheet cannot be used (the message names the row and why)."""


def read_scores(path: Path) -> dict[tuple[str, str], tuple[int | None, str, dict]]:
    """(report, question) -> (points or None when left empty, comment, the row) from the
    teacher's sheet."""
    try:
        rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig"))))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ManualScoresError(f"--manual {path}: cannot be read ({exc})") from None
    if rows and not {"report", "question", "points"} <= set(rows[0]):
        raise ManualScoresError(f"--manual {path}: expected the columns report, question and "
                                f"points (as in {SHEET}), got {sorted(k for k in rows[0] if k)}")
    scores = {}
    for n, row in enumerate(rows, 2):
        key = ((row.get("report") or "").strip(), (row.get("question") or "").strip())
        text = (row.get("points") or "").strip()
        if key in scores:
            raise ManualScoresError(f"--manual {path}, line {n}: {key[1]} of {key[0]} is scored "
                                    f"twice")
        if text and not text.isdigit():
            raise ManualScoresError(f"--manual {path}, line {n}: points must be a whole number "
                                    f"of points or empty, got {safetext.line(text, 40)!r}")
        scores[key] = (int(text) if text else None, (row.get("comment") or "").strip(), row)
    return scores


def apply_scores(entries: list[tuple], path: Path, say) -> list[tuple]:
    """``entries`` (as ``reportdir.merge`` keeps them) with the teacher's points put in."""
    scores = read_scores(Path(path))
    known = {(r.name, e.id): e for r, *_ in entries for e in r.exercises if e.kind == "written"}
    unknown = sorted(set(scores) - set(known))
    if unknown:
        raise ManualScoresError(f"--manual {path}: no written answer {unknown[0][1]!r} in report "
                             f"{unknown[0][0]!r} ({len(unknown)} such row(s)); use the rows of "
                             f"the report's {SHEET}")
    out, scored, stale = [], 0, 0
    for r, folder, stem, rewrite in entries:
        changed = False
        for e in r.exercises:
            points, comment, row = scores.get((r.name, e.id), (None, "", {}))
            if e.kind != "written" or points is None:
                continue
            if not _same_answer(row, e.code):
                stale += 1
                say(safetext.line(
                    f"--manual {path}: NOT applied: the {points}/{e.max_points} for {e.id} of "
                    f"{r.name} ({r.student or '?'}) was given to another answer than the one in "
                    f"the report now (re-graded since the sheet was made?); it stays not scored "
                    f"yet: score it again from the report's {SHEET}", 600))
                continue
            if points > e.max_points:
                raise ManualScoresError(f"--manual {path}: {e.id} of {r.name} gets {points} points, "
                                     f"more than its {e.max_points}")
            e.points, e.passed, e.unscored = points, points == e.max_points, False
            e.message = safetext.line(f"scored by your teacher: {points}/{e.max_points}"
                                      + (f" — {comment}" if comment else ""), 2000)
            changed, scored = True, scored + 1
        if changed:                 # max_score counts a written answer once it is scored
            r.max_score = sum(e.max_points for e in r.exercises if not e.unscored)
        out.append((r, folder, stem, rewrite or changed))
    left = sum(1 for r, *_ in out for e in r.exercises if e.unscored)
    say(f"--manual {path}: {scored} written answer(s) scored"
        + (f", {left} not scored yet (listed in summary.md)" if left else "")
        + (f", {stale} row(s) NOT applied: their answer changed" if stale else ""))
    return out
