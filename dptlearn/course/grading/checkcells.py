"""Check cells, as the grader reads them: what a solution's check cell calls, the probe cell
that replaces it when grading, and which module a notebook binds to the name ``checks``.

``parse_check_cell`` is the one reader of "what a check cell calls": the exercise generator
validates the solutions with it (``course/exercises.py``), the grader stages, judges and flags
with it. Standard library only, and nothing of the grader's imported: the generator uses it.
"""
from __future__ import annotations

import ast
import functools
from dataclasses import dataclass

from .sandboxed.cells import cell_exercise, python_source, source_of

DEFAULT_CHECKS = "dptlearn.course.checks"
ALIASES = {"dptlearn.checks": DEFAULT_CHECKS}   # ``from dptlearn import checks`` resolves there
PROBE_MODULE = "dptlearn.course.probe"


@dataclass(frozen=True)
class CheckCellCall:
    """What a solution's check cell calls: ``checks.<check>(<answer>)``."""

    check: str          # the name of the exercise's Check in the CHECKS registry
    answer: str         # the expression the cell passes: the learner's object


def parse_check_cell(source: str) -> CheckCellCall:
    """The call of a check cell; ValueError when it is not ``checks.<name>(<expr>)`` (or not
    Python at all)."""
    try:
        tree = ast.parse(python_source(source))
    except SyntaxError as exc:
        raise ValueError(f"expected a check cell calling checks.<name>(<object>), got "
                         f"{source!r} ({exc.msg})") from None
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "checks"
                and node.args):
            return CheckCellCall(node.func.attr, ast.unparse(node.args[0]))
    raise ValueError(f"expected a check cell calling checks.<name>(<object>), got {source!r}")


def probe_cell_source(ex_id: str, call: CheckCellCall) -> str:
    """The cell that replaces a check cell when grading: record the answer, judge outside."""
    return (f"import {PROBE_MODULE} as _dptlearn_probe\n"
            f"_dptlearn_probe.record({ex_id!r}, {call.check!r}, {call.answer})")


@functools.cache        # keyed on the solution's check cell, never a submission's: parsed once
def answer_names(ex_id: str, call: CheckCellCall) -> frozenset[str]:
    """The names an exercise's answer goes by: its id and the names its check cell passes."""
    return frozenset({ex_id} | {n.id for n in ast.walk(ast.parse(call.answer))
                                if isinstance(n, ast.Name)})


def setup_cells(cells: list[dict]) -> list[ast.Module]:
    """The parsed code cells of no exercise (a notebook's set-up cells; unparsable ones left out)."""
    trees = []
    for cell in cells:
        if cell.get("cell_type") != "code" or cell_exercise(cell) is not None:
            continue
        try:
            trees.append(ast.parse(python_source(source_of(cell))))
        except SyntaxError:
            continue
    return trees


def checks_module_of(cells: list[dict]) -> str:
    """The module a solution notebook's set-up cells bind to the name ``checks``.

    ``from dptlearn import checks`` gives ``dptlearn.course.checks``; ``import x as checks``
    gives ``x`` (looked up next to the solutions too, as the grading fixture's checks are).
    """
    found = DEFAULT_CHECKS
    for tree in setup_cells(cells):
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found = next((al.name for al in node.names if (al.asname or al.name) == "checks"),
                             found)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found = next((f"{node.module}.{al.name}" for al in node.names
                              if (al.asname or al.name) == "checks"), found)
    return ALIASES.get(found, found)
