"""Integrity flags: what the report flags for the teacher's eye without scoring it.

* ``tampered_check_cells``: check cells that were edited, injected or deleted (the grader runs
  its own check cells anyway; the flag ``forgery`` says someone tried);
* ``identical_to_reference``: definitions identical, after normalisation (names of the
  definition itself, docstrings and annotations dropped), to dptlearn's reference, which the
  grading view stubs (the flag ``identical``; a plagiarism heuristic, not proof).
"""
from __future__ import annotations

import ast
from pathlib import Path

from ..exercises import Assignment
from .checkcells import answer_names, parse_check_cell
from .sandboxed.cells import cell_exercise, cell_tags, exercise_of, python_source, source_of
from .view import head_modules

MIN_IDENTICAL_NODES = 25        # smaller definitions are too short to call a copy
MAX_DEFS = 2000                 # definitions compared per cell


def tampered_check_cells(cells: list[dict], a: Assignment) -> dict[str, str]:
    """Exercises whose check cell was edited, injected or deleted -> what was seen.

    The grader replaces every check cell by its own anyway; this only explains the flag.
    """
    known = {ex.id for ex in a.exercises}
    seen: dict[str, list[str]] = {}
    notes: dict[str, str] = {}
    for cell in cells:
        if "check" in cell_tags(cell):
            seen.setdefault(cell_exercise(cell) or "", []).append(source_of(cell))
    for ex_id, sources in seen.items():
        if ex_id not in known:
            continue
        original = _normal(source_of(a.check_cell(ex_id)))
        if len(sources) > 1:
            notes[ex_id] = f"{len(sources) - 1} extra cell(s) tagged check for this exercise"
        elif _normal(sources[0]) != original:
            notes[ex_id] = "the check cell was edited"
    injected = sorted(k for k in seen if k not in known)
    if injected:
        first = a.exercises[0].id
        notes.setdefault(first, f"cells tagged check for unknown exercises {injected}")
    for ex_id in known - set(seen):
        notes[ex_id] = "the check cell was deleted"
    return notes


def _normal(source: str) -> str:
    return "".join(source.split())


def _defs(source: str) -> list[ast.AST]:
    """Every function and class definition in ``source``, also inside blocks and inside string
    literals that parse as Python (source handed to ``exec``), at most ``MAX_DEFS``."""
    try:
        tree = ast.parse(python_source(source))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []
    defs: list[ast.AST] = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defs.append(node)
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and ("def " in node.value or "class " in node.value) and node.value != source):
            defs += _defs(node.value)
        if len(defs) >= MAX_DEFS:
            break
    return defs[:MAX_DEFS]


class _Normalise(ast.NodeTransformer):
    """Drop names of the definition itself, docstrings and annotations."""

    def _strip(self, node):
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
        return node

    def visit_FunctionDef(self, node):
        self.generic_visit(node)
        node.returns, node.decorator_list = None, []
        return self._strip(node)

    def visit_ClassDef(self, node):
        self.generic_visit(node)
        return self._strip(node)

    def visit_arg(self, node):
        node.annotation = None
        return node


def normal_form(node: ast.AST) -> str:
    """A definition's AST without its own name, docstrings, annotations or positions."""
    import copy

    node = _Normalise().visit(copy.deepcopy(node))
    node.name = "_"
    return ast.dump(node, annotate_fields=False)


def reference_forms(package: Path) -> dict[str, str]:
    """normal form -> ``dptlearn.<module>.<name>`` for every definition the view stubs."""
    forms = {}
    for module in head_modules(package):
        path = package / f"{module}.py"
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and \
                    sum(1 for _ in ast.walk(node)) >= MIN_IDENTICAL_NODES:
                forms[normal_form(node)] = f"dptlearn.{module}.{node.name}"
    return forms


def identical_to_reference(cells: list[dict], a: Assignment,
                           forms: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """Copies of dptlearn's reference in a notebook: ({exercise: the reference it copies},
    notes on copies that belong to no exercise).

    Every code cell counts, not only solution cells: a copy in an exercise's solution cell is
    that exercise's; one elsewhere (a cell without tags, a string handed to ``exec``) belongs
    to the exercise whose name, or whose check cell's argument, is the copy's name or the
    reference's.
    """
    names = {ex.id: answer_names(ex.id, parse_check_cell(source_of(a.check_cell(ex.id))))
             for ex in a.exercises}
    found: dict[str, str] = {}
    loose: list[str] = []
    for cell in cells:
        if cell.get("cell_type") != "code":
            continue
        tags = cell_tags(cell)
        own = exercise_of(tags) if "solution" in tags else None
        for node in _defs(source_of(cell)):
            ref = forms.get(normal_form(node))
            if ref is None:
                continue
            mine = [own] if own in names else [
                ex for ex, n in names.items() if {node.name, ref.rsplit(".", 1)[1]} & n]
            for ex in mine:
                found.setdefault(ex, ref)
            if not mine and ref not in loose:
                loose.append(ref)
    return found, [f"a cell holds a copy of {ref} (identical after normalisation)"
                   for ref in loose]
