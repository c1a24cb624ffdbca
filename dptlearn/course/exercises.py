"""Generate the student notebooks in ``exercises/`` from the complete ones in ``solutions/``.

Usage::

    dptlearn-make-exercises [--solutions DIR] [--out DIR] [--lectures DIR] [--check] [--hints K]

``solutions/*.ipynb`` are the single source. Every solution region, delimited by lines
``### BEGIN SOLUTION`` / ``### END SOLUTION``, becomes a stub at the same indentation::

    # YOUR CODE HERE
    raise NotImplementedError("Exercise <id>: replace this stub with your code — see notebooks/<lecture>.ipynb")

Cells tagged ``solution-only`` or ``spec`` (an authored exercise's inputs and test) and
Markdown between ``<!-- BEGIN SOLUTION -->`` and ``<!-- END SOLUTION -->`` are dropped,
outputs and execution counts are cleared, and cell metadata is reduced to the tags (check
cells are also marked non-editable and non-deletable).
The output is deterministic: re-running gives byte-identical files. ``--check`` writes nothing
and exits 1 listing the files that differ from what would be generated (the drift test).

``--hints K --out DIR`` writes a *handout*: the same notebooks with at most ``K`` rungs of each
exercise's hint ladder (the nested ``<details><summary>Hint n`` blocks of its intro card; ``0``
drops the ladder and says so). Rungs 1-2 name the idea and the shapes; a rung beyond 2 is marked
*self-study* and may show code, so a graded handout uses ``K <= 2``. Without ``--hints`` every
rung is kept (the self-study notebooks of ``exercises/``, unchanged by this option).

The tag conventions are specified in docs/authoring.md; ``read_assignment`` validates them and
is shared with the grader. This module must not import the DPT head (it only reads JSON).
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .grading.checkcells import parse_check_cell
from .grading.sandboxed.cells import cell_tags as tags_of, fresh_cell, source_of

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
MD_BEGIN = "<!-- BEGIN SOLUTION -->"
MD_END = "<!-- END SOLUTION -->"
STUB = ('{indent}# YOUR CODE HERE\n'
        '{indent}raise NotImplementedError("Exercise {id}: replace this stub with your code'
        ' — see notebooks/{lecture}.ipynb")\n')
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
PARTIAL_MD = "**Partial credit:**"
POINTS_MD_RE = re.compile(r"\*\*Points:\*\*\s*(\d+)")
ROLE_TAGS = ("exercise", "solution", "check", "solution-only", "written", "spec")
AUTHORED = "authored"       # checks.authored(<answer>): judged against the solution itself (spec)
HINT_OPEN_RE = re.compile(r"<details><summary>Hint\b")
NO_HINTS = "*This handout has no hints for this exercise: the card and the lecture are what you get.*"


class SourceError(ValueError):
    """A solution notebook breaks the conventions; the message lists every problem found."""


@dataclass
class Exercise:
    """One exercise of an assignment, as declared by the tags of its cells."""

    id: str
    points: int = 0
    lecture: str | None = None
    check_name: str | None = None
    check_index: int | None = None           # index of the check cell in the notebook
    written_index: int | None = None         # a written answer: its Markdown answer cell
    spec_index: int | None = None            # an authored exercise: its spec cell
    partial: bool = False                    # its spec says partial = True: points per case
    cell_indexes: list[int] = field(default_factory=list)


@dataclass
class Assignment:
    """A validated solution notebook: its JSON and its exercises in notebook order."""

    name: str                                 # file stem, e.g. "03_reassemble"
    path: Path
    nb: dict
    exercises: list[Exercise]                 # checked by a Check
    written: list[Exercise] = field(default_factory=list)   # written answers, scored by hand

    @property
    def max_score(self) -> int:
        return sum(ex.points for ex in self.exercises) + sum(ex.points for ex in self.written)

    def check_cell(self, ex_id: str) -> dict:
        """The original check cell of exercise ``ex_id`` (a JSON dict)."""
        ex = next(e for e in self.exercises if e.id == ex_id)
        return self.nb["cells"][ex.check_index]


# ----------------------------------------------------------------------------- reading

def split_source(text: str) -> list[str]:
    """Source in nbformat's on-disk form: a list of lines, each keeping its newline."""
    return text.splitlines(keepends=True)


