"""Grading benchmark (``make grade-bench``): a class of 30 full submissions, graded with --jobs 2.

Usage: python scripts/bench_grade.py [--students 30] [--jobs 2] [--solutions DIR] [--cold]
                                     [--no-sandbox]

Each student submits a copy of every solution notebook (``solutions/``, or the grader's test
fixture while ``solutions/`` is empty), so every exercise should score full marks. Prints

* the wall time of the whole class, per student and per notebook;
* the CPU time (user + sys) of the grading, its whole process tree included (the sandboxes,
  pytest, the fork servers, the kernels, the judging), in total, per student and per notebook;
* whether the notebooks ran in bubblewrap sandboxes (one per student) or in the fallback;
* the load average, and the wall time an otherwise idle machine would need, estimated as
  CPU time / min(--jobs, cores) — the figure to trust when other processes share the machine;
* the verdict against the 5-minute target.

Exits 1 if any submission lost points (a grader bug) or if the class took longer than the
5-minute target (wall time). ``--cold`` grades without warm kernels and ``--no-sandbox`` without
bubblewrap, for comparison.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dptlearn.course.grading import grade, sandbox  # noqa: E402
from dptlearn.course.grading.settings import Settings  # noqa: E402

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


def cpu_seconds() -> float:
    """User + sys CPU of this process and of every waited-for descendant so far."""
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--students", type=int, default=30)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--solutions", type=Path, default=None)
    p.add_argument("--timeout", type=float, default=grade.DEFAULT_TIMEOUT_S)
    p.add_argument("--cold", action="store_true",
                   help="start every kernel from scratch (no warm-kernel server)")
    p.add_argument("--no-sandbox", dest="sandbox", action="store_false",
                   help="run the notebooks without bubblewrap (the grader's fallback)")
    args = p.parse_args()
    solutions = pick_solutions(args.solutions)
    cores = os.cpu_count() or 1
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="dptlearn-grade-bench-") as tmp:
        subs = make_class(solutions, args.students, Path(tmp) / "class")
        opts = Settings(solutions, Path(tmp) / "report", args.timeout, None, args.jobs,
                        warm_kernels=not args.cold, sandbox=args.sandbox)
        c0, t0 = cpu_seconds(), time.perf_counter()
        results = grade.grade(subs, opts, progress=lambda _: None)
        wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    load1 = os.getloadavg()[0]
    lost = [r for r in results if r.score != r.max_score or r.error]
    flagged = [r for r in results if any(e.flags for e in r.exercises)]
    problem = sandbox.bwrap_problem() if args.sandbox else "--no-sandbox"
    n, s = len(subs), max(args.students, 1)
    idle = cpu / min(args.jobs, cores)
    print(f"solutions: {solutions} ({n // s} notebook(s) per student)")
    print(f"machine:   {cores} CPU core(s), --jobs {args.jobs}, "
          f"{'cold' if args.cold else 'warm'} kernels, "
          f"load average {load0:.1f} before / {load1:.1f} after")
    print(f"sandbox:   {'bubblewrap, one per student' if problem is None else 'none: ' + problem}")
    print(f"class of {args.students} students = {n} notebooks:")
    print(f"  wall {wall:7.1f} s   ({wall / s:.2f} s per student, {wall / n:.2f} s per notebook)")
    print(f"  CPU  {cpu:7.1f} s   ({cpu / s:.2f} s per student, {cpu / n:.2f} s per notebook; "
          f"user+sys, all processes)")
    print(f"  idle-machine estimate: {idle:.1f} s (CPU / {min(args.jobs, cores)} busy cores)")
    in_kernel = sum(r.duration_s for r in results) / max(len(results), 1)
    print(f"  in-kernel time per notebook: {in_kernel:.2f} s (pytest's cell times)")
    for r in lost:
        print(f"LOST POINTS: {r.submission}: {r.score}/{r.max_score} {r.error or ''}")
    for r in flagged:
        print(f"FLAGGED: {r.submission}: {[(e.id, e.flags) for e in r.exercises if e.flags]}")
    ok = not lost and not flagged and wall <= TARGET_S
    verdict = "PASS" if ok else "FAIL"
    note = ""
    if wall > TARGET_S and idle <= TARGET_S:
        note = (f" (the machine was busy: the CPU time says an idle machine would take "
                f"{idle:.0f} s)")
    print(f"verdict: {verdict}: {wall:.1f} s wall against the {TARGET_S} s target{note}"
          + (f"; {len(lost)} submission(s) lost points" if lost else "")
          + (f"; {len(flagged)} honest submission(s) flagged" if flagged else ""))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
