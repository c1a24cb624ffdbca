"""Grade submitted exercise notebooks: sandboxed runs, trusted verdicts (``dptlearn-grade``).

Usage::

    dptlearn-grade SUBMISSION.ipynb|FOLDER ... [--report-dir DIR] [--jobs N]
                   [--device cpu|cuda] [--solutions DIR] [--timeout SECONDS]
                   [--no-warm-kernels] [--shard K/N] [--no-sandbox]
                   [--student-limit SECONDS]
    dptlearn-grade merge DIR ... --report-dir OUT

For each submission the grader

1. reads it without ever writing to it, and gives a zero with a clear message when it is not
   a notebook;
2. finds its student (``submissions.py``) and its assignment among ``--solutions``
   (``metadata.dptlearn.assignment``, else the file name);
3. prepares the copy that runs: outputs cleared, every check cell replaced by a probe cell that
   records the answer on inputs the grader chose with a secret seed (``staging.py``,
   ``checkcells.py``, ``judge.py``);
4. runs all of one student's notebooks in one bubblewrap sandbox (``processes.py``,
   ``sandbox.py``, ``limits.py``) with ``pytest --nbval-lax`` and the grading plugin (the
   ``sandboxed/`` package: ``plugin.py``, warm kernels: ``warm.py``), against a view of dptlearn
   without its reference (``view.py``);
5. judges each recorded answer outside the sandbox, read without trusting it (``untrusted.py``):
   an exercise earns its points iff its Check passes on the answer (``scoring.py``); the report
   flags tampered check cells and copies of the reference (``integrity.py``).

Reports go to ``--report-dir`` (default ``./grading-report``; ``report.py``, ``reportdir.py``).
One submission's files cost that submission only: what is not a regular file is refused
(``files.py``), and an exception of the grader's own code while reading, staging, running,
scoring or reporting one submission refuses that one (``staging.grader_error``). Every string
from a submission is made safe on entry (``safetext.py``). The exit status is 0 when every
submission was graded, whatever the scores; 3 when some were refused (the last line names them);
2 for usage errors; 1 for a grader failure (a bug, or a sandbox that reported on no
notebook of the run). The rules are in docs/grading-security.md.
"""
from __future__ import annotations

import argparse
import errno
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

from ..exercises import Assignment, SourceError, read_assignments, repo_root
from . import safetext
from .files import hard_link_notes
from .classfiles import write_class_files
from .report import Result, pending_points, write_partial_junit, write_result
from .merging import main as merge_main
from .reportnames import carry_students
from .reportdir import (ReportDirError, fresh_report_dir, refused_status, run_manifest,
                        write_manifest)
from .processes import SandboxFailure, grade_all
from .secret import Seeds, SecretError
from .settings import DEFAULT_TIMEOUT_S, STUDENT_LIMIT_S, Settings
from .staging import grader_error
from .submissions import assign_students, expand_submissions, in_shard, parse_shard, report_names

# How a file system refuses a name: too long; not in its encoding; invalid there (vfat, SMB, Windows).
REFUSED_NAME = (errno.ENAMETOOLONG, errno.EILSEQ, errno.EINVAL)


# ----------------------------------------------------------------------------- CLI

def default_solutions() -> Path:
    return repo_root() / "solutions"


