"""Grade submitted exercise notebooks with pytest + nbval (``dptlearn-grade``).

Usage::

    dptlearn-grade SUBMISSION.ipynb|FOLDER ... [--report-dir DIR] [--jobs N]
                   [--device cpu|cuda] [--solutions DIR] [--timeout SECONDS]
                   [--no-warm-kernels]

For each submission the grader

1. reads it without ever writing to it, and gives a zero with a clear message when it is not
   a notebook;
2. finds its assignment among ``--solutions`` (``metadata.dptlearn.assignment``, else the
   file name);
3. writes a prepared copy into a temporary folder: outputs cleared, every check cell replaced
   by the original from the solution notebook (matched by its ``ex:<id>`` tag; deleted ones are
   put back after the exercise's last cell, extra ones dropped);
4. runs ``pytest --nbval-lax --nbval-current-env`` on the copy in a subprocess, with the
   ``_grade_plugin`` that makes check cells count and isolates timeouts and kernel crashes;
   each notebook gets its own kernel, forked from a server that has already imported the
   modules the solutions' set-up cells import (``preload_modules``);
5. scores from the JUnit XML: an exercise earns its points iff its check cell passed.

Reports go to ``--report-dir`` (default ``./grading-report``): ``<name>.junit.xml`` and
``<name>.json`` per submission, ``summary.csv`` and ``summary.md`` for the class. The exit status
is 0 whenever grading completed, whatever the scores; 2 for usage errors. The rules are in
docs/grading.md. This module must not import the DPT head: the graded notebooks do that.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import plugin
from ..exercises import Assignment, SourceError, read_assignments, repo_root, source_of, tags_of
from .report import (ExerciseResult, Result, write_junit, write_partial_junit, write_result,
                     write_summaries)
from .reportdir import ReportDirError, fresh_report_dir, merge_main, run_manifest, write_manifest
from .submissions import (InvalidSubmission, assign_students, expand_submissions, find_assignment,
                          in_shard, parse_shard, read_submission, report_names)

DEFAULT_TIMEOUT_S = 120.0
PLUGIN_MODULE = "_dptlearn_grade_plugin"
BATCH_SIZE = 48         # notebooks per pytest process: amortises pytest/nbval and fork-server
                        # start-up (~2 CPU-s each) over many notebooks


@dataclass
class Options:
    solutions: Path
    report_dir: Path
    timeout: float = DEFAULT_TIMEOUT_S
    device: str | None = None
    jobs: int = 1
    warm_kernels: bool = True           # fork kernels from a server that pre-imported modules
    inputs: list[str] = field(default_factory=list)   # files and folders as given (students)
    shard: tuple[int, int] | None = None    # grade only shard K of N (of the students)



# ----------------------------------------------------------------------------- preparing

def _clean_cell(cell: dict, index: int) -> dict:
    """A copy of ``cell`` fit to run: outputs cleared, only its tags kept as metadata."""
    new = {"cell_type": cell["cell_type"], "metadata": {},
           "source": source_of(cell), "id": f"cell-{index}"}
    tags = tags_of(cell)
    if tags:
        new["metadata"]["tags"] = tags
    if new["cell_type"] == "code":
        new.update(outputs=[], execution_count=None)
    return new


def _exercise_of(cell: dict) -> str | None:
    return plugin.exercise_of(tags_of(cell))


def restore_checks(cells: list[dict], a: Assignment) -> list[dict]:
    """Put back the solution's check cells, matching exercises by their ``ex:<id>`` tag.

    A submitted check cell of a known exercise is replaced by the original in place (first one
    only); other cells tagged ``check`` are dropped; a missing one is inserted after the last
    cell of its exercise, or, if the exercise has no cells left, before the first cell of a
    later exercise (else at the end).
    """
    known = [ex.id for ex in a.exercises]
    placed: set[str] = set()
    out = []
    for cell in cells:
        ex = _exercise_of(cell)
        if "check" in tags_of(cell):
            if ex in known and ex not in placed:
                out.append(a.check_cell(ex))
                placed.add(ex)
            continue
        out.append(cell)
    for pos, ex_id in enumerate(known):
        if ex_id not in placed:
            out.insert(_insert_index(out, ex_id, known[pos + 1:]), a.check_cell(ex_id))
    return out


def _insert_index(cells: list[dict], ex_id: str, later: list[str]) -> int:
    """Where a missing check cell of ``ex_id`` goes (see restore_checks)."""
    mine = [i for i, c in enumerate(cells) if _exercise_of(c) == ex_id]
    if mine:
        return mine[-1] + 1
    after = [i for i, c in enumerate(cells) if _exercise_of(c) in later]
    return after[0] if after else len(cells)


def prepare(nb: dict, a: Assignment) -> dict:
    """The notebook that is actually run: restored checks, no outputs, tidy metadata."""
    cells = restore_checks(list(nb["cells"]), a)
    return {"cells": [_clean_cell(c, i) for i, c in enumerate(cells)],
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                        "language": "python"},
                         "dptlearn": {"assignment": a.name}},
            "nbformat": 4, "nbformat_minor": 5}


# ----------------------------------------------------------------------------- running

@dataclass
class Staged:
    """A prepared copy waiting to run: ``root/<key>/<assignment>.ipynb``."""

    result: Result
    assignment: Assignment
    key: str
    nb_path: Path
    limit: float                        # watchdog seconds for this notebook alone


def stage(result: Result, assignments: list[Assignment], root: Path, key: str,
          timeout: float) -> Staged | None:
    """Read, match and prepare one submission; None (and a zero) when it cannot be graded."""
    path = Path(result.submission)
    nb = None
    try:
        nb = read_submission(path)
        a = find_assignment(nb, path, assignments, result.notes)
        if a is None:
            raise InvalidSubmission(f"not graded: no assignment matches {path.name!r} (expected "
                                    f"one of {sorted(x.name for x in assignments)})")
        _set_assignment(result, a)
        prepared = prepare(nb, a)
        folder = root / key
        folder.mkdir()
        nb_path = folder / f"{a.name}.ipynb"
        nb_path.write_text(json.dumps(prepared, ensure_ascii=False), encoding="utf-8")
        return Staged(result, a, key, nb_path, watchdog_seconds(prepared, timeout))
    except InvalidSubmission as exc:
        a = find_assignment(nb, path, assignments)
        if a is not None:
            _set_assignment(result, a)
        _fail_all(result, a, str(exc))
    except Exception as exc:  # a grader bug must cost one submission, not the class run
        _fail_all(result, None, plugin.clean_message(
            f"grader error: {type(exc).__name__}: {exc}", 400))
    return None


def preload_modules(assignments: list[Assignment]) -> list[str]:
    """Modules that the solutions' set-up cells (code cells of no exercise) import.

    The warm-kernel server imports them once; every kernel forked from it starts with them in
    ``sys.modules``. Set-up cells run first in every submission, so a kernel that would have
    imported them anyway sees no difference. ``from a import b`` also names ``a.b`` (it may be
    a submodule; the server skips what does not import).
    """
    mods: list[str] = []
    for a in assignments:
        for cell in a.nb["cells"]:
            if cell.get("cell_type") != "code" or _exercise_of(cell) is not None:
                continue
            src = "\n".join(line for line in source_of(cell).splitlines()
                            if not line.lstrip().startswith(("%", "!")))
            try:
                tree = ast.parse(src)
            except SyntaxError:
                continue
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    mods += [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    mods += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names
                                             if alias.name != "*"]
    return list(dict.fromkeys(m for m in mods if m != "__future__"
                              and not m.startswith("__future__.")))


def _kernel_env(opts: Options, plugin_dir: Path) -> dict:
    """Environment of the pytest process and so of the kernels it starts."""
    env = dict(os.environ)
    paths = [str(plugin_dir), str(Path(__file__).resolve().parents[3]),
             str(opts.solutions.resolve())]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    if opts.device:
        env["DPTLEARN_DEVICE"] = opts.device
    threads = str(max(1, (os.cpu_count() or 1) // max(1, opts.jobs)))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, threads)
    env["MPLBACKEND"] = "Agg"       # figures are never compared: don't render them
    return env


def watchdog_seconds(nb: dict, timeout: float) -> float:
    """Wall-clock limit for one notebook: generous enough for a replay after every cell."""
    n_code = sum(c["cell_type"] == "code" for c in nb["cells"])
    return 60 + 2 * n_code * (timeout + plugin.KILL_GRACE_S + 5)


def run_batch(batch: list[Staged], root: Path, opts: Options, tag: str,
              preload: list[str] | None = None) -> tuple[Path | None, Path]:
    """Run pytest+nbval on the staged notebooks of ``batch`` in one subprocess.

    Returns (the JUnit XML, or None when the run was killed or wrote none; the check log).
    """
    junit, jsonl, log = (root / f"{tag}{ext}" for ext in (".junit.xml", ".checks.jsonl", ".log"))
    cmd = [sys.executable, "-m", "pytest", "-q", "--color=no", "-c", str(root / "pytest.ini"),
           "--rootdir", str(root), "-p", "no:cacheprovider", "-p", PLUGIN_MODULE,
           "--nbval-lax", "--nbval-current-env", "--nbval-cell-timeout", f"{opts.timeout:g}",
           "--junitxml", str(junit), "-o", "junit_family=xunit1",
           "--dptlearn-results", str(jsonl), "-W", "ignore"]
    if preload is not None:
        cmd.append(f"--dptlearn-preload={','.join(preload)}")
    cmd += [str(s.nb_path) for s in batch]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=root, env=_kernel_env(opts, root / "plugin"),
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            proc.wait(timeout=sum(s.limit for s in batch))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return None, jsonl
    return (junit if junit.exists() else None), jsonl


def batches(staged: list[Staged], jobs: int, max_size: int) -> list[list[Staged]]:
    """Split into at least ``jobs`` batches of at most ``max_size`` notebooks (round robin)."""
    if not staged:
        return []
    n = max(min(jobs, len(staged)), -(-len(staged) // max_size))
    return [staged[i::n] for i in range(n)]


def run_and_score(batch: list[Staged], root: Path, opts: Options, tag: str,
                  preload: list[str] | None = None) -> None:
    """Run one batch and score its submissions; a batch that dies is re-run one by one."""
    junit, jsonl = run_batch(batch, root, opts, tag, preload)
    groups = read_junit(junit) if junit is not None else {}
    log = read_check_log(jsonl)
    for s in batch:
        if s.key in groups:
            cases = [case_info(tc) for tc in groups[s.key]]
            s.result.exercises = score_cases(cases, s.assignment)
            s.result.duration_s = sum(c["time"] for c in cases)
            write_junit(opts.report_dir / f"{s.result.name}.junit.xml", s.result.name,
                        groups[s.key])
        elif len(batch) > 1:
            run_and_score([s], root, opts, f"{tag}-{s.key}", preload)
        else:
            why = (f"not graded: the notebook ran past the grader's limit of {s.limit:.0f} s"
                   if junit is None else "not graded: pytest reported nothing for this notebook")
            s.result.exercises = score_partial(log.get(s.key, {}), s.assignment, why)
            s.result.error = why
            write_partial_junit(opts.report_dir / f"{s.result.name}.junit.xml", s.result)


# ----------------------------------------------------------------------------- scoring

def read_junit(path: Path) -> dict[str, list[ET.Element]]:
    """The testcases of a batch's JUnit XML, grouped by their ``submission`` property."""
    groups: dict[str, list[ET.Element]] = {}
    for tc in ET.parse(path).getroot().iter("testcase"):
        props = {p.get("name"): p.get("value") for p in tc.iter("property")}
        groups.setdefault(props.get("submission", ""), []).append(tc)
    return groups


