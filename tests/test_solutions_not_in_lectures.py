"""No graded exercise is a near copy of a lecture cell (issue #23 item 2).

Each solution region of each exercise is compared with every code cell of every lecture, and with
every function defined in one, two ways (tests/_leaks.py):

- structure: names, attributes, arguments and constants renamed by first appearance, docstrings
  dropped, receivers dropped (``mine.f``, ``self.f`` and ``f`` alike), then unparsed; a token-sequence
  similarity of NEAR or more is a copy with other names. Regions under MIN_TOKENS tokens (one slice,
  one rearrange) are skipped: there the lecture teaching the operation is the point;
- glue: the sequence of functions the region calls, in source order. Assembly code is mostly calls,
  and a capstone forward that calls the lecture's stages in the lecture's order (with the learner's
  parts swapped in) is a copy however its lines are written: GLUE or more on at least MIN_CALLS calls.
"""
from __future__ import annotations

import ast
import difflib
import json

import pytest

from dptlearn.course import exercises

import _leaks

from _helpers import ROOT

NEAR, MIN_TOKENS = 0.8, 20
GLUE, MIN_CALLS = 0.7, 5
ASSIGNMENTS = exercises.read_assignments(ROOT / "solutions", ROOT / "notebooks")


def lecture_pieces() -> list[tuple[str, int, list[str], list[str]]]:
    """(lecture, cell, structure tokens, calls) for every code cell and every function in one."""
    out = []
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = json.loads(path.read_text(encoding="utf-8"))
        for i, cell in enumerate(nb["cells"]):
            if cell["cell_type"] != "code":
                continue
            src = "".join(cell["source"])
            try:
                tree = ast.parse(src)
            except SyntaxError:
                continue
            pieces = [src] + [ast.get_source_segment(src, n) for n in ast.walk(tree)
                              if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
            for piece in pieces:
                for u in _leaks.units(piece):
                    out.append((path.stem, i, _leaks.tokens(u), _leaks.calls(piece)))
    return out


LECTURES = lecture_pieces()
REGIONS = [(a.name, ex, k, code) for a in ASSIGNMENTS
           for ex, regions in _leaks.exercise_solutions(a.nb).items() for k, code in enumerate(regions)]


def near_copies(code: str, lectures=None) -> list[str]:
    found = []
    called = _leaks.calls(code)
    for u in _leaks.units(code):
        toks = _leaks.tokens(u)
        for stem, i, ltoks, lcalls in lectures or LECTURES:
            if len(toks) >= MIN_TOKENS and _leaks.similarity(toks, ltoks) >= NEAR:
                found.append(f"{stem} cell {i} (same structure)")
            if len(called) >= MIN_CALLS and difflib.SequenceMatcher(None, called, lcalls).ratio() >= GLUE:
                found.append(f"{stem} cell {i} (same calls in the same order)")
    return sorted(set(found))


@pytest.mark.parametrize("name,ex,k,code", REGIONS, ids=[f"{e}-{k}" for _, e, k, _ in REGIONS])
def test_no_solution_is_a_near_copy_of_a_lecture_cell(name, ex, k, code):
    near = near_copies(code)
    assert not near, f"{name}: exercise {ex} (solution region {k}) is a near copy of lecture code: {near}"


FORWARD = """def forward_from_stages(head, tokens, image_size):
    dpt = head.dpt
    nh, nw = patch_grid(image_size, dpt.patch_size)
    grids = [tokens_to_grid(tokens[h], nh, nw) for h in dpt.hooks]
    levels = dpt.reassemble(grids)
    path = fuse_pyramid(levels, dpt.fusion)
    raw = dpt.head(path)
    return postprocess(raw, head.depth_mode, head.conf_mode)
"""


def test_the_comparison_catches_the_old_lecture_06_forward():
    """Lecture 06 had this function; the capstone's forward, with the learner's parts, is flagged by it."""
    lecture = [("06_old", 16, _leaks.tokens(u), _leaks.calls(FORWARD)) for u in _leaks.units(FORWARD)]
    forward = next(code for _, ex, k, code in REGIONS if ex == "MyDUSt3RHead" and k == 1)
    assert near_copies(forward, lecture)
    renamed = FORWARD.replace("grids", "g").replace("levels", "lv").replace("path", "p").replace("dpt", "m")
    assert near_copies(renamed, lecture)


def test_the_comparison_passes_unrelated_code():
    other = "def g(x):\n    return [t for t in x if t]\n"
    assert not near_copies(other)
