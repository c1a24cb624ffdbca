"""Reports out: per-submission JSON and JUnit files, the class summary (CSV, Markdown) and the
gradebook (CSV that Canvas and Moodle import).

Everything the class-level files say is computed from the per-submission ``Result``s alone and
in a canonical order, so merging shard report folders gives byte-identical summaries.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import safetext
from .capstone import capstone_notes

GRADEBOOK_ID_COLUMNS = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]
GRADEBOOK_TOTAL = "dptlearn total"
FLAG_WORDS = {"reference": "reference use", "forgery": "forgery attempt",   # summary.md's words
              "identical": "identical to the reference", "grader-error": "grader error"}


@dataclass
class ExerciseResult:
    id: str
    points: int
    max_points: int
    passed: bool
    message: str
    flags: list[str] = field(default_factory=list)   # "reference", "forgery", "identical"
    code: str = ""                      # the student's code of a failed exercise (feedback.py)
    kind: str = "check"                 # "check", or "written": scored by the teacher (written.py)
    unscored: bool = False              # a written answer the teacher has not scored yet


@dataclass
class Result:
    """Everything the reports say about one submission."""

    submission: str                     # the path as given on the command line
    name: str                           # unique report file stem
    assignment: str | None = None
    score: int = 0
    max_score: int = 0
    exercises: list[ExerciseResult] = field(default_factory=list)
    error: str | None = None
    duration_s: float = 0.0
    student: str | None = None          # folder name, or the LMS download name's student
    student_id: str | None = None       # the LMS's user id, where the file name carries it
    student_from: str | None = None     # "folder", "canvas" or "moodle"
    student_folder: str | None = None   # the folder the student comes from, as given
    notes: list[str] = field(default_factory=list)   # metadata vs file name, late, ...
    refused: bool = False               # not read (not a regular file) or a grader error on it
    source: str = ""                    # the path to open (``submission`` is as shown); not saved

    @property
    def path(self) -> str:
        return self.source or self.submission

    def to_json(self) -> dict:
        """As saved: every string ``safetext.data`` (a strict JSON reader loads it), no ``source``."""
        d = asdict(self)
        del d["source"]
        return safetext.tree(d)

    @classmethod
    def from_json(cls, d: dict) -> Result:
        """The inverse of ``to_json`` (unknown keys are ignored)."""
        known = {f.name for f in dataclasses.fields(ExerciseResult)}
        exercises = [ExerciseResult(**{k: v for k, v in e.items() if k in known})
                     for e in d.get("exercises", [])]
        fields = {f.name for f in dataclasses.fields(cls)} - {"exercises"}
        r = cls(exercises=exercises, **{k: v for k, v in d.items() if k in fields})
        r.duration_s = safetext.seconds(r.duration_s)       # null, "inf", -1: unknown, 0.0
        return r

    @property
    def student_key(self) -> str:
        """What groups one student's submissions: sandboxes, shards, gradebook rows.

        Canvas's user id when the download name carries one, else the student's name; and
        the folder the student comes from: two folders never share a student.
        """
        who = f"id:{self.student_id}" if self.student_id else f"name:{self.student or ''}"
        return f"{who}@{self.student_folder}" if self.student_folder else who


# ----------------------------------------------------------------------------- per submission

def write_junit(path: Path, name: str, cases: list[ET.Element]) -> None:
    """One submission's testcases (cut from its batch's report) as a JUnit XML file."""
    count = {k: sum(1 for tc in cases if tc.find(k) is not None)
             for k in ("failure", "error", "skipped")}
    suite = ET.Element("testsuite", name=safetext.xml_text(name), tests=str(len(cases)),
                       failures=str(count["failure"]), errors=str(count["error"]),
                       skipped=str(count["skipped"]),
                       time=f"{sum(safetext.seconds(tc.get('time')) for tc in cases):.3f}")
    suite.extend(cases)
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)


def write_error_junit(path: Path, name: str, message: str) -> None:
    """The JUnit file of a submission that could not be run."""
    message = safetext.xml_text(message)
    case = ET.Element("testcase", classname=safetext.xml_text(name), name="submission")
    ET.SubElement(case, "error", message=message).text = message
    write_junit(path, name, [case])


def write_partial_junit(path: Path, result: Result) -> None:
    """One testcase per exercise, for a run that left no pytest report (ElementTree, every text
    ``safetext.xml_text``: well-formed XML 1.0 whatever the messages hold)."""
    x = safetext.xml_text
    cases = []
    for ex in result.exercises:
        case = ET.Element("testcase", classname=x(result.name), name=x(f"exercise {ex.id}"))
        props = ET.SubElement(case, "properties")
        for k, v in (("exercise", ex.id), ("role", "check"), ("points", ex.max_points)):
            ET.SubElement(props, "property", name=k, value=x(v))
        if not ex.passed:
            ET.SubElement(case, "failure", message=x(ex.message)).text = x(ex.message)
        cases.append(case)
    write_junit(path, result.name, cases)


def write_result(report_dir: Path, result: Result) -> None:
    """``<name>.json``; also the JUnit file when no run produced one."""
    result.score = sum(e.points for e in result.exercises)
    result.duration_s = round(safetext.seconds(result.duration_s), 2)   # as in the JSON (merges add up alike)
    junit = report_dir / f"{result.name}.junit.xml"
    if not junit.exists():
        write_error_junit(junit, result.name, result.error or "not graded")
    (report_dir / f"{result.name}.json").write_text(
        safetext.json_dumps(result.to_json(), indent=1) + "\n", encoding="utf-8")


# ----------------------------------------------------------------------------- the class

def ordered(results: list[Result]) -> list[Result]:
    """The canonical order of every class-level file: by student, assignment, submission."""
    return sorted(results, key=lambda r: ((r.student or "").casefold(), r.student_key,
                                          r.assignment or "", r.submission, r.name))


def exercise_columns(results: list[Result]) -> list[str]:
    """Every exercise id met: assignments by name, each one's exercises in notebook order."""
    cols: list[str] = []
    for r in sorted(results, key=lambda r: r.assignment or ""):
        cols += [e.id for e in r.exercises if e.id not in cols]
    return cols


