"""The learner's folder my-work/: made from exercises/ on first use, never overwritten, ignored by git."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from dptlearn.course.workspace import WORK_DIR, ensure_workspace

from _helpers import ROOT


def course(tmp_path: Path, names=("01_a", "02_b")) -> Path:
    (tmp_path / "exercises").mkdir()
    for n in names:
        (tmp_path / "exercises" / f"{n}.ipynb").write_text(f'{{"stub": "{n}"}}')
    return tmp_path


def test_first_use_copies_every_exercise(tmp_path):
    root = course(tmp_path)
    copied = ensure_workspace(root)
    assert [p.name for p in copied] == ["01_a.ipynb", "02_b.ipynb"]
    assert (root / WORK_DIR / "01_a.ipynb").read_text() == '{"stub": "01_a"}'


def test_answers_are_never_overwritten_and_new_notebooks_arrive(tmp_path):
    root = course(tmp_path)
    ensure_workspace(root)
    mine = root / WORK_DIR / "01_a.ipynb"
    mine.write_text('{"answer": "mine"}')
    (root / "exercises" / "01_a.ipynb").write_text('{"stub": "updated upstream"}')
    (root / "exercises" / "03_c.ipynb").write_text('{"stub": "03_c"}')
    assert [p.name for p in ensure_workspace(root)] == ["03_c.ipynb"]
    assert mine.read_text() == '{"answer": "mine"}'
    assert sorted(p.name for p in (root / WORK_DIR).iterdir()) == ["01_a.ipynb", "02_b.ipynb", "03_c.ipynb"]


def test_command_line_says_where_the_work_is(tmp_path):
    root = course(tmp_path)
    run = [sys.executable, "-m", "dptlearn.course.workspace", "--root", str(root)]
    first = subprocess.run(run, capture_output=True, text=True, check=True).stdout
    again = subprocess.run(run, capture_output=True, text=True, check=True).stdout
    assert "2 exercise notebook(s) copied" in first and "already has every exercise" in again
    bad = subprocess.run([sys.executable, "-m", "dptlearn.course.workspace", "--root", str(tmp_path / "x")],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "no exercises/ folder" in bad.stderr


def test_git_ignores_the_learners_folder():
    out = subprocess.run(["git", "check-ignore", "-q", f"{WORK_DIR}/02_rearrange.ipynb"], cwd=ROOT)
    assert out.returncode == 0


def test_make_lab_and_make_my_work_create_it_and_no_target_writes_into_it():
    lab = (ROOT / "scripts" / "lab.sh").read_text()
    assert "dptlearn.course.workspace" in lab
    makefile = (ROOT / "Makefile").read_text()
    assert "dptlearn.course.workspace" in makefile
    # no make target names my-work/ as an output or removes it
    assert "rm -rf my-work" not in makefile and "my-work/" not in makefile.replace("--root", "")
