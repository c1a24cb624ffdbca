"""The caller's umask does not reach the sandbox: with 077 (or 027, common on shared clusters)
the files the grader staged were unreadable by the sandbox's own user, pytest could not open
``/grade/work/pytest.ini``, every notebook scored 0 ("pytest reported nothing") and the run
exited 0. The grader now makes the sandboxes' files under its own umask (``GRADER_UMASK``), and a
run in which no sandbox reported on any notebook is a grader failure (exit 1), not a graded class.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from _helpers import ROOT, run_grader
from grading import crafted


def _submission(tmp_path: Path) -> Path:
    sub = tmp_path / "submissions" / "alice"
    sub.mkdir(parents=True)
    shutil.copy(crafted.SOLUTIONS / f"{crafted.ASSIGNMENT}.ipynb", sub)
    return tmp_path / "submissions"


@pytest.mark.parametrize("mask", ["077", "027"])
def test_restrictive_umask_grades_full_marks(tmp_path, mask):
    subs, report = _submission(tmp_path), tmp_path / "report"
    proc = subprocess.run(["sh", "-c", f'umask {mask} && exec "$@"', "sh", sys.executable, "-m",
                           "dptlearn.course.grading.grade", str(subs), "--solutions",
                           str(crafted.SOLUTIONS), "--report-dir", str(report)],
                          cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads((report / f"{crafted.ASSIGNMENT}.json").read_text(encoding="utf-8"))
    assert (result["score"], result["max_score"]) == (crafted.MAX_SCORE, crafted.MAX_SCORE), result
    assert "reported nothing" not in proc.stdout
    # the report folder keeps the caller's umask: nothing in it readable by others
    mode = (report / f"{crafted.ASSIGNMENT}.json").stat().st_mode & 0o777
    assert mode & 0o007 == 0, oct(mode)


NET = """
import os, sys
from dptlearn.course.grading import grade, processes
processes.GRADER_UMASK = 0o077      # the bug back: the sandbox's user reads nothing staged
sys.exit(grade.main(sys.argv[1:]))
"""


def test_a_sandbox_that_reports_on_nothing_is_a_grader_failure(tmp_path):
    subs, report = _submission(tmp_path), tmp_path / "report"
    if os.geteuid() != 0:
        pytest.skip("the sandbox runs as the caller's own user when not root: no unreadable file")
    proc = subprocess.run([sys.executable, "-c", NET, str(subs), "--solutions",
                           str(crafted.SOLUTIONS), "--report-dir", str(report)],
                          cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "the sandbox failed for every notebook of this run" in proc.stderr
    assert "Permission denied" in proc.stderr           # the first sandbox's log, for the teacher
    assert not report.exists()                          # no report folder pretending to be grades


def test_a_class_with_some_reports_is_graded(tmp_path):
    """One notebook that pytest reported on is enough: a student's own failure stays theirs."""
    subs = _submission(tmp_path)
    broken = crafted.solution_nb()
    broken["cells"] = "not a list"
    (subs / "bob").mkdir()
    (subs / "bob" / f"{crafted.ASSIGNMENT}.ipynb").write_text(json.dumps(broken))
    proc = run_grader(str(subs), "--solutions", str(crafted.SOLUTIONS),
                      "--report-dir", str(tmp_path / "report"), cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "class total 6/12" in proc.stdout