def load_notebook(path: Path) -> dict:
    """Read a notebook's JSON; raise SourceError naming the file if it is not a notebook."""
    try:
        nb = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SourceError(f"{path}: not a readable notebook: {exc}") from None
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise SourceError(f"{path}: not a notebook: expected a JSON object with a 'cells' list")
    return nb


def _where(path: Path, index: int, cell: dict | None = None) -> str:
    cid = f" (id {cell['id']})" if cell is not None and cell.get("id") else ""
    return f"{path}: cell {index}{cid}"


def _marker_problems(text: str, begin: str, end: str) -> list[str]:
    """Problems with the BEGIN/END markers of one cell's source (empty list when fine)."""
    problems, open_line = [], None
    for n, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped == begin:
            if open_line is not None:
                problems.append(f"line {n}: '{begin}' inside the region opened on line {open_line}")
            open_line = n
        elif stripped == end:
            if open_line is None:
                problems.append(f"line {n}: '{end}' without a matching '{begin}'")
            open_line = None
        elif "BEGIN SOLUTION" in stripped or "END SOLUTION" in stripped:
            problems.append(f"line {n}: malformed marker {stripped!r}: write exactly "
                            f"'{begin}' or '{end}' on a line of its own")
    if open_line is not None:
        problems.append(f"line {open_line}: '{begin}' is never closed by '{end}'")
    return problems


def read_assignment(path: Path, lectures_dir: Path | None = None) -> Assignment:
    """Load and validate one solution notebook; raise SourceError listing every problem."""
    path = Path(path)
    nb = load_notebook(path)
    default_lecture = ((nb.get("metadata") or {}).get("dptlearn") or {}).get("lecture")
    problems: list[str] = []
    exercises: dict[str, Exercise] = {}
    intro_count: dict[str, int] = {}
    solution_count: dict[str, int] = {}
    for i, cell in enumerate(nb["cells"]):
        problems += _cell_problems(path, i, cell, exercises, intro_count, solution_count)
    for ex in exercises.values():
        ex.lecture = ex.lecture or default_lecture
        problems += _exercise_problems(path, nb, ex, intro_count, solution_count, lectures_dir)
    if problems:
        raise SourceError("\n".join(problems))
    return Assignment(path.stem, path, nb,
                      [ex for ex in exercises.values() if ex.written_index is None],
                      [ex for ex in exercises.values() if ex.written_index is not None])


def _cell_problems(path, i, cell, exercises, intro_count, solution_count) -> list[str]:
    """Check one cell's tags and markers; register it with its exercise."""
    where = _where(path, i, cell)
    tags, text = tags_of(cell), source_of(cell)
    ctype = cell.get("cell_type")
    ex_tags = [t[3:] for t in tags if t.startswith("ex:")]
    roles = [t for t in tags if t in ROLE_TAGS]
    problems = []
    if ctype == "code":
        problems += [f"{where}: {p}" for p in _marker_problems(text, BEGIN, END)]
        if BEGIN in text and "solution" not in tags:
            problems.append(f"{where}: has '{BEGIN}' but no 'solution' tag")
    elif ctype == "markdown":
        problems += [f"{where}: {p}" for p in _marker_problems(text, MD_BEGIN, MD_END)]
    if not ex_tags:
        if roles:
            problems.append(f"{where}: tagged {roles} but has no 'ex:<id>' tag")
        return problems
    if len(set(ex_tags)) > 1:
        return problems + [f"{where}: more than one exercise tag: {ex_tags}"]
    ex_id = ex_tags[0]
    if not NAME_RE.match(ex_id):
        return problems + [f"{where}: exercise id {ex_id!r} may only use letters, digits, _ . -"]
    ex = exercises.setdefault(ex_id, Exercise(ex_id))
    ex.cell_indexes.append(i)
    for t in tags:
        if t.startswith("lecture:"):
            ex.lecture = t[len("lecture:"):]
    if "exercise" in tags:
        intro_count[ex_id] = intro_count.get(ex_id, 0) + 1
        if ctype != "markdown":
            problems.append(f"{where}: the 'exercise' intro cell must be Markdown, got {ctype}")
    if "solution" in tags:
        solution_count[ex_id] = solution_count.get(ex_id, 0) + 1
        if ctype != "code" or BEGIN not in text:
            problems.append(f"{where}: a 'solution' cell must be code with a '{BEGIN}' region")
    if "check" in tags:
        problems += _check_cell_problems(where, i, cell, ex, tags, text)
    if "written" in tags:
        problems += _written_cell_problems(where, i, cell, ex, tags)
    if "spec" in tags:
        problems += _spec_cell_problems(where, i, cell, ex, tags, text)
    return problems


