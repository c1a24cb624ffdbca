"""Feedback for each student: ``feedback/<student>.html`` and ``.md`` in the report folder.

One file pair per student (grouped like the gradebook's rows, by ``Result.student_key``): per
assignment and exercise the points and the check's message, for a failed exercise the student's
own code of that exercise (``ExerciseResult.code``, kept in the per-submission JSON so that
``merge`` can write the same files), written answers with the teacher's points or *not scored
yet*, and the notes of the class run that concern this student (late, handed in twice, the
notebook's metadata against its file name, a refused file). Nothing of another student is in it.

Everything in a report came from a submission and is hostile text: it is made safe text with
``safetext`` and the HTML is rendered by Jinja2 with autoescape (``templates/feedback.html.j2``:
inline CSS, no scripts, no remote assets, a Content-Security-Policy that forbids them anyway);
the Markdown puts every name and message in a code span and code in a fence longer than any
backtick run in it. Computed from the ``Result``s alone, in a fixed order, so a merge writes
the same bytes as one run.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from . import safetext
from .capstone import capstone_notes
from .report import NOT_SCORED_YET, FLAG_WORDS, Result, ordered
from .sandboxed.cells import cell_exercise, cell_tags, source_of
from .submissions import safe_name

FOLDER = "feedback"
TEMPLATES = Path(__file__).parent / "templates"
CODE_CHARS = 20_000             # the student's code shown per exercise (cut beyond)


@dataclass
class ExerciseView:
    id: str
    points: int
    max_points: int
    passed: bool
    message: str
    flags: list[str]
    code: str = ""              # the student's code of a failed exercise
    kind: str = "check"         # "check" or "written"
    scored: bool = True         # False: a written answer the teacher has not scored yet

    @property
    def shown(self) -> str:     # as summary.md shows it
        return (f"{self.points}/{self.max_points}" if self.scored
                else f"{NOT_SCORED_YET} ({self.max_points} points)")

    @property
    def mark(self) -> str:
        return "…" if not self.scored else "✓" if self.passed else "✗"


@dataclass
class AssignmentView:
    name: str
    submission: str
    score: object
    max_score: int
    error: str
    exercises: list[ExerciseView] = field(default_factory=list)
    todo: str = ""              # a notebook that was not graded: what the student should do


@dataclass
class StudentView:
    student: str
    student_id: str
    total: int
    max_total: int
    assignments: list[AssignmentView]
    notes: list[str]
    unscored: int = 0           # written answers the teacher has not scored yet
    ungraded: int = 0           # notebooks handed in that were not graded (``todo``)


def feedback_names(results: list[Result]) -> dict[str, str]:
    """student_key -> the file stem of that student's feedback: their name made a safe file
    name; where two students would share one, each gets a hash of its key."""
    groups = _by_student(results)
    stems = {k: safe_name(mine[0].student or "unknown") for k, mine in groups.items()}
    taken: dict[str, int] = {}
    for s in stems.values():
        taken[s.casefold()] = taken.get(s.casefold(), 0) + 1
    return {k: s if taken[s.casefold()] == 1 else
            f"{s}-{hashlib.sha256(k.encode('utf-8', 'surrogatepass')).hexdigest()[:10]}"
            for k, s in stems.items()}


def _by_student(results: list[Result]) -> dict[str, list[Result]]:
    groups: dict[str, list[Result]] = {}
    for r in ordered(results):
        groups.setdefault(r.student_key, []).append(r)
    return groups


def _exercise(e) -> ExerciseView:
    kind = getattr(e, "kind", "check") or "check"
    scored = not (kind == "written" and getattr(e, "unscored", False))
    return ExerciseView(safetext.line(e.id, 100), e.points, e.max_points,
                        bool(e.passed), safetext.line(e.message, 2000),
                        [FLAG_WORDS.get(f, safetext.line(f, 40)) for f in e.flags],
                        safetext.text((getattr(e, "code", "") or "")[:CODE_CHARS]), kind, scored)


def _you(text: str) -> str:
    """A note of the class run, said to the student it concerns."""
    return text.replace("this student's ", "your ")


def _todo(r: Result, file: str) -> str:
    """What the student reads about a notebook that was not graded (no assignment)."""
    why = (r.error or "").removeprefix("not graded: ")
    if "no assignment matches" in why:
        return (f"You handed in {file}, but it matches none of the course's assignments, so it "
                f"was not graded and counts for nothing. Give it the file name of the assignment "
                f"it answers (as handed out, e.g. 03_reassemble.ipynb) and hand it in again.")
    return (f"You handed in {file}, but it was not graded ({why or 'see above'}), so it counts "
            f"for nothing. Hand it in again as the notebook file itself.")


def _duplicates(mine: list[Result]) -> list[str]:
    out = []
    for a in sorted({r.assignment for r in mine if r.assignment}):
        same = [r for r in mine if r.assignment == a]
        if len(same) > 1:
            files = ", ".join(Path(r.submission).name for r in same)
            out.append(f"You handed in {a} {len(same)} times ({files}); your grade counts the "
                       f"best score, {max(r.score for r in same)}.")
    return out


def student_view(mine: list[Result]) -> StudentView:
    """What one student's feedback says (``mine``: all of that student's results)."""
    first = mine[0]
    views, notes, best = [], [], {}
    for r in mine:
        exercises = [_exercise(e) for e in r.exercises]
        file = safetext.path_text(Path(r.submission).name)
        todo = "" if r.assignment else safetext.line(_todo(r, file), 1000)
        views.append(AssignmentView(safetext.line(r.assignment or f"{file}: not graded", 200),
                                    safetext.path_text(r.submission),
                                    r.score if r.assignment else "—", r.max_score,
                                    safetext.line(_you(r.error or ""), 2000), exercises, todo))
        notes += [f"{file}: {safetext.line(_you(n), 1000)}" for n in r.notes]
        if todo:
            notes.append(todo)
        if r.assignment and (r.assignment not in best or r.score > best[r.assignment].score):
            best[r.assignment] = r
    notes += [safetext.line(w, 1000) for w in _duplicates(mine)]
    notes += [safetext.line(_you(note), 1000) for _, note in capstone_notes(mine)]
    unscored = sum(1 for r in mine for e in r.exercises if getattr(e, "unscored", False))
    return StudentView(safetext.line(first.student or "unknown", 200),
                       safetext.line(first.student_id or "", 100),
                       sum(r.score for r in best.values()),
                       sum(r.max_score for r in best.values()), views, notes, unscored,
                       sum(1 for r in mine if not r.assignment))


def total_line(view: StudentView) -> str:
    """What follows the total: written answers not scored yet, notebooks not graded."""
    extra = ([f"{view.unscored} written answer(s) {NOT_SCORED_YET}"] if view.unscored else []) + (
        [f"{view.ungraded} notebook(s) you handed in were not graded: see below and hand them in "
         f"again"] if view.ungraded else [])
    return f" ({'; '.join(extra)})" if extra else ""


def render_html(view: StudentView) -> str:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True,
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return env.get_template("feedback.html.j2").render(s=view, total_line=total_line)


def _fence(code: str, lang: str = "python") -> str:
    longest = max((len(run) for run in re.findall(r"`{3,}", code)), default=2)
    fence = "`" * (longest + 1)
    return f"{fence}{lang}\n{code.rstrip()}\n{fence}"


def render_md(view: StudentView) -> str:
    c = safetext.md_code
    lines = [f"# Feedback for {c(view.student)}", "",
             f"**Total: {view.total}/{view.max_total}**{total_line(view)}", ""]
    for a in view.assignments:
        score = "not graded" if a.todo else f"{a.score}/{a.max_score}"
        lines += [f"## {c(a.name)}: {score}", "", f"Submission: {c(a.submission)}", ""]
        if a.todo:
            lines += [f"**{c(a.todo, limit=1000)}**", ""]
        if a.error:
            lines += [f"Not fully graded: {c(a.error, limit=2000)}", ""]
        for e in a.exercises:
            flags = f" ⚑ {', '.join(e.flags)}" if e.flags else ""
            lines += [f"- {e.mark} {c(e.id)} {e.shown}: {c(e.message, limit=2000)}{flags}"]
            if e.code:              # a written answer is text: a plain fence, not Python
                label = "Your answer" if e.kind == "written" else "Your code"
                fenced = _fence(e.code, "text" if e.kind == "written" else "python")
                lines += ["", f"  {label}:", "",
                          *("  " + ln if ln else "" for ln in fenced.splitlines()), ""]
        lines.append("")
    if view.notes:
        lines += ["## Notes", ""] + [f"- {c(n, limit=1000)}" for n in view.notes] + [""]
    return "\n".join(lines).rstrip() + "\n"


def write_feedback(report_dir: Path, results: list[Result]) -> list[str]:
    """``feedback/<student>.html`` and ``.md`` for every student of ``results``; their names."""
    folder = report_dir / FOLDER
    folder.mkdir(exist_ok=True)
    names = feedback_names(results)
    written = []
    for key, mine in _by_student(results).items():
        view = student_view(mine)
        for ext, text in ((".html", render_html(view)), (".md", render_md(view))):
            (folder / f"{names[key]}{ext}").write_text(text, encoding="utf-8")
            written.append(f"{names[key]}{ext}")
    return sorted(written)


def exercise_code(cells: list[dict], ex_id: str) -> str:
    """The student's code of exercise ``ex_id``: its code cells other than the check cell, as
    safe text, cut at ``CODE_CHARS`` (``cells``: the staged notebook's)."""
    parts = [source_of(c) for c in cells if c.get("cell_type") == "code"
             and cell_exercise(c) == ex_id and "check" not in cell_tags(c)]
    code = safetext.text("\n\n".join(p.strip("\n") for p in parts if p.strip()))
    return code if len(code) <= CODE_CHARS else code[:CODE_CHARS] + "\n… (cut)"
