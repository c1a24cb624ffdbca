"""The package's layout rules, read from the source so they stay true.

- the head (dptlearn/*.py) imports only the standard library, torch, einops and itself;
- viz/, course/ and train/ sit on top of the head: nothing in the head imports them;
- no import cycles among dptlearn's modules, imports inside functions (lazy ones) included;
- no module over 600 lines;
- the grader's sandboxed package imports nothing of the trusted side; no grading module over 350 lines;
- every stage's forward() (and each function an exercise asks for) has exactly the signature
  of its exercise in solutions/.
"""
from __future__ import annotations

import ast
import importlib
import inspect
import json
import sys
from pathlib import Path

import pytest

from _helpers import ROOT

PKG = ROOT / "dptlearn"
MAX_LINES = 600
HEAD_ALLOWED_THIRD_PARTY = {"torch", "einops"}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PKG.rglob("*.py"))}
HEAD = sorted(m for m, p in MODULES.items() if p.parent == PKG and p.name != "__init__.py")


def is_package(name: str) -> bool:
    return MODULES.get(name, Path()).name == "__init__.py"


def imports_of(name: str) -> set[str]:
    """Every module named by an import in ``name``'s source, at any depth (functions included),
    plus string literals passed to ``importlib.import_module``."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    package = name if is_package(name) else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            subs = {f"{target}.{a.name}" for a in node.names}
            found |= {s for s in subs if s in MODULES} or {target}
            if not all(s in MODULES for s in subs):
                found.add(target)
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None))
              == "import_module" and node.args and isinstance(node.args[0], ast.Constant)):
            found.add(node.args[0].value)
    return found


def graph() -> dict[str, set[str]]:
    return {m: {t for t in imports_of(m) if t in MODULES and t != m} for m in MODULES}


def test_the_head_imports_only_torch_einops_the_standard_library_and_itself():
    for m in HEAD:
        for target in imports_of(m):
            top = target.split(".")[0]
            if top == "dptlearn":
                assert target in HEAD or target == "dptlearn", f"{m} imports {target}: the head must not " \
                                                                 f"import viz/, course/ or train/"
            else:
                assert top in HEAD_ALLOWED_THIRD_PARTY or top in sys.stdlib_module_names or top == "__future__", \
                    f"{m} imports {target}; the head may import only torch, einops and the standard library"


def test_tools_are_in_their_folders_and_the_head_knows_none_of_them():
    folders = {p.name for p in PKG.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == {"viz", "course", "train"}
    head_graph = {m: graph()[m] for m in HEAD}
    assert not any(t.startswith(("dptlearn.viz", "dptlearn.course", "dptlearn.train"))
                   for ts in head_graph.values() for t in ts)


def test_no_import_cycles_lazy_imports_included():
    g = graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(g[m]):
            if state.get(t) == 1:
                cycle = stack[stack.index(t):] + [t]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m)


def test_the_cycle_finder_sees_lazy_imports():
    # A self-check of the rule above: viz/trace.py's import of the assembled head must be seen,
    # and so must the root's import_module("dptlearn.course.checks").
    assert "dptlearn.dpt" in imports_of("dptlearn.viz.trace")
    assert "dptlearn.course.checks" in imports_of("dptlearn")


def test_no_module_over_600_lines():
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


# ------------------------------------------------------------------ the grader's trust boundary

SANDBOXED = "dptlearn.course.grading.sandboxed"
NOTEBOOK_RUNTIME = {"pytest", "nbval", "jupyter_client", "ipykernel", "ipykernel_launcher"}
RUNTIME_USERS = {f"{SANDBOXED}.plugin", f"{SANDBOXED}.warm"}    # the nbval plugin, the fork server
GRADING_MAX_LINES = 350


def test_the_sandboxed_package_imports_nothing_of_the_trusted_side():
    """What runs inside a student's sandbox (copied there whole) imports the standard library
    and itself only, lazy imports included; the nbval plugin and the warm-kernel server may also
    import the notebook runtime they drive."""
    inside = sorted(m for m in MODULES if m == SANDBOXED or m.startswith(SANDBOXED + "."))
    assert {f"{SANDBOXED}.{n}" for n in ("plugin", "warm", "launcher", "confine", "cells")} <= set(inside)
    for m in inside:
        for target in imports_of(m):
            top = target.split(".")[0]
            if target == SANDBOXED or target.startswith(SANDBOXED + "."):
                continue
            allowed = top in sys.stdlib_module_names or top == "__future__" or (
                m in RUNTIME_USERS and top in NOTEBOOK_RUNTIME)
            assert allowed, f"{m} imports {target}: the sandboxed package may import only the " \
                            f"standard library and itself" + (", and the notebook runtime" if m in RUNTIME_USERS else "")


def test_the_import_rule_sees_the_trusted_side():
    # A self-check of the rule above: a relative import out of the package resolves to dptlearn.
    assert "dptlearn.course.grading.staging" in imports_of("dptlearn.course.grading.processes")
    assert f"{SANDBOXED}.cells" in imports_of(f"{SANDBOXED}.plugin")


def test_no_grading_module_over_350_lines():
    long = {m: n for m, p in MODULES.items() if m.startswith("dptlearn.course.grading")
            and (n := len(p.read_text(encoding="utf-8").splitlines())) > GRADING_MAX_LINES}
    assert not long, f"grading modules over {GRADING_MAX_LINES} lines: {long}"


# ------------------------------------------------------------------ signatures the exercises ask for

def exercise_signatures() -> dict[str, list[str]]:
    """``name -> parameter names`` of every function, and of every class's forward, in the solution cells."""
    found: dict[str, list[str]] = {}
    for nb_path in sorted((ROOT / "solutions").glob("*.ipynb")):
        nb = json.loads(nb_path.read_text(encoding="utf-8"))
        for cell in nb["cells"]:
            if cell["cell_type"] != "code" or "solution" not in cell.get("metadata", {}).get("tags", []):
                continue
            tree = ast.parse("".join(cell["source"]))
            for node in tree.body:
                if isinstance(node, ast.FunctionDef):
                    found[node.name] = [a.arg for a in node.args.args]
                elif isinstance(node, ast.ClassDef):
                    for item in node.body:
                        if isinstance(item, ast.FunctionDef) and item.name == "forward":
                            found[f"{node.name}.forward"] = [a.arg for a in item.args.args]
    return found