def _spec_cell_problems(where, index, cell, ex, tags, text) -> list[str]:
    """An authored exercise's spec: one code cell of Python, no other role (docs/authoring.md)."""
    if cell.get("cell_type") != "code" or {"solution", "check", "written"} & set(tags):
        return [f"{where}: a 'spec' cell must be a code cell with no 'solution', 'check' or "
                f"'written' tag"]
    if ex.spec_index is not None:
        return [f"{where}: exercise {ex.id!r} has a second 'spec' cell (the first is cell "
                f"{ex.spec_index})"]
    ex.spec_index = index
    try:
        tree = ast.parse(text)
    except SyntaxError as exc:
        return [f"{where}: the spec cell is not Python: line {exc.lineno}: {exc.msg}"]
    ex.partial = any(isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant)
                     and n.value.value is True and any(isinstance(t, ast.Name) and t.id == "partial"
                                                       for t in n.targets) for n in tree.body)
    return []


def _points_tag(where, tags, ex, what) -> list[str]:
    pts = [t[len("points:"):] for t in tags if t.startswith("points:")]
    if not pts:
        return [f"{where}: {what} of exercise {ex.id!r} has no 'points:<n>' tag"]
    if len(pts) > 1 or not pts[0].isdigit() or int(pts[0]) <= 0:
        return [f"{where}: expected one tag 'points:<n>' with n a positive integer, "
                f"got {['points:' + p for p in pts]}"]
    ex.points = int(pts[0])
    return []


def _written_cell_problems(where, index, cell, ex, tags) -> list[str]:
    """A written answer's cell: Markdown, ``points:<n>``, one per exercise, no check cell."""
    if cell.get("cell_type") != "markdown":
        return [f"{where}: a 'written' answer cell must be Markdown"]
    if ex.written_index is not None or ex.check_index is not None or "check" in tags:
        return [f"{where}: exercise {ex.id!r} has a second answer or check cell (a written "
                f"answer has exactly one 'written' cell and no check cell)"]
    ex.written_index = index
    return _points_tag(where, tags, ex, "the written answer cell")


def _check_cell_problems(where, index, cell, ex, tags, text) -> list[str]:
    problems = []
    if cell.get("cell_type") != "code":
        return [f"{where}: a 'check' cell must be a code cell"]
    if ex.check_index is not None:
        problems.append(f"{where}: duplicate check cell for exercise {ex.id!r} "
                        f"(the first is cell {ex.check_index})")
    if ex.written_index is not None:
        problems.append(f"{where}: exercise {ex.id!r} is a written answer: it has no check cell")
    ex.check_index = index
    problems += _points_tag(where, tags, ex, "check cell")
    try:
        ex.check_name = parse_check_cell(text).check
    except ValueError:
        problems.append(f"{where}: a check cell must call dptlearn.checks.<name>(...), got "
                        f"{text.strip()[:80]!r}")
    return problems


