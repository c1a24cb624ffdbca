"""Staging: one submission read, matched to its assignment and prepared to run.

``stage`` reads a submission (never writing to it), matches its assignment and prepares the copy
that runs: outputs cleared, every check cell replaced by a *probe cell* recording the answer
(deleted ones put back, extra ones dropped: ``restore_check_cells``), its watchdog limit set, the
integrity flags noted. ``student_groups`` groups the staged notebooks by sandbox: one student's
notebooks together, never two students in one sandbox.
"""
from __future__ import annotations

import ast
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..exercises import Assignment
from . import safetext
from .checkcells import parse_check_cell, probe_cell_source, setup_cells
from .integrity import identical_to_reference, tampered_check_cells
from .report import ExerciseResult, Result
from .sandboxed.cells import cell_exercise, cell_tags, fresh_cell, source_of
from .sandboxed.plugin import KILL_GRACE_S
from .submissions import InvalidSubmission, Refused, find_assignment, read_submission

EXTRA_CELLS = 10                # learner cells beyond the solution's that the watchdog allows for


@dataclass
class StagedNotebook:
    """A prepared copy of one submission, waiting for its student's sandbox."""

    result: Result
    assignment: Assignment
    nb: dict                            # the notebook that runs
    limit: float                        # watchdog seconds for this notebook alone
    tampered: dict[str, str] = field(default_factory=dict)   # exercise -> check cell tampering
    identical: dict[str, str] = field(default_factory=dict)  # exercise -> the reference copied

    @property
    def key(self) -> str:
        return self.assignment.name


def restore_check_cells(cells: list[dict], a: Assignment) -> list[dict]:
    """Put back the solution's check cells, matching exercises by their ``ex:<id>`` tag.

    A submitted check cell of a known exercise is replaced by the original in place (first one
    only); other cells tagged ``check`` are dropped; a missing one is inserted after the last
    cell of its exercise, or, if the exercise has no cells left, before the first cell of a
    later exercise (else at the end).
    """
    known = [ex.id for ex in a.exercises]
    placed: set[str] = set()
    out = []
    for cell in cells:
        ex = cell_exercise(cell)
        if "check" in cell_tags(cell):
            if ex in known and ex not in placed:
                out.append(a.check_cell(ex))
                placed.add(ex)
            continue
        out.append(cell)
    for pos, ex_id in enumerate(known):
        if ex_id not in placed:
            out.insert(_insert_index(out, ex_id, known[pos + 1:]), a.check_cell(ex_id))
    return out


def _insert_index(cells: list[dict], ex_id: str, later: list[str]) -> int:
    """Where a missing check cell of ``ex_id`` goes (see restore_check_cells)."""
    mine = [i for i, c in enumerate(cells) if cell_exercise(c) == ex_id]
    if mine:
        return mine[-1] + 1
    after = [i for i, c in enumerate(cells) if cell_exercise(c) in later]
    return after[0] if after else len(cells)


def _probe_cell(cell: dict, a: Assignment) -> dict:
    """The solution's check cell ``cell`` turned into its probe cell (same tags)."""
    ex_id = cell_exercise(cell)
    source = probe_cell_source(ex_id, parse_check_cell(source_of(a.check_cell(ex_id))))
    return {**cell, "source": source}


def prepare(nb: dict, a: Assignment) -> dict:
    """The notebook that is actually run: probe cells for checks, no outputs, tidy metadata."""
    cells = [_probe_cell(c, a) if "check" in cell_tags(c) else c
             for c in restore_check_cells(list(nb["cells"]), a)]
    return {"cells": [{**fresh_cell(c["cell_type"], source_of(c), cell_tags(c)), "id": f"cell-{i}"}
                      for i, c in enumerate(cells)],
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                        "language": "python"},
                         "dptlearn": {"assignment": a.name}},
            "nbformat": 4, "nbformat_minor": 5}