PACKAGE_STAGES = {  # exercise name -> where dptlearn keeps the same thing
    "tokens_to_grid": "dptlearn.grid:tokens_to_grid",
    "grid_to_tokens": "dptlearn.grid:grid_to_tokens",
    "patch_grid": "dptlearn.grid:patch_grid",
    "select_hooked_tokens": "dptlearn.tokens:select_hooked_tokens",
    "crop_to": "dptlearn.fusion:crop_to",
    "fuse_pyramid": "dptlearn.fusion:fuse_pyramid",
    "depth_activation": "dptlearn.postprocess:depth_activation",
    "conf_activation": "dptlearn.postprocess:conf_activation",
    "postprocess": "dptlearn.postprocess:postprocess",
    "Reassemble.forward": "dptlearn.reassemble:Reassemble.forward",
    "ResidualConvUnit.forward": "dptlearn.fusion:ResidualConvUnit.forward",
    "FusionBlock.forward": "dptlearn.fusion:FusionBlock.forward",
    "RegressionHead.forward": "dptlearn.head:RegressionHead.forward",
}


@pytest.mark.parametrize("exercise, where", sorted(PACKAGE_STAGES.items()))
def test_stage_signatures_are_the_ones_the_exercises_ask_for(exercise, where):
    asked = exercise_signatures()
    assert exercise in asked, f"no exercise defines {exercise} in solutions/"
    module, _, qual = where.partition(":")
    obj = importlib.import_module(module)
    for part in qual.split("."):
        obj = getattr(obj, part)
    params = list(inspect.signature(obj).parameters.values())
    positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    assert positional == asked[exercise], f"{where} takes {positional}, its exercise asks for {asked[exercise]}"
    extras = [p for p in params if p.name not in positional]   # e.g. FusionBlock.forward's size=
    assert all(p.kind == p.KEYWORD_ONLY and p.default is not p.empty for p in extras), \
        f"{where}: parameters beyond the exercise's must be keyword-only with a default, got {extras}"


def test_tests_share_one_root_and_no_path_hacks():
    """Test modules take ROOT from _helpers and import tests/grading as a package; none puts a
    folder on sys.path by hand or works out the checkout's root again."""
    found = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        if path.name == "_helpers.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr in ("insert", "append", "extend") \
                    and ast.unparse(node.func.value) == "sys.path":
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
            if isinstance(node, ast.Assign) and any(ast.unparse(t) in ("ROOT", "REPO") for t in node.targets) \
                    and "__file__" in ast.unparse(node.value):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert found == [], "\n".join(found)
