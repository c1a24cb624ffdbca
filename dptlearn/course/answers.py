"""Your answers from another notebook: the capstone runs the head *you* wrote in 01-05.

    >>> from dptlearn.course.answers import load_answers
    >>> mine = load_answers("03_reassemble")      # my-work/03_reassemble.ipynb, next to this notebook
    >>> mine.Reassemble                            # your class, defined by your cells

The notebook is found in the folder of the running notebook (or ``folder``): by its own metadata
(``metadata.dptlearn.assignment``, set in every exercise notebook), else by file name, including
the names LMS downloads give (``doe_123_456_03_reassemble.ipynb``). Its code cells run top to
bottom in a fresh namespace, quietly, except the check cells (they would re-run the checks) and
cells tagged ``solution-only``. A cell that fails is recorded and skipped, as when you run the
notebook yourself; asking for a name that was never defined says which cells failed.
"""
from __future__ import annotations

import contextlib
import io
import json
import traceback
from pathlib import Path

from .exercises import source_of, tags_of

SKIP_TAGS = ("check", "solution-only")


class MissingAnswers(LookupError):
    """The notebook with the answers is not there, or does not define what was asked for."""


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


def find_notebook(assignment: str, folder: Path) -> Path:
    """The notebook of ``assignment`` in ``folder`` (metadata first, then the file name)."""
    folder = Path(folder)
    candidates = sorted(p for p in folder.glob("*.ipynb") if not p.name.startswith("."))
    by_meta = [p for p in candidates if _declared(p) == assignment]
    by_name = [p for p in candidates if p.stem == assignment or p.stem.endswith("_" + assignment)]
    found = by_meta or by_name
    if not found:
        raise MissingAnswers(
            f"this notebook needs your answers from {assignment}.ipynb in the same folder ({folder}), and "
            f"there is none. Keep all your exercise notebooks together (my-work/, made by `make lab`); a "
            f"grader given this notebook without its siblings cannot run your head.")
    if len(found) > 1:
        raise MissingAnswers(f"several notebooks in {folder} are {assignment}: "
                             f"{', '.join(p.name for p in found)}; keep one")
    return found[0]


def load_answers(assignment: str, folder: str | Path | None = None) -> Answers:
    """Run ``assignment``'s notebook (see the module docstring) and return what it defined."""
    path = find_notebook(assignment, Path(folder) if folder is not None else Path.cwd())
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
        cells = list(nb["cells"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MissingAnswers(f"{path.name} is not a readable notebook ({exc})") from None
    namespace: dict = {"__name__": f"answers_{assignment}"}
    failed: list[tuple[int, str]] = []
    for i, cell in enumerate(cells):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        if any(t in SKIP_TAGS for t in tags_of(cell)):
            continue
        src = "\n".join(line for line in source_of(cell).splitlines()
                        if not line.lstrip().startswith(("%", "!")))     # IPython magics and shell lines
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                exec(compile(src, f"<{path.name}, cell {i}>", "exec"), namespace)
        except Exception as exc:  # noqa: BLE001 - a learner's cell may raise anything; record it, go on
            last = traceback.format_exception_only(type(exc), exc)[-1].strip()
            failed.append((i, last))
    _close_figures()
    return Answers(assignment, path, namespace, failed)


def _close_figures() -> None:
    """Figures the cells drew are not wanted here."""
    import sys
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None:
        plt.close("all")
