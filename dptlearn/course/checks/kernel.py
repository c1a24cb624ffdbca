"""Learner mode only: did the cells run so far in this kernel use dptlearn's head?

A predict exercise hands in a value (a dict of numbers), so the probe's call recorder, which
watches the learner's code while the check runs it, sees nothing: the value was computed before
the check cell. When grading, every cell runs where dptlearn's head is a stub, so an answer
computed with it (lecture 00's ``trace_head`` copied, ``sum(p.numel() ...)`` over
``dpt_large_head()``) raises ``ReferenceUseError`` and scores 0. The check cell says the same
beforehand: ``head_uses`` reads the cells this kernel ran (IPython's ``In``) up to the last one
that sets the answer's name, and names the first reference to a callable of a head module
(``dptlearn/<module>.py`` except ``probe.NOT_HEAD``, as the grading view stubs them), however it
was imported. A name that is only imported, never used, is not a use (the grader's stubs import
fine either).
"""
from __future__ import annotations

import ast
import importlib
from typing import Any, Iterable

from ..probe import NOT_HEAD


def head_name(obj: Any) -> str | None:
    """``"<module>.<qualname>"`` if ``obj`` is a function or class of a dptlearn head module, else None."""
    module = getattr(obj, "__module__", None)
    if not callable(obj) or not isinstance(module, str) or isinstance(obj, type(importlib)):
        return None
    pkg, _, mod = module.partition(".")
    if pkg != "dptlearn" or not mod or "." in mod or mod in NOT_HEAD or mod.startswith("_"):
        return None
    return f"{mod}.{getattr(obj, '__qualname__', getattr(obj, '__name__', '?'))}"


def _imports(tree: ast.AST, env: dict) -> None:
    """Bind the names a cell's dptlearn imports create to the real objects."""
    for node in ast.walk(tree):
        try:
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] == "dptlearn":
                        importlib.import_module(a.name)
                        top = a.asname or a.name.split(".")[0]
                        env[top] = importlib.import_module(a.name if a.asname else "dptlearn")
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "dptlearn":
                mod = importlib.import_module(node.module)
                for a in node.names:
                    if a.name != "*":
                        obj = getattr(mod, a.name, None)
                        if obj is None:
                            obj = importlib.import_module(f"{node.module}.{a.name}")
                        env[a.asname or a.name] = obj
        except Exception:  # noqa: BLE001 - a cell that failed to import anything uses nothing
            continue


def _resolve(node: ast.AST, env: dict) -> Any:
    if isinstance(node, ast.Name):
        return env.get(node.id)
    if isinstance(node, ast.Attribute):
        base = _resolve(node.value, env)
        return None if base is None else getattr(base, node.attr, None)
    return None


def _assigns(tree: ast.AST, name: str) -> bool:
    return any(isinstance(n, ast.Name) and n.id == name and isinstance(n.ctx, ast.Store) for n in ast.walk(tree))


def head_uses(sources: Iterable[str], answer: str | None = None) -> list[tuple[int, str]]:
    """``(cell index, "<module>.<name>")`` for each use of dptlearn's head in ``sources`` (the cells in
    the order they ran), up to the last cell that assigns ``answer`` (all of them if none does)."""
    trees = []
    for src in sources:
        try:
            trees.append(ast.parse(src))
        except SyntaxError:
            trees.append(ast.Module(body=[], type_ignores=[]))
    last = max((i for i, t in enumerate(trees) if answer and _assigns(t, answer)), default=len(trees) - 1)
    env: dict = {}
    uses = []
    for i, tree in enumerate(trees[:last + 1]):
        _imports(tree, env)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Name, ast.Attribute)) and isinstance(node.ctx, ast.Load):
                name = head_name(_resolve(node, env))
                if name:
                    uses.append((i, name))
    return uses


def kernel_cells() -> list[str] | None:
    """The cells this IPython kernel ran, in order, without the one running now; None outside IPython."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    ip = get_ipython()
    history = getattr(ip, "user_ns", {}).get("In") if ip is not None else None
    return [str(s) for s in history[1:-1]] if isinstance(history, list) else None


def refuse_head_use(check, answer: str, cells: list[str] | None = None) -> None:
    """Fail ``check`` (flag ``reference``) as the grader would if the kernel's cells used dptlearn's head."""
    cells = kernel_cells() if cells is None else cells
    uses = head_uses(cells, answer) if cells else []
    if uses:
        i, name = uses[0]
        check.fail(f"uses dptlearn.{name}, the reference for this exercise: write your own (a cell this kernel "
                   f"ran, In[{i + 1}], calls it). When grading, dptlearn's head is not there, so `{answer}` worked "
                   f"out with it scores 0: work it out by hand, then restart the kernel and run the notebook again",
                   "reference")
