"""Handouts (``dptlearn-make-exercises --hints K``): no hint, card or note gives a solution line (#23).

For every exercise of ``solutions/`` and K in 0, 1, 2, the generated handout is searched for the
exercise's solution lines (comment and whitespace stripped, anywhere in the notebook) and for its
key expressions (on its own card): see tests/_leaks.py for what counts.
"""
from __future__ import annotations

import json

import pytest

from dptlearn.course import exercises
from dptlearn.course.exercises import source_of, tags_of

import _leaks

from _helpers import ROOT

ASSIGNMENTS = exercises.read_assignments(ROOT / "solutions", ROOT / "notebooks")


def handout(a, hints):
    return exercises.make_exercise_notebook(a, hints)


def cards(nb):
    return {next(t[3:] for t in tags_of(c) if t.startswith("ex:")): source_of(c)
            for c in nb["cells"] if "exercise" in tags_of(c)}


@pytest.mark.parametrize("hints", [0, 1, 2])
@pytest.mark.parametrize("a", ASSIGNMENTS, ids=lambda a: a.name)
def test_no_solution_line_in_a_handout(a, hints):
    nb = handout(a, hints)
    whole = "\n".join(source_of(c) for c in nb["cells"])
    card = cards(nb)
    given = _leaks.exercise_given(a.nb)          # find the bug: the handed-out code is the exercise
    found = {ex: _leaks.leaks("\n".join(code), whole, card[ex], given.get(ex, ""))
             for ex, code in _leaks.exercise_solutions(a.nb).items()}
    found = {ex: f for ex, f in found.items() if f}
    assert not found, f"{a.name} with --hints {hints} gives solution code away: {found}"
    for ex, code in given.items():               # ... and its fix is a line that the handout lacks
        assert _leaks.fix_of("\n".join(_leaks.exercise_solutions(a.nb)[ex]), code)[0], (a.name, ex)


@pytest.mark.parametrize("a", ASSIGNMENTS, ids=lambda a: a.name)
def test_handout_keeps_k_rungs_and_valid_nesting(a):
    full = cards(handout(a, None))
    for k in (0, 1, 2):
        for ex, text in cards(handout(a, k)).items():
            rungs = min(k, full[ex].count("<summary>Hint"))
            assert text.count("<summary>Hint") == rungs, (a.name, ex, k)
            assert text.count("<details>") == text.count("</details>") == rungs, (a.name, ex, k)
            assert (k == 0) == (exercises.NO_HINTS in text), (a.name, ex, k)


@pytest.mark.parametrize("a", ASSIGNMENTS, ids=lambda a: a.name)
def test_rungs_beyond_two_are_marked_self_study(a):
    """A rung that a K <= 2 handout drops may show code, and its label says so."""
    for ex, text in cards(handout(a, None)).items():
        for n in range(3, 10):
            if f"<summary>Hint {n}" in text:
                assert f"<summary>Hint {n} (self-study" in text, (a.name, ex, n)


def test_the_leak_test_catches_a_key_line():
    """The normalisation would have caught the old ladders' last rungs (issue #23's examples)."""
    code = "    L = dec_depth\n    return [0, 2 * L // 4, 3 * L // 4, L]  # hooks\n"
    assert _leaks.leaks(code, "", "Hint 3: `3 * L // 4`, multiply first")
    assert _leaks.leaks(code, "return [0, 2*L//4, 3*L//4, L]", "")
    assert not _leaks.leaks(code, "", "three quarters of the blocks, rounded down")
    assert _leaks.leaks('    x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)\n',
                        "", "`F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=True)`")


def test_default_is_unchanged_and_hints_need_their_own_folder(tmp_path, capsys):
    """Without --hints the output is exercises/ byte for byte; --hints refuses exercises/."""
    exercises.generate(ROOT / "solutions", tmp_path / "full", ROOT / "notebooks")
    for path in sorted((ROOT / "exercises").glob("*.ipynb")):
        assert (tmp_path / "full" / path.name).read_bytes() == path.read_bytes(), path.name
    with pytest.raises(SystemExit):
        exercises.main(["--hints", "1", "--out", str(ROOT / "exercises")])
    assert "its own --out" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        exercises.main(["--hints", "-1", "--out", str(tmp_path / "h")])
    assert exercises.main(["--hints", "1", "--out", str(tmp_path / "h1")]) == 0
    h1 = json.loads((tmp_path / "h1" / "01_tokens_and_hooks.ipynb").read_text(encoding="utf-8"))
    assert all(t.count("<summary>Hint") <= 1 for t in cards(h1).values())