def case_info(tc: ET.Element) -> dict:
    """A testcase's properties plus ``outcome``, ``failure`` (its message) and ``time``."""
    props = {p.get("name"): p.get("value") for p in tc.iter("property")}
    bad = [el for el in tc if el.tag in ("failure", "error", "skipped")]
    props["outcome"] = bad[0].tag if bad else "passed"
    props["failure"] = bad[0].get("message", "") if bad else ""
    props["time"] = float(tc.get("time") or 0)
    return props


def score_cases(cases: list[dict], a: Assignment) -> list[ExerciseResult]:
    """An exercise earns its points iff its check cell passed."""
    results = []
    for ex in a.exercises:
        mine = [c for c in cases if c.get("exercise") == ex.id]
        check = next((c for c in mine if c.get("role") == "check"), None)
        if check is None:
            results.append(ExerciseResult(ex.id, 0, ex.points, False, "the check cell did not run"))
            continue
        passed = check["outcome"] == "passed"
        message = "passed" if passed else _case_message(check)
        before = mine[:mine.index(check)]
        earlier = next((c for c in before if c["outcome"] in ("failure", "error")), None)
        if not passed and earlier is not None and _case_message(earlier) != message:
            message = (f"{plugin.clean_message(message, 200)} (earlier in this exercise: "
                       f"{plugin.clean_message(_case_message(earlier), 120)})")
        results.append(ExerciseResult(ex.id, ex.points if passed else 0, ex.points, passed,
                                      plugin.clean_message(message, 400)))
    return results