FORMULA_STARTS = ("=", "+", "-", "@", "\t")
LINE_BREAKS = str.maketrans({"\r": "\\r", "\n": "\\n"})


def csv_cell(value):
    """A CSV cell a spreadsheet shows as text: ``safetext.text``, line breaks as ``\\r``/``\\n``,
    and ``'`` before a leading = + - @ or tab (numbers are kept as they are)."""
    if not isinstance(value, str):
        return value
    value = safetext.text(value).translate(LINE_BREAKS)
    return "'" + value if value.startswith(FORMULA_STARTS) else value


class _Writer:
    """``csv.writer`` whose rows go through ``csv_cell`` (names and messages are untrusted)."""

    def __init__(self, buf: io.StringIO):
        self._w = csv.writer(buf, lineterminator="\n")

    def writerow(self, row: list) -> None:
        self._w.writerow([csv_cell(v) for v in row])


def summary_csv(results: list[Result]) -> str:
    cols = exercise_columns(results)
    buf = io.StringIO()
    w = _Writer(buf)
    w.writerow(["submission", "report", "student", "student_id", "assignment", "score",
                "max_score", "error", "notes"]
               + [f"{c}{suffix}" for c in cols
                  for suffix in (":points", ":max", ":message", ":flags")])
    for r in ordered(results):
        by_id = {e.id: e for e in r.exercises}
        row = [r.submission, r.name, r.student or "", r.student_id or "", r.assignment or "",
               r.score, r.max_score, r.error or "", "; ".join(r.notes)]
        for c in cols:
            e = by_id.get(c)
            row += ([("" if e.unscored else e.points), e.max_points, e.message, "; ".join(e.flags)]
                    if e else [""] * 4)
        w.writerow(row)
    return buf.getvalue()


def _md(text: str, table: bool = True) -> str:
    """Untrusted text (names, paths, messages) as an inert Markdown code span (``safetext.md_code``)."""
    return safetext.md_code(text, table=table)


def _flags(e: ExerciseResult) -> str:
    return ", ".join(FLAG_WORDS.get(f) or _md(f) for f in e.flags)


def _md_cell(e: ExerciseResult, message: bool = False) -> str:
    """A table cell: points and flags; the message goes below the table (``_md_messages``)."""
    mark = (f"… {NOT_SCORED_YET} ({e.max_points} points)" if e.unscored
            else f"{'✓' if e.passed else '✗'} {e.points}/{e.max_points}")
    if message:
        mark += f": {_md(e.message, False)}"
    return mark + (f" ⚑ {_flags(e)}" if e.flags else "")


def _md_messages(mine: list[Result]) -> list[str]:
    """Below an assignment's table: per submission, the message of each exercise that lost
    points (a run-level error is shown once, in the table's score)."""
    lines = []
    for r in mine:
        lost = [e for e in r.exercises if not e.passed and not r.error]
        if lost:
            lines.append(f"- {_md(r.student or '', False)}, {_md(r.submission, False)}:")
            lines += [f"  - {_md(e.id, False)} {_md_cell(e, message=True)}" for e in lost]
    return ["### Messages", "", *lines, ""] if lines else []


