"""``dptlearn-grade merge``: shards joined (``reportdir.merge``), later regrades of some students
put in their place, and the teacher's scores of written answers filled in.

``merge DIR... [--regrade LATER]... [--manual scores.csv] --report-dir OUT``:

* the folders ``DIR...`` are the shards of one class run (or one whole run's folder);
* each ``--regrade LATER`` is the report folder of a later run over some students (graded against
  the same solutions, with the same ``DPTLEARN_GRADING_SECRET``): its results of each (student,
  assignment) it graded replace the merge's results of that student and assignment (students
  are matched like the gradebook's rows, ``Result.student_key``; the student's other assignments
  are kept), and get a note that says so; a student the class run did not have is added, but one
  the class has from another folder (same Canvas id, else name) is refused: it would replace
  nothing and make a second gradebook row. What was replaced and what was kept is printed.
* ``--manual`` is the teacher's sheet of written answers (``written.py``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import reportdir
from .report import Result
from .reportdir import ReportDirError, read_report_dir
from .secret import ENV as SECRET_ENV
from .written import ManualScoresError, apply_scores


def _check_regrade(folder: Path, manifest: dict, base: dict) -> None:
    if manifest["solutions"] != base["solutions"] or manifest["assignments"] != base["assignments"]:
        raise ReportDirError(f"--regrade {folder} was graded against different solutions than "
                             f"the class run; regrade with the same solutions")
    if manifest.get("secret") != base.get("secret"):
        raise ReportDirError(
            f"--regrade {folder} was graded with a different {SECRET_ENV} than the class run (or "
            f"one of them without it), so its students were tested on other secret inputs; "
            f"regrade with the class's secret")
    if sorted(manifest["shards"]) != list(range(1, manifest["shard_count"] + 1)):
        raise ReportDirError(f"--regrade {folder} is one shard of a run; merge its shards first "
                             f"and give the merged folder")


def _identity(r: Result) -> str:
    """Who a student is whatever folder they were graded from: Canvas's id, else the name."""
    return f"id:{r.student_id}" if r.student_id else f"name:{(r.student or '').casefold()}"


def _check_same_students(folder: Path, entries: list[tuple], results: list[Result]) -> None:
    """Refuse a regrade whose student is in the class under another folder: it would replace
    nothing and give that student a second gradebook row."""
    mine = {r.student_key for r, *_ in entries}
    for r in results:
        if r.student_key in mine:
            continue
        other = next((e for e, *_ in entries if _identity(e) == _identity(r)), None)
        if other is not None:
            raise ReportDirError(
                f"--regrade {folder}: student {r.student!r} was graded from "
                f"{r.student_folder or r.submission!r}, but the class run has this student from "
                f"{other.student_folder or other.submission!r}, so the regrade would replace "
                f"nothing and give them a second gradebook row; regrade from the class's path: "
                f"put the new files in {other.student_folder or 'the same place'} and run "
                f"dptlearn-grade {other.student_folder or other.submission} --report-dir {folder}")


