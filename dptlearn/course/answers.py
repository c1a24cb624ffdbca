"""Your answers from another notebook: the capstone runs the head *you* wrote in 01-05.

    >>> from dptlearn.course.answers import load_answers
    >>> mine = load_answers("03_reassemble")      # my-work/03_reassemble.ipynb, next to this notebook
    >>> mine.Reassemble                            # your class, defined by your cells

The notebook is found in the folder of the running notebook (or ``folder``): by its own metadata
(``metadata.dptlearn.assignment``, set in every exercise notebook), else by file name, including
the names LMS downloads give (``doe_123_456_03_reassemble.ipynb``). Its code cells run top to
bottom in a fresh namespace, quietly, except the check cells (they would re-run the checks) and
cells tagged ``solution-only``. A cell that fails is recorded and skipped, as when you run the
notebook yourself; asking for a name that was never defined says which cells failed. Figures the
cells draw are neither shown nor kept.

The capstone (exercise 06) loads all its parts at once:

    >>> mine = load_parts()                        # 01-05 from this folder; never raises
    >>> mine.FusionBlock                           # raises MissingAnswers if 04 is not here
"""
from __future__ import annotations

import contextlib
import io
import json
import traceback
from collections.abc import Iterator, Mapping
from pathlib import Path

from .grading.sandboxed.cells import cell_tags, python_source, source_of
from .lms import names_assignment

SKIP_TAGS = ("check", "solution-only")
CAPSTONE = "06_dust3r_head"
PARTS = {   # notebook -> the answers the capstone's head is built from, in the order its checks run
    "01_tokens_and_hooks": ("hook_indices", "select_hooked_tokens"),
    "02_rearrange": ("patch_grid", "tokens_to_grid"),
    "03_reassemble": ("reassemble_branch", "Reassemble"),
    "04_refinenet_fusion": ("ResidualConvUnit", "crop_to", "FusionBlock", "fuse_pyramid"),
    "05_head_and_postprocess": ("RegressionHead", "depth_activation", "conf_activation", "postprocess"),
}
PART_NOTEBOOK = {name: nb for nb, names in PARTS.items() for name in names}


class MissingAnswers(LookupError):
    """The notebook with the answers is not there, or does not define what was asked for."""

    def _render_traceback_(self) -> list[str]:
        """In a notebook: the message alone, without a traceback into this module."""
        return [f"✗ MissingAnswers: {self}"]


class Answers:
    """The names one notebook's cells defined; ``.failed`` lists ``(cell index, error)`` of cells that raised."""

    def __init__(self, assignment: str, path: Path, namespace: dict, failed: list[tuple[int, str]]):
        self.assignment, self.path, self.failed = assignment, path, failed
        self._ns = namespace

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in self._ns:
            why = "; ".join(f"cell {i}: {err}" for i, err in self.failed) or "every cell ran without an error"
            raise MissingAnswers(f"{self.path.name} defines no `{name}` — write it there and save the notebook "
                                 f"(cells that failed: {why})")
        return self._ns[name]

    def __contains__(self, name: str) -> bool:
        return name in self._ns

    def __repr__(self) -> str:
        return f"Answers({self.assignment!r} from {self.path}, {len(self.failed)} failed cell(s))"


def _declared(path: Path) -> str | None:
    try:
        meta = json.loads(path.read_text(encoding="utf-8")).get("metadata") or {}
        return (meta.get("dptlearn") or {}).get("assignment")
    except (OSError, ValueError, AttributeError):
        return None


def _declarations(folder: Path) -> dict[Path, str | None]:
    """Every notebook in ``folder`` (sorted, hidden ones left out) and the assignment its metadata names."""
    return {p: _declared(p) for p in sorted(folder.glob("*.ipynb")) if not p.name.startswith(".")}


def _candidates(assignment: str, declared: dict[Path, str | None]) -> list[Path]:
    """The notebooks of ``_declarations`` that are ``assignment``'s: by metadata, else by file name."""
    by_meta = [p for p, name in declared.items() if name == assignment]
    return by_meta or [p for p in declared if names_assignment(p.name, assignment)]


def _not_there(assignments: list[str], folder: Path, needed_by: str) -> str:
    names = ", ".join(f"{a}.ipynb" for a in assignments)
    return (f"{needed_by} needs your answers from {names} in the same folder ({folder}), and "
            f"{'it is' if len(assignments) == 1 else 'they are'} not there. Keep all your exercise notebooks "
            f"together (my-work/, made by `make lab`); a grader given this notebook without its siblings "
            f"cannot run your head.")


def find_notebook(assignment: str, folder: Path, needed_by: str = "this notebook",
                  declared: dict[Path, str | None] | None = None) -> Path:
    """The notebook of ``assignment`` in ``folder`` (metadata first, then the file name); ``declared``:
    the folder's ``_declarations`` when the caller has read them already."""
    folder = Path(folder)
    found = _candidates(assignment, declared if declared is not None else _declarations(folder))
    if not found:
        raise MissingAnswers(_not_there([assignment], folder, needed_by))
    if len(found) > 1:
        raise MissingAnswers(f"several notebooks in {folder} are {assignment}: "
                             f"{', '.join(p.name for p in found)}; keep one")
    return found[0]


