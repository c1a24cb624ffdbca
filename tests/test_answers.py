"""Loading a learner's answers from a sibling notebook (the capstone's way to run the learner's head)."""
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from dptlearn.course.answers import MissingAnswers, load_answers

from _helpers import ROOT, code_cell as code, markdown_cell


def write_nb(folder: Path, name: str, cells, assignment=None) -> Path:
    meta = {"dptlearn": {"assignment": assignment}} if assignment else {}
    path = folder / f"{name}.ipynb"
    path.write_text(json.dumps({"cells": cells, "metadata": meta, "nbformat": 4, "nbformat_minor": 5}))
    return path


def test_runs_code_cells_but_not_checks_and_returns_the_learners_names(tmp_path):
    write_nb(tmp_path, "02_rearrange", [
        code("import math\n%matplotlib inline\nSCALE = 2"),
        code("def double(x):\n    return SCALE * x", ["ex:double", "solution"]),
        code("raise AssertionError('a check must not run here')", ["ex:double", "check"]),
        code("print('noise')\nHELPER = double(21)"),
        markdown_cell("text"),
    ], assignment="02_rearrange")
    mine = load_answers("02_rearrange", tmp_path)
    assert mine.double(4) == 8 and mine.HELPER == 42 and mine.failed == []


def test_a_failing_cell_is_skipped_and_named_when_its_name_is_asked_for(tmp_path):
    write_nb(tmp_path, "03_reassemble", [
        code("def branch():\n    return 1"),
        code("class Reassemble:\n    x = undefined_name", ["ex:Reassemble", "solution"]),
    ])
    mine = load_answers("03_reassemble", tmp_path)
    assert mine.branch() == 1
    with pytest.raises(MissingAnswers, match=r"defines no `Reassemble`.*cell 1: NameError"):
        mine.Reassemble


def test_found_by_metadata_or_by_an_lms_file_name(tmp_path):
    write_nb(tmp_path, "renamed by me", [code("A = 1")], assignment="04_refinenet_fusion")
    write_nb(tmp_path, "doe_123_456_05_head_and_postprocess", [code("B = 2")])
    assert load_answers("04_refinenet_fusion", tmp_path).A == 1
    assert load_answers("05_head_and_postprocess", tmp_path).B == 2
    # the grader's rule (course.lms), not a looser one: Canvas's re-submission suffix and Moodle's prefix match,
    # a name that merely ends with the assignment's does not
    write_nb(tmp_path, "doejane_LATE_12_345_03_reassemble-1", [code("C = 3")])
    write_nb(tmp_path, "Jane Doe_77_assignsubmission_file_02_rearrange", [code("D = 4")])
    write_nb(tmp_path, "old_01_tokens_and_hooks", [code("E = 5")])
    assert load_answers("03_reassemble", tmp_path).C == 3
    assert load_answers("02_rearrange", tmp_path).D == 4
    with pytest.raises(MissingAnswers, match="not there"):
        load_answers("01_tokens_and_hooks", tmp_path)


@pytest.mark.parametrize("filename, assignment, expected", [
    ("03_reassemble.ipynb", "03_reassemble", True),
    ("03_reassemble-alice.ipynb", "03_reassemble", True),
    ("doejane_12_345_03_reassemble-1.ipynb", "03_reassemble", True),
    ("Jane Doe_77_assignsubmission_file_03_reassemble.ipynb", "03_reassemble", True),
    ("doejane_12_345_03_reassemble-1.ipynb", "02_rearrange", False),
    ("my_03_reassemble.ipynb", "03_reassemble", False),
    ("reassemble.ipynb", "03_reassemble", False),
])
def test_the_grader_and_the_answers_read_file_names_alike(filename, assignment, expected):
    from dptlearn.course.grading.submissions import find_assignment
    from dptlearn.course.lms import names_assignment
    assert names_assignment(filename, assignment) is expected
    found = find_assignment({}, Path(filename), [SimpleNamespace(name=assignment)])  # no metadata: by file name
    assert (found is not None) is expected


def test_a_lone_notebook_says_its_siblings_are_missing(tmp_path):
    with pytest.raises(MissingAnswers, match=r"needs your answers from 01_tokens_and_hooks.ipynb in the same folder"):
        load_answers("01_tokens_and_hooks", tmp_path)


def test_two_candidates_are_an_error_not_a_guess(tmp_path):
    write_nb(tmp_path, "02_rearrange", [code("A = 1")])
    write_nb(tmp_path, "copy", [code("A = 2")], assignment="02_rearrange")
    write_nb(tmp_path, "x", [code("A = 3")], assignment="other")
    # metadata wins over the file name: one match by metadata, so no ambiguity
    assert load_answers("02_rearrange", tmp_path).A == 2
    write_nb(tmp_path, "copy2", [code("A = 4")], assignment="02_rearrange")
    with pytest.raises(MissingAnswers, match="several notebooks"):
        load_answers("02_rearrange", tmp_path)


def test_the_shipped_exercises_load_and_their_stubs_raise(tmp_path):
    mine = load_answers("02_rearrange", ROOT / "exercises")
    with pytest.raises(NotImplementedError):
        mine.tokens_to_grid(None, 1, 1)


def test_figures_the_cells_draw_are_neither_shown_nor_kept(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    own = plt.figure()                          # the calling notebook's own figure stays open
    show = plt.show
    write_nb(tmp_path, "05_head_and_postprocess", [
        code("import matplotlib.pyplot as plt\nfig = plt.figure()\nplt.show()\nREAL_SHOW = plt.show.__name__ == 'show'")])
    mine = load_answers("05_head_and_postprocess", tmp_path)
    assert mine.failed == [] and mine.REAL_SHOW is False      # plt.show did nothing while the cells ran
    assert plt.show is show and plt.get_fignums() == [own.number]
    plt.close(own)
