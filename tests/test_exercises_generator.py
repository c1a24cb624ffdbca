"""Tests of the exercise generator (dptlearn.exercises): stubs, validation, determinism, drift."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from dptlearn.course import exercises
from dptlearn.course.exercises import BEGIN, END, SourceError

from _helpers import ROOT, code_cell as code, markdown_cell as md

from grading import crafted

INTRO = ("### Exercise `{id}`\n\n**Difficulty:** ★☆☆ · **Time:** ~5 min · **Points:** {pts}\n\n"
         "<details><summary>Hint 1</summary>\n\nTry.\n</details>")


def exercise(ex: str, solution: str, pts: int = 2, check: str | None = None) -> list[dict]:
    """The three cells of a well-formed exercise."""
    return [md(INTRO.format(id=ex, pts=pts), [f"ex:{ex}", "exercise", "lecture:01_intro"]),
            code(solution, [f"ex:{ex}", "solution"]),
            code(check or f"checks.check_{ex}(x)", [f"ex:{ex}", "check", f"points:{pts}"])]


def notebook(cells: list[dict], minor: int = 5) -> dict:
    return {"cells": cells, "metadata": {"kernelspec": {"name": "python3"}},
            "nbformat": 4, "nbformat_minor": minor}


def write(folder: Path, name: str, nb: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.ipynb"
    path.write_text(json.dumps(nb), encoding="utf-8")
    return path


def generated(tmp_path: Path, nb: dict, name: str = "02_demo") -> dict:
    """Generate the exercise version of ``nb``; return it as JSON."""
    write(tmp_path / "solutions", name, nb)
    exercises.generate(tmp_path / "solutions", tmp_path / "exercises", crafted.LECTURES)
    return json.loads((tmp_path / "exercises" / f"{name}.ipynb").read_text(encoding="utf-8"))


def sources(nb: dict) -> list[str]:
    return ["".join(c["source"]) for c in nb["cells"]]


# ----------------------------------------------------------------------------- stubs

def test_fixture_exercises_hide_every_solution(tmp_path):
    nb = generated(tmp_path, crafted.solution_nb(), crafted.ASSIGNMENT)
    text = "\n".join(sources(nb))
    for secret in ("return a + b", "range(nh)]", "return patch_size / stride",
                   "Because the patch embedding", "SOLUTION", "print(to_grid"):
        assert secret not in text
    assert text.count("raise NotImplementedError(") == 3
    assert ('    raise NotImplementedError("Exercise grid: replace this stub with your code'
            ' — see notebooks/01_intro.ipynb")') in text
    assert nb["metadata"]["dptlearn"]["assignment"] == crafted.ASSIGNMENT


def test_outputs_cleared_and_check_cells_locked(tmp_path):
    cells = exercise("a", f"x = 1\n{BEGIN}\ny = 2\n{END}")
    cells[1]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "hi"}]
    cells[1]["execution_count"] = 3
    cells[2]["metadata"]["collapsed"] = True
    nb = generated(tmp_path, notebook(cells))
    for c in nb["cells"]:
        if c["cell_type"] == "code":
            assert c["outputs"] == [] and c["execution_count"] is None
    check = nb["cells"][2]["metadata"]
    assert check == {"deletable": False, "editable": False, "tags": ["ex:a", "check", "points:2"]}


def test_stub_keeps_indentation_and_surrounding_code(tmp_path):
    solution = (f"import math\n{BEGIN}\nTOP = 1\n{END}\n"
                f"class A:\n    def f(self, x):\n        y = x\n        {BEGIN}\n"
                f"        y = y + 1\n\n        y *= 2\n        {END}\n        return y\n")
    nb = generated(tmp_path, notebook(exercise("ind", solution)))
    stubbed = sources(nb)[1]
    assert stubbed.splitlines() == [
        "import math",
        "# YOUR CODE HERE",
        'raise NotImplementedError("Exercise ind: replace this stub with your code'
        ' — see notebooks/01_intro.ipynb")',
        "class A:",
        "    def f(self, x):",
        "        y = x",
        "        # YOUR CODE HERE",
        '        raise NotImplementedError("Exercise ind: replace this stub with your code'
        ' — see notebooks/01_intro.ipynb")',
        "        return y",
    ]
    compile(stubbed, "<stub>", "exec")
    with pytest.raises(NotImplementedError, match="Exercise ind: .* notebooks/01_intro.ipynb"):
        exec(stubbed, {})


def test_lecture_from_notebook_metadata(tmp_path):
    cells = exercise("m", f"{BEGIN}\npass\n{END}")
    cells[0]["metadata"]["tags"].remove("lecture:01_intro")
    nb = notebook(cells)
    nb["metadata"]["dptlearn"] = {"lecture": "01_intro"}
    out = generated(tmp_path, nb)
    assert "see notebooks/01_intro.ipynb" in sources(out)[1]


# ----------------------------------------------------------------------------- determinism & drift

def test_output_is_deterministic_and_check_mode_detects_drift(tmp_path):
    shutil.copytree(crafted.SOLUTIONS, tmp_path / "solutions")
    out = tmp_path / "exercises"
    args = ["--solutions", str(tmp_path / "solutions"), "--out", str(out),
            "--lectures", str(crafted.LECTURES)]
    assert exercises.main(args) == 0
    first = (out / "01_fixture.ipynb").read_bytes()
    assert exercises.main(args) == 0
    assert (out / "01_fixture.ipynb").read_bytes() == first
    assert exercises.main(args + ["--check"]) == 0
    assert not any(p.name.endswith(".tmp") for p in out.iterdir())

    (out / "01_fixture.ipynb").write_bytes(first.replace(b"YOUR CODE HERE", b"your code here"))
    (out / "99_stale.ipynb").write_text("{}")
    assert exercises.generate(tmp_path / "solutions", out, crafted.LECTURES, check=True) == \
        [out / "01_fixture.ipynb", out / "99_stale.ipynb"]
    assert exercises.main(args + ["--check"]) == 1           # and nothing was rewritten
    assert (out / "99_stale.ipynb").exists()
    assert exercises.main(args + ["--force"]) == 0           # hand edits: only --force replaces them
    assert (out / "01_fixture.ipynb").read_bytes() == first and not (out / "99_stale.ipynb").exists()


def test_regenerating_refuses_to_overwrite_an_answer_and_names_the_file(tmp_path, capsys):
    shutil.copytree(crafted.SOLUTIONS, tmp_path / "solutions")
    out = tmp_path / "exercises"
    args = ["--solutions", str(tmp_path / "solutions"), "--out", str(out), "--lectures", str(crafted.LECTURES)]
    assert exercises.main(args) == 0
    nb = out / "01_fixture.ipynb"
    answered = nb.read_bytes().replace(b"# YOUR CODE HERE", b"return a + b  # my answer")
    nb.write_bytes(answered)
    src = tmp_path / "solutions" / "01_fixture.ipynb"         # the course changes upstream
    src.write_text(src.read_text().replace("Return a + b.", "Return the sum."))
    assert exercises.main(args) == 1
    err = capsys.readouterr().err
    assert str(nb) in err and "my-work/" in err and "--force" in err
    assert nb.read_bytes() == answered                        # the answer is still there, byte for byte
    assert exercises.main(args) == 1                          # and stays refused


def test_regenerating_untouched_notebooks_needs_no_force(tmp_path):
    shutil.copytree(crafted.SOLUTIONS, tmp_path / "solutions")
    out = tmp_path / "exercises"
    exercises.generate(tmp_path / "solutions", out, crafted.LECTURES)
    src = tmp_path / "solutions" / "01_fixture.ipynb"
    src.write_text(src.read_text().replace("Return a + b.", "Return the sum."))
    assert exercises.generate(tmp_path / "solutions", out, crafted.LECTURES) == [out / "01_fixture.ipynb"]
    assert "Return the sum." in (out / "01_fixture.ipynb").read_text()


def test_the_committed_manifest_matches_the_committed_exercises():
    root = ROOT
    assert exercises.edited_since_generated(root / "exercises", [p.name for p in (root / "exercises").glob("*.ipynb")]) == []


def test_check_mode_notices_a_changed_solution(tmp_path, capsys):
    shutil.copytree(crafted.SOLUTIONS, tmp_path / "solutions")
    out = tmp_path / "exercises"
    exercises.generate(tmp_path / "solutions", out, crafted.LECTURES)
    src = tmp_path / "solutions" / "01_fixture.ipynb"
    src.write_text(src.read_text().replace("Return a + b.", "Return the sum."))
    rc = exercises.main(["--solutions", str(tmp_path / "solutions"), "--out", str(out),
                         "--lectures", str(crafted.LECTURES), "--check"])
    assert rc == 1 and f"differs: {out / '01_fixture.ipynb'}" in capsys.readouterr().out


def test_cell_ids_are_kept_or_derived_deterministically(tmp_path):
    cells = exercise("i", f"{BEGIN}\npass\n{END}")
    cells[0]["id"] = "intro-cell"
    a = generated(tmp_path / "a", notebook(cells))
    b = generated(tmp_path / "b", notebook(cells))
    assert a == b and a["cells"][0]["id"] == "intro-cell" and all("id" in c for c in a["cells"])
    old = generated(tmp_path / "c", notebook(cells, minor=4))
    assert all("id" not in c for c in old["cells"])


# ----------------------------------------------------------------------------- validation

def problems(tmp_path: Path, cells: list[dict], lectures=crafted.LECTURES) -> str:
    path = write(tmp_path / "solutions", "05_bad", notebook(cells))
    with pytest.raises(SourceError) as err:
        exercises.read_assignment(path, lectures)
    return str(err.value)


@pytest.mark.parametrize("solution, expected", [
    (f"{BEGIN}\nx = 1", f"cell 1: line 1: '{BEGIN}' is never closed by '{END}'"),
    (f"x = 1\n{END}", f"cell 1: line 2: '{END}' without a matching '{BEGIN}'"),
    (f"{BEGIN}\n{BEGIN}\n{END}", f"cell 1: line 2: '{BEGIN}' inside the region opened on line 1"),
    (f"## BEGIN SOLUTION\nx = 1\n{END}", "cell 1: line 1: malformed marker '## BEGIN SOLUTION'"),
])
def test_unbalanced_or_malformed_markers(tmp_path, solution, expected):
    msg = problems(tmp_path, exercise("u", solution))
    assert f"05_bad.ipynb: {expected}" in msg


def test_check_cell_without_points(tmp_path):
    cells = exercise("p", f"{BEGIN}\npass\n{END}")
    cells[2]["metadata"]["tags"] = ["ex:p", "check"]
    assert "05_bad.ipynb: cell 2: check cell of exercise 'p' has no 'points:<n>' tag" in \
        problems(tmp_path, cells)


def test_bad_points_and_intro_mismatch(tmp_path):
    cells = exercise("p", f"{BEGIN}\npass\n{END}", pts=2)
    cells[2]["metadata"]["tags"] = ["ex:p", "check", "points:3"]
    msg = problems(tmp_path, cells)
    assert "the intro cell says **Points:** 2 but the check cell is tagged points:3" in msg
    cells[2]["metadata"]["tags"] = ["ex:p", "check", "points:two"]
    assert "expected one tag 'points:<n>' with n a positive integer, got ['points:two']" in \
        problems(tmp_path, cells)


def test_duplicate_ids_in_one_notebook(tmp_path):
    cells = exercise("d", f"{BEGIN}\npass\n{END}") + exercise("d", f"{BEGIN}\npass\n{END}")
    msg = problems(tmp_path, cells)
    assert "cell 5: duplicate check cell for exercise 'd' (the first is cell 2)" in msg
    assert "expected exactly one Markdown cell tagged 'exercise', got 2" in msg


def test_duplicate_ids_across_notebooks(tmp_path):
    write(tmp_path / "solutions", "01_a", notebook(exercise("same", f"{BEGIN}\npass\n{END}")))
    write(tmp_path / "solutions", "02_b", notebook(exercise("same", f"{BEGIN}\npass\n{END}")))
    with pytest.raises(SourceError, match=r"02_b.ipynb: exercise id 'same' is already used in "
                                          r".*01_a.ipynb"):
        exercises.read_assignments(tmp_path / "solutions")


@pytest.mark.parametrize("edit, expected", [
    (lambda c: c[1]["metadata"]["tags"].remove("solution"), f"has '{BEGIN}' but no 'solution' tag"),
    (lambda c: c[2]["metadata"]["tags"].remove("ex:x"), "tagged ['check'] but has no 'ex:<id>' tag"),
    (lambda c: c.__setitem__(2, code("assert x == 1", ["ex:x", "check", "points:2"])),
     "a check cell must call dptlearn.checks.<name>(...)"),
    (lambda c: c[0]["metadata"]["tags"].remove("lecture:01_intro"), "no lecture to point to"),
    (lambda c: c[0]["metadata"]["tags"].append("lecture:99_nowhere"),
     "points to lecture '99_nowhere', but"),
    (lambda c: c.__setitem__(0, md("### Exercise x", ["ex:x", "exercise"])),
     "the intro cell lacks '**Difficulty:**'"),
    (lambda c: c.reverse(), "the check cell (cell 0) must come after the exercise's solution"),
    (lambda c: c.pop(2), "exercise 'x': no cell tagged 'check'"),
    (lambda c: c[1].__setitem__("source", ["x = 1"]), "a 'solution' cell must be code with a"),
])
def test_convention_errors_name_the_cell(tmp_path, edit, expected):
    cells = exercise("x", f"{BEGIN}\npass\n{END}")
    edit(cells)
    assert expected in problems(tmp_path, cells)


def test_main_reports_source_errors(tmp_path, capsys):
    write(tmp_path / "solutions", "05_bad", notebook(exercise("u", f"{BEGIN}\nx = 1")))
    rc = exercises.main(["--solutions", str(tmp_path / "solutions"),
                         "--out", str(tmp_path / "out"), "--lectures", ""])
    err = capsys.readouterr().err
    assert rc == 1 and "05_bad.ipynb: cell 1: line 1:" in err and not (tmp_path / "out").exists()


def test_not_a_notebook_is_a_clear_error(tmp_path):
    (tmp_path / "solutions").mkdir()
    (tmp_path / "solutions" / "x.ipynb").write_text("[1, 2]")
    with pytest.raises(SourceError, match=r"x.ipynb: not a notebook: expected a JSON object"):
        exercises.read_assignments(tmp_path / "solutions")