def load_answers(assignment: str, folder: str | Path | None = None, needed_by: str = "this notebook",
                 declared: dict[Path, str | None] | None = None) -> Answers:
    """Run ``assignment``'s notebook (see the module docstring) and return what it defined."""
    path = find_notebook(assignment, Path(folder) if folder is not None else Path.cwd(), needed_by, declared)
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
        cells = list(nb["cells"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MissingAnswers(f"{path.name} is not a readable notebook ({exc})") from None
    namespace: dict = {"__name__": f"answers_{assignment}"}
    failed: list[tuple[int, str]] = []
    with _no_figures():
        _run_cells(cells, path, namespace, failed)
    return Answers(assignment, path, namespace, failed)


def _run_cells(cells: list, path: Path, namespace: dict, failed: list[tuple[int, str]]) -> None:
    for i, cell in enumerate(cells):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        if any(t in SKIP_TAGS for t in cell_tags(cell)):
            continue
        src = python_source(source_of(cell))                # without IPython magics and shell lines
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                exec(compile(src, f"<{path.name}, cell {i}>", "exec"), namespace)
        except Exception as exc:  # noqa: BLE001 - a learner's cell may raise anything; record it, go on
            last = traceback.format_exception_only(type(exc), exc)[-1].strip()
            failed.append((i, last))


@contextlib.contextmanager
def _no_figures() -> Iterator[None]:
    """Figures the cells draw are not wanted here: ``plt.show()`` does nothing (in a notebook it would
    display them under the cell that loads the answers), and the new figures are closed afterwards."""
    try:
        import matplotlib.pyplot as plt
    except ImportError:         # no matplotlib: the cells cannot draw either
        yield
        return
    show, before = plt.show, set(plt.get_fignums())
    plt.show = lambda *args, **kwargs: None
    try:
        yield
    finally:
        plt.show = show
        for num in set(plt.get_fignums()) - before:
            plt.close(num)


class Parts(Mapping):
    """The capstone's parts (``PARTS``), read from their notebooks: ``parts.FusionBlock`` or
    ``parts["FusionBlock"]``. A part whose notebook is missing, or does not define it, raises
    ``MissingAnswers`` when it is used, not when the parts are loaded."""

    def __init__(self, loaded: dict[str, Answers], problems: dict[str, str], absent: list[str]):
        self._loaded, self._problems, self._absent = loaded, problems, absent

    def __getitem__(self, name: str):
        if name not in PART_NOTEBOOK:
            raise KeyError(f"{name!r} is not one of the capstone's parts: {list(PART_NOTEBOOK)}")
        nb = PART_NOTEBOOK[name]
        if nb in self._problems:
            raise MissingAnswers(self._problems[nb])
        return getattr(self._loaded[nb], name)

    def __getattr__(self, name: str):
        if name not in PART_NOTEBOOK:
            raise AttributeError(f"{name!r} is not one of the capstone's parts: {list(PART_NOTEBOOK)}")
        return self[name]

    def __iter__(self) -> Iterator[str]:
        return iter(PART_NOTEBOOK)

    def __len__(self) -> int:
        return len(PART_NOTEBOOK)

    def __repr__(self) -> str:
        rows = []
        for nb, names in PARTS.items():
            if nb in self._problems:
                why = "not in this folder" if nb in self._absent else self._problems[nb]
                rows.append(f"  {nb + '.ipynb':30s} ✗ {why}")
                continue
            answers = self._loaded[nb]
            have = [n for n in names if n in answers]
            line = f"  {answers.path.name:30s} {', '.join(have)}"
            if len(have) < len(names):
                line += f"   ✗ not defined: {', '.join(n for n in names if n not in have)}"
            if answers.failed:
                line += f"   ({len(answers.failed)} cell(s) failed: {answers.failed[0][1]})"
            rows.append(line)
        return "your parts, from the notebooks in this folder:\n" + "\n".join(rows)


def load_parts(folder: str | Path | None = None, needed_by: str = CAPSTONE) -> Parts:
    """Load the capstone's parts from notebooks 01-05 in ``folder`` (default: the working folder).

    Never raises: a missing notebook (or two candidates, or an unreadable file) is remembered and
    raises ``MissingAnswers`` when one of its parts is used, so that a check can say so.
    """
    folder = Path(folder) if folder is not None else Path.cwd()
    declared = _declarations(folder)                  # each notebook's metadata read once, not once per part
    absent = [nb for nb in PARTS if not _candidates(nb, declared)]
    problems = {nb: _not_there(absent, folder, needed_by) for nb in absent}
    loaded = {}
    for nb in PARTS:
        if nb in absent:
            continue
        try:
            loaded[nb] = load_answers(nb, folder, needed_by, declared)
        except MissingAnswers as exc:
            problems[nb] = str(exc)
    return Parts(loaded, problems, absent)
