"""Crafted submissions for the grader's tests, built from the fixture solution notebook.

``CASES`` maps a case name to (a function that edits the solution notebook's JSON in place,
the expected score out of 6). The fixture has three exercises: ``add`` (1 point), ``grid``
(2 points) and ``factor`` (3 points); see fixtures/solutions/01_fixture.ipynb.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import NamedTuple

from _helpers import code_cell  # noqa: F401  (the one cell builder; tests call crafted.code_cell)

FIXTURES = Path(__file__).parent / "fixtures"
SOLUTIONS = FIXTURES / "solutions"
LECTURES = FIXTURES / "notebooks"
ASSIGNMENT = "01_fixture"
MAX_SCORE = 6


def solution_nb() -> dict:
    return json.loads((SOLUTIONS / f"{ASSIGNMENT}.ipynb").read_text(encoding="utf-8"))


def cell(nb: dict, ex: str, role: str) -> dict:
    """The cell of exercise ``ex`` tagged ``role`` (solution/check/exercise)."""
    return next(c for c in nb["cells"]
                if f"ex:{ex}" in c["metadata"].get("tags", []) and role in c["metadata"]["tags"])


def set_source(nb: dict, ex: str, role: str, source: str) -> None:
    cell(nb, ex, role)["source"] = source.splitlines(keepends=True)


def insert_after(nb: dict, ex: str, role: str, new: dict) -> None:
    nb["cells"].insert(nb["cells"].index(cell(nb, ex, role)) + 1, new)


# --- the common mistakes, one per exercise -------------------------------------------------

WRONG_ADD = "def add(a, b):\n    return a - b"
WRONG_GRID = ("def to_grid(tokens, nh, nw):\n"            # column-major: a reshape without .T
              "    return [[tokens[c * nh + r] for c in range(nw)] for r in range(nh)]")
WRONG_FACTOR = "def resample_factor(stride, patch_size=16):\n    return stride / patch_size"


def correct(nb):
    pass


def mistake_add(nb):
    set_source(nb, "add", "solution", WRONG_ADD)


def mistake_grid(nb):
    set_source(nb, "grid", "solution", WRONG_GRID)


def mistake_factor(nb):
    set_source(nb, "factor", "solution", WRONG_FACTOR)


def partly_correct(nb):
    mistake_grid(nb)
    mistake_factor(nb)


def tampered_checks(nb):
    """Wrong answers everywhere, check cells edited to pass, one excused with a tag."""
    mistake_add(nb)
    mistake_grid(nb)
    mistake_factor(nb)
    set_source(nb, "add", "check", "print('all good')")
    set_source(nb, "grid", "check", "checks.check_to_grid = lambda f: None\n"
                                    "checks.check_to_grid(to_grid)")
    chk = cell(nb, "factor", "check")
    chk["source"] = ["# NBVAL_SKIP\n", "pass"]
    chk["metadata"]["tags"].append("raises-exception")


def deleted_checks(nb):
    """Correct answers, every check cell deleted: the originals come back and pass."""
    nb["cells"] = [c for c in nb["cells"] if "check" not in c["metadata"].get("tags", [])]


def deleted_wrong(nb):
    """A wrong ``grid`` whose check cell was deleted still loses its points."""
    mistake_grid(nb)
    nb["cells"].remove(cell(nb, "grid", "check"))


def forged_exercise(nb):
    """A made-up check cell worth 100 points is dropped; points come from the solution."""
    nb["cells"].append(code_cell("pass", ["ex:bonus", "check", "points:100"]))
    cell(nb, "add", "check")["metadata"]["tags"] = ["ex:add", "check", "points:50"]


def infinite_loop(nb):
    """``grid`` never returns; the kernel is interrupted and ``factor`` still counts."""
    set_source(nb, "grid", "solution", "while True:\n    pass")


def unstoppable_loop(nb):
    """``grid`` swallows the interrupt and floods output: the kernel is killed and restarted."""
    set_source(nb, "grid", "solution",
               "import time\nwhile True:\n    try:\n        print('x' * 1000)\n"
               "    except KeyboardInterrupt:\n        pass")


def os_exit(nb):
    set_source(nb, "grid", "solution", "import os\nos._exit(0)")


def exit_call(nb):
    set_source(nb, "grid", "solution", "exit()")


def crash_in_check(nb):
    """The student's function kills the kernel only when the check calls it."""
    set_source(nb, "grid", "solution", "def to_grid(tokens, nh, nw):\n    import os\n    os._exit(1)")


def syntax_error(nb):
    set_source(nb, "factor", "solution", "def resample_factor(stride, patch_size=16)\n"
                                         "    return patch_size / stride")


def huge_output(nb):
    """Correct answers, plus a cell printing ~20 MB and a stored 5 MB output."""
    insert_after(nb, "add", "check", code_cell("for _ in range(20_000):\n    print('y' * 1000)"))
    sol = cell(nb, "add", "solution")
    sol["outputs"] = [{"name": "stdout", "output_type": "stream", "text": ["z" * 5_000_000]}]
    sol["execution_count"] = 1


def stored_error_outputs(nb):
    """Outputs saved from an earlier failing run do not matter: the copy runs afresh."""
    chk = cell(nb, "add", "check")
    chk["outputs"] = [{"output_type": "error", "ename": "AssertionError", "evalue": "old",
                       "traceback": ["\x1b[31mold\x1b[0m"]}]
    chk["execution_count"] = 3


CASES = {
    "correct": (correct, 6),
    "partly_correct": (partly_correct, 1),
    "mistake_add": (mistake_add, 5),
    "mistake_grid": (mistake_grid, 4),
    "mistake_factor": (mistake_factor, 3),
    "tampered_checks": (tampered_checks, 0),
    "deleted_checks": (deleted_checks, 6),
    "deleted_wrong": (deleted_wrong, 4),
    "forged_exercise": (forged_exercise, 6),
    "infinite_loop": (infinite_loop, 4),
    "unstoppable_loop": (unstoppable_loop, 4),
    "os_exit": (os_exit, 4),
    "exit_call": (exit_call, 4),
    "crash_in_check": (crash_in_check, 4),
    "syntax_error": (syntax_error, 3),
    "huge_output": (huge_output, 6),
    "stored_error_outputs": (stored_error_outputs, 6),
}

# Files that are not notebooks: (file bytes, expected score)
BROKEN = {
    "corrupt_json": (b'{"cells": [{"cell_type": "code", "source": "x = 1"', 0),
    "not_a_notebook": (b'{"hello": "world"}\n', 0),
    "binary": (bytes(range(256)) * 4, 0),
}


class Written(NamedTuple):
    """A crafted submission on disk and the score it must get."""
    path: Path
    score: int


def write_cases(root: Path) -> dict[str, Written]:
    """Write every case as ``root/<case>/01_fixture.ipynb``; return {case: Written(path, score)}."""
    out = {}
    base = solution_nb()
    for name, (edit, score) in CASES.items():
        nb = copy.deepcopy(base)
        edit(nb)
        path = root / name / f"{ASSIGNMENT}.ipynb"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False), encoding="utf-8")
        out[name] = Written(path, score)
    for name, (data, score) in BROKEN.items():
        path = root / name / f"{ASSIGNMENT}.ipynb"
        path.parent.mkdir(parents=True)
        path.write_bytes(data)
        out[name] = Written(path, score)
    return out