def _case_message(case: dict) -> str:
    return case.get("message") or case.get("failure") or case["outcome"]


def read_check_log(jsonl: Path) -> dict[str, dict[str, dict]]:
    """The plugin's running log: ``{submission key: {exercise id: record}}``."""
    seen: dict[str, dict[str, dict]] = {}
    if jsonl.exists():
        for line in jsonl.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:      # the last line of a killed run may be cut
                continue
            seen.setdefault(rec["submission"], {}).setdefault(rec["exercise"], rec)
    return seen


def score_partial(log: dict[str, dict], a: Assignment, why: str) -> list[ExerciseResult]:
    """Scores from the running log, for a run that left no JUnit report."""
    results = []
    for ex in a.exercises:
        rec = log.get(ex.id)
        if rec is None:
            results.append(ExerciseResult(ex.id, 0, ex.points, False, why))
        else:
            results.append(ExerciseResult(ex.id, ex.points if rec["passed"] else 0, ex.points,
                                          rec["passed"], rec["message"] or "passed"))
    return results


def _set_assignment(result: Result, a: Assignment) -> None:
    result.assignment, result.max_score = a.name, a.max_score


def _fail_all(result: Result, a: Assignment | None, message: str) -> None:
    result.error = message
    result.exercises = [ExerciseResult(ex.id, 0, ex.points, False, message)
                        for ex in (a.exercises if a else [])]


