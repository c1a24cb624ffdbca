"""Grading benchmark (``make grade-bench``): a class of 30 full submissions, graded with --jobs 2.

Usage: python scripts/bench_grade.py [--students 30] [--jobs 2] [--solutions DIR]

Each student submits a copy of every solution notebook (``solutions/``, or the grader's test
fixture while ``solutions/`` is empty), so every exercise should score full marks. Prints the
wall time of the whole class, the time per student and per notebook, and exits 1 if any
submission lost points (a grader bug) or if the class took longer than the 5-minute target.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dptlearn import grade  # noqa: E402

FIXTURE = ROOT / "tests" / "grading" / "fixtures" / "solutions"
TARGET_S = 300


def pick_solutions(arg: Path | None) -> Path:
    if arg is not None:
        return arg
    repo = ROOT / "solutions"
    return repo if any(repo.glob("*.ipynb")) else FIXTURE


def make_class(solutions: Path, students: int, where: Path) -> list[str]:
    """``where/student_NN/<assignment>.ipynb`` for every student and solution notebook."""
    paths = []
    for i in range(students):
        folder = where / f"student_{i:02d}"
        folder.mkdir(parents=True)
        for nb in sorted(solutions.glob("*.ipynb")):
            shutil.copyfile(nb, folder / nb.name)
            paths.append(str(folder / nb.name))
    return paths


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--students", type=int, default=30)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--solutions", type=Path, default=None)
    p.add_argument("--timeout", type=float, default=grade.DEFAULT_TIMEOUT_S)
    args = p.parse_args()
    solutions = pick_solutions(args.solutions)
    with tempfile.TemporaryDirectory(prefix="dptlearn-grade-bench-") as tmp:
        subs = make_class(solutions, args.students, Path(tmp) / "class")
        opts = grade.Options(solutions, Path(tmp) / "report", args.timeout, None, args.jobs)
        t0 = time.perf_counter()
        results = grade.grade(subs, opts, progress=lambda _: None)
        wall = time.perf_counter() - t0
    lost = [r for r in results if r.score != r.max_score or r.error]
    per_nb = len(subs) // max(args.students, 1)
    print(f"solutions: {solutions} ({per_nb} notebook(s) per student)")
    print(f"machine:   {os.cpu_count()} CPU core(s), --jobs {args.jobs}")
    print(f"class of {args.students} students = {len(subs)} notebooks graded in {wall:.1f} s "
          f"(target < {TARGET_S} s)")
    print(f"per student: {wall / args.students:.2f} s wall; per notebook: {wall / len(subs):.2f} s "
          f"wall, {sum(r.duration_s for r in results) / len(results):.2f} s in its kernel")
    for r in lost:
        print(f"LOST POINTS: {r.submission}: {r.score}/{r.max_score} {r.error or ''}")
    return 1 if lost or wall > TARGET_S else 0


if __name__ == "__main__":
    sys.exit(main())