def _exercise_problems(path, nb, ex, intro_count, solution_count, lectures_dir) -> list[str]:
    """Whole-exercise rules: one intro, a solution, one check after it, a lecture."""
    where = f"{path}: exercise {ex.id!r}"
    problems = []
    if intro_count.get(ex.id, 0) != 1:
        problems.append(f"{where}: expected exactly one Markdown cell tagged 'exercise', "
                        f"got {intro_count.get(ex.id, 0)}")
    else:
        problems += _intro_problems(where, nb, ex)
    if (ex.spec_index is not None) != (ex.check_name == AUTHORED):
        problems.append(f"{where}: an exercise checked against its solution has both a cell "
                        f"tagged 'spec' and a check cell calling checks.{AUTHORED}(<answer>)")
    if ex.written_index is not None:            # a written answer: no solution, no check
        return problems + _lecture_problems(where, ex, lectures_dir)
    if not solution_count.get(ex.id):
        problems.append(f"{where}: no cell tagged 'solution'")
    solutions = [i for i in ex.cell_indexes if "solution" in tags_of(nb["cells"][i])]
    if ex.check_index is None:
        problems.append(f"{where}: no cell tagged 'check'")
    elif any(i > ex.check_index for i in solutions):
        problems.append(f"{where}: the check cell (cell {ex.check_index}) must come after the "
                        f"exercise's solution cells")
    return problems + _lecture_problems(where, ex, lectures_dir)


def _lecture_problems(where, ex, lectures_dir) -> list[str]:
    problems = []
    if not ex.lecture:
        problems.append(f"{where}: no lecture to point to: tag a cell 'lecture:<notebook stem>' "
                        f"or set metadata.dptlearn.lecture")
    elif not NAME_RE.match(ex.lecture):
        problems.append(f"{where}: lecture name {ex.lecture!r} may only use letters, digits, _ . -")
    elif lectures_dir is not None and not (Path(lectures_dir) / f"{ex.lecture}.ipynb").exists():
        problems.append(f"{where}: points to lecture {ex.lecture!r}, but "
                        f"{Path(lectures_dir) / (ex.lecture + '.ipynb')} does not exist")
    return problems


def _intro_problems(where, nb, ex) -> list[str]:
    """The intro cell shows difficulty, time, the check cell's points and a hint ladder."""
    intro = next(nb["cells"][i] for i in ex.cell_indexes if "exercise" in tags_of(nb["cells"][i]))
    text = source_of(intro)
    problems = [f"{where}: the intro cell lacks '{label}'"
                for label in ("**Difficulty:**", "**Time:**", "<details>") if label not in text]
    m = POINTS_MD_RE.search(text)
    if m is None:
        problems.append(f"{where}: the intro cell lacks '**Points:** <n>'")
    elif ex.points and int(m.group(1)) != ex.points:
        problems.append(f"{where}: the intro cell says **Points:** {m.group(1)} but the check "
                        f"cell is tagged points:{ex.points}")
    if ex.partial != (PARTIAL_MD in text):      # partial credit is stated on the card, or none
        problems.append(f"{where}: its spec says partial = True but the intro cell lacks "
                        f"'{PARTIAL_MD}'" if ex.partial else f"{where}: the intro cell says "
                        f"'{PARTIAL_MD}' but only a spec with partial = True gives points per case")
    return problems


# ----------------------------------------------------------------------------- writing

def stub_regions(text: str, ex_id: str, lecture: str) -> str:
    """Replace each solution region of a (validated) code cell with an indented stub."""
    out, inside = [], False
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        if stripped == BEGIN:
            indent = line[: len(line) - len(line.lstrip())]
            out.append(STUB.format(indent=indent, id=ex_id, lecture=lecture))
            inside = True
        elif stripped == END:
            inside = False
        elif not inside:
            out.append(line)
    return "".join(out).rstrip("\n")


def drop_md_regions(text: str) -> str:
    """Remove Markdown solution regions (markers included)."""
    out, inside = [], False
    for line in text.splitlines(keepends=True):
        if line.strip() == MD_BEGIN:
            inside = True
        elif line.strip() == MD_END:
            inside = False
        elif not inside:
            out.append(line)
    return "".join(out).rstrip("\n")