# ----------------------------------------------------------------------------- CLI

def default_solutions() -> Path:
    return repo_root() / "solutions"


def parse_args(argv: list[str] | None) -> tuple[list[str], Options]:
    p = argparse.ArgumentParser(prog="dptlearn-grade",
                                description="Grade exercise notebooks (see docs/grading.md).")
    p.add_argument("submissions", nargs="+", metavar="SUBMISSION",
                   help="submitted .ipynb files, or folders searched for them")
    p.add_argument("--report-dir", type=Path, default=Path("grading-report"),
                   help="where reports go (default: %(default)s)")
    p.add_argument("--jobs", "-j", type=int, default=1,
                   help="submissions graded in parallel (default: %(default)s)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="sets DPTLEARN_DEVICE for the notebooks (default: unset)")
    p.add_argument("--solutions", type=Path, default=None,
                   help="folder of solution notebooks (default: the repository's solutions/)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                   help="per-cell time limit in seconds (default: %(default)s)")
    p.add_argument("--no-warm-kernels", dest="warm_kernels", action="store_false",
                   help="start every kernel from scratch instead of forking it from a server "
                        "that has imported the solutions' modules (slower; same scores)")
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
    if args.timeout <= 0:
        p.error(f"--timeout: expected a positive number of seconds, got {args.timeout}")
    solutions = args.solutions or default_solutions()
    if not solutions.is_dir():
        p.error(f"--solutions: expected a folder of solution notebooks, got {solutions}")
    subs = expand_submissions(args.submissions)
    missing = [s for s in subs if not Path(s).is_file()]
    if missing or not subs:
        p.error(f"no such submission file: {', '.join(missing)}" if missing else
                "no .ipynb files found in the given folders")
    return subs, Options(solutions, args.report_dir, args.timeout, args.device, args.jobs,
                         args.warm_kernels, args.submissions, shard)


def grade(submissions: list[str], opts: Options, progress=print) -> list[Result]:
    """Grade ``submissions`` (paths as given), write all reports, return the results."""
    try:
        assignments = read_assignments(opts.solutions)
    except SourceError as exc:
        raise SystemExit(f"dptlearn-grade: the solution notebooks are invalid:\n{exc}") from None
    t0 = time.perf_counter()
    results = [Result(sub, name) for sub, name in zip(submissions, report_names(submissions))]
    assign_students(results, opts.inputs)
    results = in_shard(results, opts.shard)      # names above come from the whole class
    try:
        with fresh_report_dir(opts.report_dir) as out:   # swapped in whole at the end
            _grade_into(results, assignments, replace(opts, report_dir=out), progress)
            write_manifest(out, run_manifest(assignments, submissions, results, opts.shard,
                                             time.perf_counter() - t0))
    except ReportDirError as exc:
        raise SystemExit(f"dptlearn-grade: {exc}") from None
    return results


def _grade_into(results: list[Result], assignments: list[Assignment], opts: Options,
                progress) -> None:
    with tempfile.TemporaryDirectory(prefix="dptlearn-grade-") as tmp:
        root = Path(tmp)
        (root / "plugin").mkdir()
        shutil.copyfile(plugin.__file__, root / "plugin" / f"{PLUGIN_MODULE}.py")
        (root / "pytest.ini").write_text("[pytest]\n")
        staged = [s for i, r in enumerate(results)
                  if (s := stage(r, assignments, root, f"s{i:04d}", opts.timeout)) is not None]
        work = batches(staged, opts.jobs, BATCH_SIZE)
        preload = preload_modules(assignments) if opts.warm_kernels else None
        with ThreadPoolExecutor(max_workers=opts.jobs) as pool:
            list(pool.map(lambda b: run_and_score(b[1], root, opts, f"batch{b[0]}", preload),
                          enumerate(work)))
    for r in results:
        write_result(opts.report_dir, r)
        progress(f"{r.score:>4}/{r.max_score:<4} {r.duration_s:6.1f}s  {r.submission}"
                 + (f"  ({r.error})" if r.error else ""))
    write_summaries(opts.report_dir, results)


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
    total = sum(r.score for r in results)
    print(f"graded {len(results)} submission(s); reports in {opts.report_dir} "
          f"(class total {total}/{sum(r.max_score for r in results)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