def parse_args(argv: list[str] | None) -> tuple[list[str], Settings]:
    p = argparse.ArgumentParser(prog="dptlearn-grade",
                                description="Grade exercise notebooks (see docs/teaching.md).")
    p.add_argument("submissions", nargs="+", metavar="SUBMISSION",
                   help="submitted .ipynb files, or folders searched for them")
    p.add_argument("--report-dir", type=Path, default=Path("grading-report"),
                   help="where reports go (default: %(default)s)")
    p.add_argument("--jobs", "-j", type=int, default=1,
                   help="students graded in parallel: one sandbox per student runs all of that "
                        "student's notebooks (default: %(default)s)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="sets DPTLEARN_DEVICE for the notebooks (default: unset)")
    p.add_argument("--solutions", type=Path, default=None,
                   help="folder of solution notebooks (default: the repository's solutions/)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                   help="per-cell time limit in seconds (default: %(default)s)")
    p.add_argument("--student-limit", type=float, default=STUDENT_LIMIT_S, metavar="SECONDS",
                   help="wall-clock limit for all of one student's notebooks together "
                        "(default: %(default)s)")
    p.add_argument("--no-warm-kernels", dest="warm_kernels", action="store_false",
                   help="start every kernel from scratch instead of forking it from a server "
                        "that has imported the solutions' modules (slower; same scores)")
    p.add_argument("--no-sandbox", dest="sandbox", action="store_false",
                   help="run the notebooks without bubblewrap, as where it is missing "
                        "(process groups, resource limits, private copies)")
    p.add_argument("--shard", default=None, metavar="K/N",
                   help="grade only the K-th of N equal parts of the students (merge the N "
                        "report folders with `dptlearn-grade merge`)")
    args = p.parse_args(argv)
    try:
        shard = parse_shard(args.shard) if args.shard is not None else None
    except ValueError as exc:
        p.error(f"--shard: {exc}")
    if args.jobs < 1:
        p.error(f"--jobs: expected a positive number, got {args.jobs}")
    try:
        Seeds.from_environment()            # DPTLEARN_GRADING_SECRET, checked before any run
    except SecretError as exc:
        p.error(str(exc))
    for flag, value in (("--timeout", args.timeout), ("--student-limit", args.student_limit)):
        if value <= 0:
            p.error(f"{flag}: expected a positive number of seconds, got {value:g}")
    solutions = args.solutions or default_solutions()
    if not solutions.is_dir():
        p.error(f"--solutions: expected a folder of solution notebooks, got {solutions}")
    subs = expand_submissions(args.submissions)
    missing = [safetext.path_text(s) for s in subs if not os.path.lexists(s)]
    if missing or not subs:             # a link to nothing exists: it is refused, not missing
        p.error(f"no such submission file: {', '.join(missing)}" if missing else
                "no .ipynb files found in the given folders")
    return subs, Settings(solutions, args.report_dir, args.timeout, args.device, args.jobs,
                          args.warm_kernels, args.submissions, shard, args.sandbox,
                          args.student_limit)


def grade(submissions: list[str], opts: Settings, progress=print) -> list[Result]:
    """Grade ``submissions`` (paths as given), write all reports, return the results."""
    try:
        assignments = read_assignments(opts.solutions)
    except SourceError as exc:
        raise SystemExit(f"dptlearn-grade: the solution notebooks are invalid:\n{exc}") from None
    t0 = time.perf_counter()
    results = entry_results(submissions)
    assign_students(results, [safetext.path_text(i) for i in opts.inputs])
    carry_students(results)                     # alice__01 (1), not 01 (1): reportnames.py
    results = in_shard(results, opts.shard)      # names above come from the whole class
    try:
        with fresh_report_dir(opts.report_dir) as out:   # swapped in whole at the end
            _grade_into(results, assignments, replace(opts, report_dir=out), progress)
            write_manifest(out, run_manifest(assignments, submissions, results, opts.shard,
                                             time.perf_counter() - t0))
    except ReportDirError as exc:
        raise SystemExit(f"dptlearn-grade: {exc}") from None
    except OSError as exc:                          # a full disk, a denied folder: the old reports stay
        raise SystemExit(f"dptlearn-grade: {exc}; {opts.report_dir} was left as it was") from None
    return results


def entry_results(submissions: list[str]) -> list[Result]:
    """One ``Result`` per path as given: ``submission`` is the path as shown
    (``safetext.path_text``), ``source`` the path to open; a path that does not show as itself
    (not UTF-8, control or format characters) gets ``submission-<hash>`` reports and a note."""
    shown = [safetext.path_text(s) for s in submissions]
    linked = hard_link_notes(submissions)
    results = []
    for sub, text, name in zip(submissions, shown, report_names(shown)):
        r = Result(text, name, source=sub)
        if sub in linked:
            r.notes.append(linked[sub])
        if not safetext.representable(sub):
            r.name = safetext.fallback_name(sub)
            why = ("is not valid UTF-8 (its bytes are shown as \\xNN)" if text != safetext.text(sub)
                   else "holds control or format characters (shown as escapes)")
            r.notes.append(f"the file or folder name {why}; its reports are {r.name}.*")
        results.append(r)
    return results


def _grade_into(results: list[Result], assignments: list[Assignment], opts: Settings,
                progress) -> None:
    import dptlearn

    grade_all(results, assignments, opts, Path(dptlearn.__file__).resolve().parent, progress)
    for r in results:
        write_reports(opts.report_dir, r)
        progress(safetext.line(f"{r.score:>4}/{r.max_score:<4} {r.duration_s:6.1f}s  "
                               f"{r.submission}" + (f"  ({r.error})" if r.error else ""), 600))
    write_class_files(opts.report_dir, results)


def write_reports(report_dir: Path, r: Result) -> None:
    """``<name>.junit.xml`` and ``<name>.json``; a name the file system refuses (too long for
    it, say) costs that submission its name, not the class its reports; any other failure of
    the writers on this one result (a grader bug) refuses it and writes its error instead."""
    for attempt in range(3):
        try:
            if r.exercises:
                write_partial_junit(report_dir / f"{r.name}.junit.xml", r)
            write_result(report_dir, r)
            return
        except OSError as exc:
            if attempt == 2 or exc.errno not in REFUSED_NAME:   # a full disk, a denied folder
                raise
            r.name = _fallback(report_dir, r, exc)
        except Exception as exc:  # noqa: BLE001 - a bug on one result costs that result only
            if attempt == 2:
                raise
            (report_dir / f"{r.name}.junit.xml").unlink(missing_ok=True)
            grader_error(r, "reporting", exc)       # then only the error and zeros are written
            r.notes, r.student, r.student_id = [], safetext.line(r.student or ""), None


def _fallback(report_dir: Path, r: Result, exc: OSError) -> str:
    """The ``submission-<hash>`` name of ``r`` after the file system refused its name (the
    partly written files of the refused name are removed)."""
    for ext in (".json", ".junit.xml"):
        try:
            (report_dir / f"{r.name}{ext}").unlink(missing_ok=True)
        except OSError:             # the name itself is what the system refuses
            pass
    fallback = safetext.fallback_name(r.path)
    r.notes.append(f"its reports could not be written as {r.name!r} "
                   f"({exc.strerror or type(exc).__name__}); they are {fallback}.*")
    return fallback


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["merge"]:                   # dptlearn-grade merge DIR... --report-dir OUT
        return merge_main(argv[1:])
    submissions, opts = parse_args(argv)
    try:
        results = grade(submissions, opts)
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return 2
    except SandboxFailure as exc:           # the grader's or the machine's, not the class's
        print(f"dptlearn-grade: {exc}; {opts.report_dir} was left as it was", file=sys.stderr)
        return 1
    total, pending = sum(r.score for r in results), pending_points(results)
    print(f"graded {len(results)} submission(s); reports in {opts.report_dir} "
          f"(class total {total}/{sum(r.max_score for r in results)}"
          + (f", +{pending} written point(s) not scored yet" if pending else "") + ")")
    return refused_status(results)


if __name__ == "__main__":
    sys.exit(main())