def limit_hints(text: str, hints: int | None) -> str:
    """Keep the first ``hints`` rungs of the hint ladder in an intro card (``None``: all of them).

    The ladder is nested: rung ``n + 1`` opens inside rung ``n``, and the card ends with one
    ``</details>`` per rung. Cutting at the opening of rung ``hints + 1`` and closing the rungs
    kept leaves valid HTML; any text after the ladder's last ``</details>`` is kept.
    """
    opens = [m.start() for m in HINT_OPEN_RE.finditer(text)]
    if hints is None or hints >= len(opens):
        return text
    end = text.rfind("</details>")
    tail = text[end + len("</details>"):] if end >= 0 else ""
    if hints == 0:
        return text[: opens[0]].rstrip("\n") + "\n\n" + NO_HINTS + tail
    return text[: opens[hints]].rstrip("\n") + "\n\n" + "</details>\n" * (hints - 1) + "</details>" + tail


def _cell_id(assignment: str, index: int) -> str:
    return hashlib.sha1(f"{assignment}:{index}".encode()).hexdigest()[:8]


def make_exercise_notebook(a: Assignment, hints: int | None = None) -> dict:
    """The student version of assignment ``a`` (a new JSON dict; ``a.nb`` is untouched).

    ``hints``: keep at most that many rungs of each exercise's hint ladder (``None``: all).
    """
    lecture_of = {i: ex for ex in a.exercises for i in ex.cell_indexes}
    with_ids = (a.nb.get("nbformat", 4), a.nb.get("nbformat_minor", 0)) >= (4, 5)
    cells = []
    for i, cell in enumerate(a.nb["cells"]):
        tags = tags_of(cell)
        if "solution-only" in tags or "spec" in tags:     # a spec holds the secret inputs
            continue
        text = source_of(cell)
        if cell.get("cell_type") == "code" and "solution" in tags:
            ex = lecture_of[i]
            text = stub_regions(text, ex.id, ex.lecture)
        elif cell.get("cell_type") == "markdown":
            text = drop_md_regions(text)
            if "exercise" in tags:
                text = limit_hints(text, hints)
        new = fresh_cell(cell.get("cell_type", "code"), split_source(text), tags)
        if "check" in tags:
            new["metadata"].update({"deletable": False, "editable": False})
        elif "written" in tags:                 # the student writes the answer in this cell
            new["metadata"]["deletable"] = False
        if with_ids:
            new["id"] = cell.get("id") or _cell_id(a.name, i)
        cells.append(new)
    meta = {k: v for k, v in (a.nb.get("metadata") or {}).items()
            if k in ("kernelspec", "language_info", "dptlearn")}
    meta["dptlearn"] = {**(meta.get("dptlearn") or {}), "assignment": a.name}
    return {"cells": cells, "metadata": meta, "nbformat": a.nb.get("nbformat", 4),
            "nbformat_minor": a.nb.get("nbformat_minor", 5)}


def render(nb: dict) -> str:
    """Serialise like nbformat does (1-space indent, sorted keys, UTF-8, final newline)."""
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_assignments(solutions: Path, lectures: Path | None = None) -> list[Assignment]:
    """Validate every ``solutions/*.ipynb``; exercise ids must be unique across notebooks."""
    assignments, problems, seen = [], [], {}
    for path in sorted(Path(solutions).glob("*.ipynb")):
        try:
            a = read_assignment(path, lectures)
        except SourceError as exc:
            problems.append(str(exc))
            continue
        for ex in a.exercises:
            if ex.id in seen:
                problems.append(f"{path}: exercise id {ex.id!r} is already used in {seen[ex.id]}")
            seen.setdefault(ex.id, path)
        assignments.append(a)
    if problems:
        raise SourceError("\n".join(problems))
    return assignments


MANIFEST = ".generated.json"   # in the output folder: file name -> sha256 of the text last generated


