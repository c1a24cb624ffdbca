"""Notebook <-> package drift guard: every dptlearn name a notebook uses must exist."""
import ast
import importlib
import json
from pathlib import Path

import pytest

from _helpers import ROOT

NOTEBOOKS = sorted(p for d in ("notebooks", "solutions", "exercises") for p in (ROOT / d).glob("*.ipynb"))


def code_of(path: Path) -> str:
    cells = json.loads(path.read_text())["cells"]
    lines = []
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        src = "".join(cell["source"])
        # IPython magics and shell escapes are not Python
        lines += [ln if not ln.lstrip().startswith(("%", "!")) else "" for ln in src.splitlines()]
        lines.append("")
    return "\n".join(lines)


def dptlearn_names(tree: ast.AST) -> set[str]:
    """Dotted names under dptlearn used by imports and attribute chains (``dptlearn.a.b``)."""
    names, aliases = set(), {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "dptlearn":
                    names.add(a.name)
                    aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else "dptlearn"
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "dptlearn":
            for a in node.names:
                names.add(f"{node.module}.{a.name}")
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            chain = []
            cur = node
            while isinstance(cur, ast.Attribute):
                chain.append(cur.attr)
                cur = cur.value
            if isinstance(cur, ast.Name) and cur.id in aliases and aliases[cur.id].split(".")[0] == "dptlearn":
                names.add(".".join([aliases[cur.id], *reversed(chain)]))
    return names


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 8


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_dptlearn_name_exists(path):
    names = dptlearn_names(ast.parse(code_of(path)))
    missing = [n for n in sorted(names) if not _exists(n)]
    assert not missing, f"{path.name} uses names that dptlearn does not have: {missing}"


def _exists(dotted: str) -> bool:
    parts = dotted.split(".")
    obj = importlib.import_module(parts[0])
    for i, part in enumerate(parts[1:], start=1):
        if isinstance(obj, type(importlib)):            # a module: the name must be there
            if hasattr(obj, part):
                obj = getattr(obj, part)
                continue
            try:
                obj = importlib.import_module(".".join(parts[: i + 1]))
                continue
            except ModuleNotFoundError:
                return False
        return hasattr(obj, part) or not isinstance(obj, type)  # past a module: only check classes
    return True