def regrade(entries: list[tuple], manifest: dict, folder: Path, say) -> list[tuple]:
    """``entries`` (as ``reportdir.merge`` keeps them) with the (student, assignment) pairs the
    report folder ``folder`` graded replaced by its results; the student's other assignments
    are kept."""
    later, results = read_report_dir(folder)
    _check_regrade(folder, later, manifest)
    _check_same_students(folder, entries, results)
    pairs = {(r.student_key, r.assignment) for r in results}
    ours = lambda r: (r.student_key, r.assignment) in pairs     # noqa: E731
    kept = [e for e in entries if not ours(e[0])]
    gone = {e[0].submission: e[0].name for e in entries if ours(e[0])}
    taken = {e[0].name.casefold() for e in kept}
    added = []
    for r in sorted(results, key=lambda r: r.name):
        stem, name = r.name, gone.get(r.submission, r.name)
        k = 1
        while name.casefold() in taken:          # a name the class run gives someone else
            k += 1
            name = f"{gone.get(r.submission, stem)}-regrade{'' if k == 2 else k - 1}"
        taken.add(name.casefold())
        r.name = name
        r.notes.append(f"re-graded: this result comes from the later run in {folder} "
                       f"(merge --regrade), which replaces this student's earlier result(s) of "
                       f"{r.assignment or 'this submission'}")
        added.append((r, folder, stem, True))
    replaced = len(entries) - len(kept)
    lost = sorted(f"{r.student or '?'}'s {e.id}" for r, *_ in entries if ours(r)
                  for e in r.exercises if e.kind == "written" and not e.unscored)
    if lost:
        say(f"--regrade {folder}: discards {len(lost)} earlier written score(s) "
            f"({', '.join(lost[:10])}{', …' if len(lost) > 10 else ''}): the later run's answers "
            f"are not scored yet; score them from the merged written-answers.csv and merge --manual")
    students = {key for key, _ in pairs}
    who = sorted({r.student or "?" for r in results})
    say(f"--regrade {folder}: {len(results)} submission(s) of {len(students)} student(s) "
        f"({', '.join(who[:10])}{', …' if len(who) > 10 else ''}) replace {replaced} earlier "
        f"one(s); every other row is the class run's")
    still = sorted(f"{r.student or '?'}'s {r.assignment or r.submission}" for r, *_ in kept
                   if r.student_key in students)
    if still:
        say(f"--regrade {folder}: kept from the earlier run (not graded again): "
            f"{', '.join(still[:20])}{', …' if len(still) > 20 else ''}")
    manifest.setdefault("regrades", []).append(
        {"inputs": later["inputs"], "input_count": later["input_count"],
         "reports": sorted(r.name for r, *_ in added)})
    return kept + added


def amend(entries: list[tuple], manifest: dict, regrades: list[Path], manual: Path | None,
          say) -> list[tuple]:
    """Regrades in order, then the manual scores (``written.apply_scores``)."""
    for folder in regrades:
        entries = regrade(entries, manifest, folder, say)
    if manual is not None:
        try:
            entries = apply_scores(entries, manual, say)
        except ManualScoresError as exc:
            raise ReportDirError(str(exc)) from None
    return entries


def merge(folders: list[Path], out: Path, regrades: list[Path] = (), manual: Path | None = None,
          say=print) -> list[Result]:
    """``reportdir.merge`` of the shard folders, then the later runs in ``regrades`` in their
    students' place and ``manual`` (the teacher's scores of written answers) filled in."""
    regrades = [Path(f) for f in regrades]
    return reportdir.merge(folders, out, regrades,
                           lambda entries, manifest: amend(entries, manifest, regrades, manual, say))


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="dptlearn-grade merge",
                                description="Merge the report folders of shard runs "
                                            "(--shard K/N) into one; put regrades and the "
                                            "teacher's scores in (see docs/teaching.md).")
    p.add_argument("folders", nargs="+", type=Path, metavar="DIR",
                   help="report folders written by `dptlearn-grade --shard K/N` (or one run's)")
    p.add_argument("--regrade", type=Path, action="append", default=[], metavar="LATER",
                   help="the report folder of a later run over some students: their results "
                        "replace the earlier ones (repeatable; in order)")
    p.add_argument("--manual", type=Path, default=None, metavar="SCORES.csv",
                   help="the teacher's points for the written answers (written-answers.csv, "
                        "filled in)")
    p.add_argument("--report-dir", type=Path, default=Path("grading-report"),
                   help="where the merged reports go (default: %(default)s)")
    args = p.parse_args(argv)
    try:
        results = merge(args.folders, args.report_dir, args.regrade, args.manual)
    except ReportDirError as exc:
        print(f"dptlearn-grade merge: {exc}", file=sys.stderr)
        return 2
    print(f"merged {len(args.folders)} folder(s), {len(results)} submission(s); reports in "
          f"{args.report_dir}")
    status = getattr(reportdir, "refused_status", None)     # 3 when shards refused submissions
    return status(results) if status else 0