class EditedExercise(RuntimeError):
    """``make exercises`` would overwrite a notebook that someone changed since it was generated."""


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_manifest(out: Path) -> dict[str, str]:
    try:
        data = json.loads((Path(out) / MANIFEST).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def edited_since_generated(out: Path, names: list[str]) -> list[Path]:
    """Files of ``out`` whose text is not what the generator wrote last time (per the manifest)."""
    manifest = read_manifest(out)
    edited = []
    for name in names:
        path = Path(out) / name
        if path.exists() and manifest.get(name) != _sha256(path.read_text(encoding="utf-8")):
            edited.append(path)
    return edited


def generate(solutions: Path, out: Path, lectures: Path | None = None,
             check: bool = False, force: bool = False, hints: int | None = None) -> list[Path]:
    """Write (or, with ``check``, compare) ``out/*.ipynb``; return the files that differed.

    Stale ``out/*.ipynb`` without a source in ``solutions`` are deleted (reported in check mode).
    A file that would change or go, but whose text differs from what this generator last wrote
    (``out/.generated.json``), was edited by hand: nothing is written and ``EditedExercise``
    names the files, unless ``force``. ``hints`` limits each hint ladder (``limit_hints``).
    """
    out = Path(out)
    wanted = {out / f"{a.name}.ipynb": render(make_exercise_notebook(a, hints))
              for a in read_assignments(solutions, lectures)}
    differing = [path for path, text in wanted.items()
                 if (path.read_text(encoding="utf-8") if path.exists() else None) != text]
    stale = [p for p in sorted(out.glob("*.ipynb")) if p not in wanted] if out.is_dir() else []
    if check:
        return differing + stale
    edited = edited_since_generated(out, [p.name for p in differing + stale])
    if edited and not force:
        raise EditedExercise(
            "these notebooks were changed since `make exercises` wrote them, and regenerating would "
            "overwrite or delete them:\n  " + "\n  ".join(str(p) for p in edited)
            + "\nIf this is your work, move it to my-work/ (your own folder: `make my-work`); to throw "
              "the changes away, run `dptlearn-make-exercises --force`.")
    for path in differing:
        write_atomic(path, wanted[path])
    for path in stale:
        path.unlink()
    write_atomic(out / MANIFEST, json.dumps({p.name: _sha256(t) for p, t in sorted(wanted.items())},
                                            indent=1, sort_keys=True) + "\n")
    return differing + stale


def repo_root() -> Path:
    """The checkout this package lives in (falls back to the working directory)."""
    here = Path(__file__).resolve().parents[2]
    return here if (here / "solutions").is_dir() else Path.cwd()


def main(argv: list[str] | None = None) -> int:
    root = repo_root()
    p = argparse.ArgumentParser(prog="dptlearn-make-exercises", description=__doc__.split("\n\n")[0])
    p.add_argument("--solutions", type=Path, default=root / "solutions",
                   help="folder of complete notebooks (default: %(default)s)")
    p.add_argument("--out", type=Path, default=root / "exercises",
                   help="folder to write the student notebooks to (default: %(default)s)")
    p.add_argument("--lectures", type=Path, default=root / "notebooks",
                   help="folder that must hold each exercise's lecture notebook; pass '' to "
                        "skip that check (default: %(default)s)")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 listing the files that would change")
    p.add_argument("--force", action="store_true",
                   help="overwrite notebooks even if they were edited since they were generated")
    p.add_argument("--hints", type=int, default=None, metavar="K",
                   help="write a handout: at most K hints per exercise (K <= 2 shows no code); "
                        "needs --out other than exercises/ (default: every hint, for self-study)")
    args = p.parse_args(argv)
    if not args.solutions.is_dir():
        p.error(f"--solutions: expected a folder of notebooks, got {args.solutions}")
    if args.hints is not None:
        if args.hints < 0:
            p.error(f"--hints: expected a number of hints >= 0, got {args.hints}")
        if args.out.resolve() == (root / "exercises").resolve():
            p.error("--hints writes a handout: give it its own --out DIR (exercises/ keeps every "
                    "hint for self-study, and a test checks that it matches solutions/)")
    lectures = args.lectures if str(args.lectures) not in ("", ".") else None
    try:
        differing = generate(args.solutions, args.out, lectures, check=args.check, force=args.force,
                             hints=args.hints)
    except SourceError as exc:
        print(f"error: the solution notebooks break the exercise conventions "
              f"(docs/authoring.md):\n{exc}", file=sys.stderr)
        return 1
    except EditedExercise as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.check:
        for path in differing:
            print(f"differs: {path}")
        if differing:
            print(f"{len(differing)} file(s) in {args.out} are out of date: "
                  f"run `make exercises`", file=sys.stderr)
        return 1 if differing else 0
    print(f"{len(differing)} file(s) updated in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
