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
from .report import FLAG_WORDS, Result, duplicate_warnings, ordered
from .sandboxed.cells import cell_exercise, cell_tags, source_of
from .submissions import safe_name

FOLDER = "feedback"
TEMPLATES = Path(__file__).parent / "templates"
CODE_CHARS = 20_000             # the student's code shown per exercise (cut beyond)


@dataclass
class ExerciseView:
    id: str
    points: object              # int, or "—" for a written answer not scored yet
    max_points: int
    passed: bool
    message: str
    flags: list[str]
    code: str = ""              # the student's code of a failed exercise
    kind: str = "check"         # "check" or "written"


@dataclass
class AssignmentView:
    name: str
    submission: str
    score: object
    max_score: int
    error: str
    exercises: list[ExerciseView] = field(default_factory=list)


@dataclass
class StudentView:
    student: str
    student_id: str
    total: int
    max_total: int
    assignments: list[AssignmentView]
    notes: list[str]
    unscored: int = 0           # written answers the teacher has not scored yet


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
    return ExerciseView(safetext.line(e.id, 100), e.points if scored else "—", e.max_points,
                        bool(e.passed), safetext.line(e.message, 2000),
                        [FLAG_WORDS.get(f, safetext.line(f, 40)) for f in e.flags],
                        safetext.text((getattr(e, "code", "") or "")[:CODE_CHARS]), kind)


def student_view(mine: list[Result]) -> StudentView:
    """What one student's feedback says (``mine``: all of that student's results)."""
    first = mine[0]
    views, notes, best = [], [], {}
    for r in mine:
        exercises = [_exercise(e) for e in r.exercises]
        views.append(AssignmentView(safetext.line(r.assignment or "not graded", 200),
                                    safetext.path_text(r.submission), r.score, r.max_score,
                                    safetext.line(r.error or "", 2000), exercises))
        notes += [f"{safetext.path_text(Path(r.submission).name)}: {safetext.line(n, 1000)}"
                  for n in r.notes]
        if r.assignment and (r.assignment not in best or r.score > best[r.assignment].score):
            best[r.assignment] = r
    notes += [safetext.line(w, 1000) for w in duplicate_warnings(mine)]
    notes += [safetext.line(note, 1000) for _, note in capstone_notes(mine)]
    unscored = sum(1 for r in mine for e in r.exercises if getattr(e, "unscored", False))
    return StudentView(safetext.line(first.student or "unknown", 200),
                       safetext.line(first.student_id or "", 100),
                       sum(r.score for r in best.values()),
                       sum(r.max_score for r in best.values()), views, notes, unscored)


def render_html(view: StudentView) -> str:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True,
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return env.get_template("feedback.html.j2").render(s=view)


def _fence(code: str) -> str:
    longest = max((len(run) for run in re.findall(r"`{3,}", code)), default=2)
    fence = "`" * (longest + 1)
    return f"{fence}python\n{code.rstrip()}\n{fence}"


def render_md(view: StudentView) -> str:
    c = safetext.md_code
    lines = [f"# Feedback for {c(view.student)}", "",
             f"**Total: {view.total}/{view.max_total}**"
             + (f" ({view.unscored} written answer(s) not scored yet)" if view.unscored else ""),
             ""]
    for a in view.assignments:
        lines += [f"## {c(a.name)}: {a.score}/{a.max_score}", "", f"Submission: {c(a.submission)}",
                  ""]
        if a.error:
            lines += [f"Not fully graded: {c(a.error, limit=2000)}", ""]
        for e in a.exercises:
            mark = "✓" if e.passed else "✗" if e.points != "—" else "…"
            flags = f" ⚑ {', '.join(e.flags)}" if e.flags else ""
            lines += [f"- {mark} {c(e.id)} {e.points}/{e.max_points}: "
                      f"{c(e.message, limit=2000)}{flags}"]
            if e.code:
                label = "Your answer" if e.kind == "written" else "Your code"
                lines += ["", f"  {label}:", "",
                          *("  " + ln if ln else "" for ln in _fence(e.code).splitlines()), ""]
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