def summary_md(results: list[Result]) -> str:
    """One short table per assignment (student × exercise: points and flags), the messages below
    it per submission, then what needs the teacher's eye."""
    results = ordered(results)
    lines = ["# Grading summary", ""]
    for name in sorted({r.assignment for r in results if r.assignment}):
        mine = [r for r in results if r.assignment == name]
        cols = exercise_columns(mine)
        lines += [f"## {name}", "",
                  "| student | submission | assignment | score | "
                  + " | ".join(f"`{c}`" for c in cols) + " |",
                  "|---|---|---|---|" + "---|" * len(cols)]
        for r in mine:
            by_id = {e.id: e for e in r.exercises}
            cells = [_md_cell(by_id[c]) if c in by_id else "" for c in cols]
            score = (f"**{r.score}/{r.max_score}**{pending_text(pending_points([r]))}"
                     + (f" ({_md(r.error)})" if r.error else ""))
            lines.append(f"| {_md(r.student or '')} | {_md(r.submission)} | {_md(name)} | {score} | "
                         + " | ".join(cells) + " |")
        lines.append("")
        lines += _md_messages(mine)
    ungraded = [r for r in results if not r.assignment]
    if ungraded:
        lines += ["## Not graded", ""]
        lines += [f"- {_md(r.student or '', False)}: {_md(r.submission, False)}: "
                  f"{_md(r.error or '', False)}" for r in ungraded]
        lines.append("")
    look = [f"- {_md(r.submission, False)}: ⚑ refused: {_md(r.error or '', False)}"
            for r in results if r.refused]
    look += [f"- {_md(r.submission, False)}: {_md(note, False)}" for r in results for note in r.notes]
    look += [f"- {_md(r.submission, False)}, {_md(e.id, False)}: ⚑ {_flags(e)} "
             f"({_md(e.message, False)})" for r in results for e in r.exercises if e.flags]
    look += [f"- {_md(text, False)}" for text in duplicate_warnings(results)]
    look += [f"- {_md(text, False)}" for text in unscored_warnings(results)]    # written, not scored
    look += [f"- {_md(r.submission, False)}: {_md(note, False)}"
             for r, note in capstone_notes(results)]              # a capstone's 0 and its cause
    if look:
        lines += ["## Needs a look", ""] + look + [""]
    seconds = sum(r.duration_s for r in results)
    lines.append(f"{len(results)} submission(s) of {len({r.student_key for r in results})} "
                 f"student(s); {seconds:.1f} s of notebook run time.")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- gradebook

def _best_by_assignment(results: list[Result]) -> dict[str, Result]:
    best: dict[str, Result] = {}
    for r in results:
        if r.assignment and (r.assignment not in best or r.score > best[r.assignment].score):
            best[r.assignment] = r
    return best


def duplicate_warnings(results: list[Result]) -> list[str]:
    """A student with several submissions of one assignment: the gradebook counts the best."""
    out = []
    for key, mine in _by_student(results).items():
        for a in sorted({r.assignment for r in mine if r.assignment}):
            same = [r for r in mine if r.assignment == a]
            if len(same) > 1:
                out.append(f"student {mine[0].student!r} handed in {a} {len(same)} times "
                           f"({', '.join(r.submission for r in same)}); the gradebook counts "
                           f"the best score, {_best_by_assignment(same)[a].score}")
    return out


NOT_SCORED_YET = "not scored yet"


def pending_points(results: list[Result]) -> int:
    """The points of the written answers not scored yet (left out of ``max_score``)."""
    return sum(e.max_points for r in results for e in r.exercises if e.unscored)


def pending_text(points: int) -> str:
    return f" (+{points} to score)" if points else ""


def unscored_warnings(results: list[Result]) -> list[str]:
    """One line per written answer nobody has scored yet (written.py): never a silent 0."""
    return [f"{r.student or r.submission}: written answer {e.id} of {r.assignment} is not scored "
            f"yet ({e.max_points} point(s); fill in written-answers.csv and merge --manual)"
            for r in ordered(results) for e in r.exercises if e.unscored]


def _by_student(results: list[Result]) -> dict[str, list[Result]]:
    groups: dict[str, list[Result]] = {}
    for r in ordered(results):
        groups.setdefault(r.student_key, []).append(r)
    return groups


def gradebook_csv(results: list[Result]) -> str:
    """One row per student: identity columns, points per assignment, total.

    The identity columns are those of a Canvas gradebook export (Canvas matches rows on
    ``ID``, its user id, which Canvas's download names carry); ``SIS Login ID`` holds the
    student's folder name, for Moodle's "Map from" (username or email). An assignment the
    student did not hand in is left empty.
    """
    assignments = sorted({r.assignment for r in results if r.assignment})
    buf = io.StringIO()
    w = _Writer(buf)
    w.writerow(GRADEBOOK_ID_COLUMNS + assignments + [GRADEBOOK_TOTAL])
    for mine in _by_student(results).values():
        first = mine[0]
        best = _best_by_assignment(mine)
        login = (first.student or "") if first.student_from == "folder" else ""
        w.writerow([first.student or "", first.student_id or "", "", login, ""]
                   + [best[a].score if a in best else "" for a in assignments]
                   + [sum(r.score for r in best.values())])
    return buf.getvalue()


def write_summaries(report_dir: Path, results: list[Result]) -> None:
    """summary.csv, summary.md and gradebook.csv of ``results`` (the rest of the class files:
    ``classfiles.write_class_files``)."""
    for name, text in (("summary.csv", summary_csv(results)), ("summary.md", summary_md(results)),
                       ("gradebook.csv", gradebook_csv(results))):
        (report_dir / name).write_text(text, encoding="utf-8")