def watchdog_seconds(nb: dict, a: Assignment, timeout: float) -> float:
    """Wall-clock limit for one notebook: generous enough for a replay after every cell.

    Counted on the *solution's* code cells, plus the learner's extra ones up to
    ``EXTRA_CELLS``: a notebook of a million cells gets no more time than that.
    """
    n_solution = sum(c.get("cell_type") == "code" for c in a.nb["cells"])
    n_code = min(sum(c["cell_type"] == "code" for c in nb["cells"]), n_solution + EXTRA_CELLS)
    return 60 + 2 * n_code * (timeout + KILL_GRACE_S + 5)


def stage(result: Result, assignments: list[Assignment], timeout: float,
          forms: dict[str, str]) -> StagedNotebook | None:
    """Read, match and prepare one submission; None (and a zero) when it cannot be graded.

    ``forms``: the reference's normal forms (``integrity.reference_forms``)."""
    path = Path(result.path)
    nb = a = None
    try:
        nb = read_submission(path)
        a = find_assignment(nb, path, assignments, result.notes)
        if a is None:
            raise InvalidSubmission(f"not graded: no assignment matches {path.name!r} (expected "
                                    f"one of {sorted(x.name for x in assignments)})")
        set_assignment(result, a)
        prepared = prepare(nb, a)
        identical, copies = identical_to_reference(nb["cells"], a, forms)
        result.notes += copies
        return StagedNotebook(result, a, prepared, watchdog_seconds(prepared, a, timeout),
                              tampered_check_cells(nb["cells"], a), identical)
    except InvalidSubmission as exc:
        a = find_assignment(nb, path, assignments, [])
        if a is not None:
            set_assignment(result, a)
        fail_all(result, a, safetext.line(exc))
        result.refused = isinstance(exc, Refused)
    except Exception as exc:  # a grader bug must cost one submission, not the class run
        grader_error(result, "staging", exc, a)
    return None


def set_assignment(result: Result, a: Assignment) -> None:
    result.assignment, result.max_score = a.name, a.max_score


def fail_all(result: Result, a: Assignment | None, message: str) -> None:
    """0 for every exercise of ``a`` (None: of the exercises ``result`` already has)."""
    result.error = message
    exercises = ([(ex.id, ex.points) for ex in a.exercises] if a else
                 [(e.id, e.max_points) for e in result.exercises])
    result.exercises = [ExerciseResult(ex, 0, pts, False, message) for ex, pts in exercises]


def grader_error(result: Result, where: str, exc: BaseException,
                 a: Assignment | None = None) -> None:
    """The grader's own code failed on this one submission while ``where`` (reading, staging,
    running, scoring, reporting) it: 0 for all of it (every exercise of ``a``, else of those it
    has), refused, one line that names the file."""
    name = safetext.path_text(os.path.basename(result.path))
    fail_all(result, a, safetext.line(f"grader error while {where} {name}: "
                                      f"{type(exc).__name__}: {exc}", 400))
    result.refused = True


def preload_modules(assignments: list[Assignment]) -> list[str]:
    """Modules that the solutions' set-up cells (code cells of no exercise) import.

    The warm-kernel server imports them once; every kernel forked from it starts with them in
    ``sys.modules``. Set-up cells run first in every submission, so a kernel that would have
    imported them anyway sees no difference. ``from a import b`` also names ``a.b`` (it may be
    a submodule; the server skips what does not import).
    """
    mods: list[str] = []
    for a in assignments:
        for tree in setup_cells(a.nb["cells"]):
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    mods += [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    mods += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names
                                             if alias.name != "*"]
    return list(dict.fromkeys(m for m in mods if m != "__future__"
                              and not m.startswith("__future__.")))


def student_groups(staged: list[StagedNotebook]) -> list[list[StagedNotebook]]:
    """One group per sandbox: one student's notebooks, at most one per assignment.

    A student who handed in the same assignment twice gets a second sandbox for the second
    copy (both would record answers under the same exercise ids).
    """
    groups: dict[str, list[list[StagedNotebook]]] = {}
    for s in staged:
        mine = groups.setdefault(s.result.student_key, [])
        free = next((g for g in mine if all(o.key != s.key for o in g)), None)
        if free is None:
            mine.append(free := [])
        free.append(s)
    return [g for mine in groups.values() for g in mine]
