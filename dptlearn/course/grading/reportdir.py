"""Report folders: one run each, replaced whole, never a user's folder; merging shard folders.

A report folder holds ``dptlearn-report.json`` (the manifest), one ``<name>.json`` and one
``<name>.junit.xml`` per submission, ``summary.csv``, ``summary.md`` and ``gradebook.csv``.
A run writes into a fresh hidden folder next to the target and swaps it in at the end, so the
target always describes exactly one complete run; a non-empty folder without a manifest is
never touched. ``dptlearn-grade merge`` joins the folders of shard runs into the folder one
run over all submissions would have written (see docs/teaching.md, "Shards").
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path

from ..exercises import Assignment
from . import safetext
from .feedback import FOLDER as FEEDBACK
from .classfiles import write_class_files
from .report import Result, write_result
from .secret import ENV as SECRET_ENV, Seeds

MANIFEST = "dptlearn-report.json"
STAGING_MARK = ".dptlearn-staging"      # inside a folder that is still being written
FORMAT = 1
MANIFEST_FIELDS = {"shards": list, "shard_count": int, "solutions": str, "assignments": dict,
                   "inputs": str, "input_count": int, "reports": list, "wall_s": list}
CLASS_FILES = ("summary.csv", "summary.md", "gradebook.csv", "written-answers.csv")
REFUSED_EXIT = 3                # graded, with N submissions refused (grade and merge alike)


class ReportDirError(Exception):
    """A report folder that cannot be written, read or merged; the message says why."""


# ----------------------------------------------------------------------------- manifest

def solutions_fingerprint(assignments: list[Assignment]) -> str:
    """SHA-256 over the solution notebooks and the Python helpers next to them."""
    h = hashlib.sha256()
    folders = sorted({a.path.parent for a in assignments})
    files = sorted({a.path for a in assignments} | {p for f in folders for p in f.glob("*.py")})
    for path in files:
        data = path.read_bytes()
        h.update(f"{path.name}\0{len(data)}\0".encode() + data)
    return h.hexdigest()


def inputs_fingerprint(submissions: list[str]) -> str:
    """SHA-256 over the sorted submission paths as given: every shard must see the same list."""
    raw = "\0".join(sorted(submissions)).encode("utf-8", "surrogatepass")    # names not UTF-8 too
    return hashlib.sha256(raw).hexdigest()


def run_manifest(assignments: list[Assignment], submissions: list[str], results: list[Result],
                 shard: tuple[int, int] | None, wall_s: float) -> dict:
    k, n = shard or (1, 1)
    return {"dptlearn_report": FORMAT, "shards": [k], "shard_count": n,
            "solutions": solutions_fingerprint(assignments),
            "assignments": {a.name: a.max_score for a in assignments},
            "inputs": inputs_fingerprint(submissions), "input_count": len(submissions),
            "reports": sorted(r.name for r in results), "wall_s": [round(wall_s, 1)],
            "secret": Seeds.from_environment().fingerprint}     # None: fresh inputs per run


def read_manifest(folder: Path) -> dict | None:
    """The manifest of a report folder, or None when ``folder`` is not one."""
    try:
        m = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not (isinstance(m, dict) and m.get("dptlearn_report") == FORMAT
            and all(isinstance(m.get(k), t) for k, t in MANIFEST_FIELDS.items())
            and all(isinstance(n, str) and n and "/" not in n for n in m["reports"])):
        return None
    return m


def written_by_a_run(manifest: dict) -> set[str]:
    """The names of every file a run (or a merge) puts in a report folder."""
    return ({MANIFEST, *CLASS_FILES, FEEDBACK}
            | {f"{n}{ext}" for n in manifest["reports"] for ext in (".json", ".junit.xml")})


def _foreign_feedback(final: Path) -> list[str]:
    """What in ``final/feedback/`` no run wrote (a run writes only ``*.html`` and ``*.md`` files)."""
    folder = final / FEEDBACK
    if not folder.exists() and not folder.is_symlink():
        return []
    if folder.is_symlink() or not folder.is_dir():
        return [FEEDBACK]
    return [f"{FEEDBACK}/{p.name}" for p in sorted(folder.iterdir())
            if p.is_symlink() or not p.is_file() or p.suffix not in (".html", ".md")]


# ----------------------------------------------------------------------------- writing

def check_target(final: Path) -> None:
    """Refuse a target that is not ours to replace (a file, a link, a user's folder)."""
    if final.is_symlink():
        raise ReportDirError(f"--report-dir {final}: is a symbolic link; give the folder itself")
    if final.exists() and not final.is_dir():
        raise ReportDirError(f"--report-dir {final}: is a file, expected a folder")
    if not final.is_dir() or not any(final.iterdir()):
        return
    manifest = read_manifest(final)
    if manifest is None:
        raise ReportDirError(
            f"--report-dir {final}: the folder is not empty and is not a dptlearn report folder "
            f"(it has no {MANIFEST}); refusing to replace it. Give a new or empty folder, or one "
            f"that dptlearn-grade wrote")
    foreign = sorted(p.name for p in final.iterdir() if p.name not in written_by_a_run(manifest))
    foreign += _foreign_feedback(final)
    if foreign:
        raise ReportDirError(
            f"--report-dir {final}: the report folder also holds files no grading run wrote "
            f"({', '.join(foreign[:5])}{', …' if len(foreign) > 5 else ''}); refusing to "
            f"replace it. Move them out first")


def _sweep_leftovers(final: Path) -> None:
    """Folders a crashed run left next to ``final`` (only ones that are marked as ours)."""
    for p in final.parent.glob(f".{final.name}.*-*"):
        ours = ((p.name.startswith(f".{final.name}.new-") and (p / STAGING_MARK).exists())
                or (p.name.startswith(f".{final.name}.old-") and read_manifest(p) is not None))
        if ours and p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)


@contextmanager
def fresh_report_dir(final: Path):
    """Yield an empty folder next to ``final``; when the block ends, it replaces ``final``.

    The block must write the manifest (``write_manifest``). On an exception the fresh folder
    is deleted and ``final`` is left as it was.
    """
    final = Path(final)
    check_target(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    _sweep_leftovers(final)
    fresh = Path(tempfile.mkdtemp(prefix=f".{final.name}.new-", dir=final.parent))
    umask = os.umask(0)
    os.umask(umask)
    fresh.chmod(0o777 & ~umask)             # mkdtemp's 0700 would hide reports from the group
    (fresh / STAGING_MARK).touch()
    try:
        yield fresh
        if read_manifest(fresh) is None:
            raise ReportDirError(f"internal error: {fresh} was filled without a manifest")
        check_target(final)                 # still ours to replace?
        (fresh / STAGING_MARK).unlink()
        if final.exists():
            old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(final, old)
            os.rename(fresh, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(fresh, final)
    finally:
        if fresh.exists():
            shutil.rmtree(fresh, ignore_errors=True)


def write_manifest(folder: Path, manifest: dict) -> None:
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")


# ----------------------------------------------------------------------------- merging

def read_report_dir(folder: Path) -> tuple[dict, list[Result]]:
    """A report folder's manifest and results; ReportDirError when it is not a complete one."""
    if not folder.is_dir():
        raise ReportDirError(f"{folder}: no such folder")
    manifest = read_manifest(folder)
    if manifest is None:
        raise ReportDirError(f"{folder}: not a dptlearn report folder (no valid {MANIFEST})")
    results = []
    for name in manifest["reports"]:
        missing = [f"{name}{ext}" for ext in (".json", ".junit.xml")
                   if not (folder / f"{name}{ext}").is_file()]
        if missing:
            raise ReportDirError(f"{folder}: incomplete report folder, {', '.join(missing)} "
                                 f"is missing")
        try:
            data = json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))
            results.append(Result.from_json(data))
        except (UnicodeDecodeError, json.JSONDecodeError, TypeError, AttributeError) as exc:
            raise ReportDirError(f"{folder / (name + '.json')}: not a dptlearn result "
                                 f"({type(exc).__name__}: {exc})") from None
    return manifest, results


def _check_compatible(folders: list[Path], manifests: list[dict]) -> None:
    first, m0 = folders[0], manifests[0]
    for folder, m in zip(folders[1:], manifests[1:]):
        if m["solutions"] != m0["solutions"] or m["assignments"] != m0["assignments"]:
            differ = sorted(set(m["assignments"].items()) ^ set(m0["assignments"].items()))
            raise ReportDirError(
                f"{folder} and {first} were graded against different solutions"
                + (f" (assignments that differ: {', '.join(sorted({a for a, _ in differ}))})"
                   if differ else " (same assignments, different notebook or helper contents)"))
        if m["shard_count"] != m0["shard_count"]:
            raise ReportDirError(f"{folder} is a shard of {m['shard_count']} but {first} is a "
                                 f"shard of {m0['shard_count']}")
        if m.get("secret") != m0.get("secret"):
            raise ReportDirError(f"{folder} and {first} were graded with different "
                                 f"{SECRET_ENV} values (or one without it): their secret inputs "
                                 f"differ; grade every shard with the same secret")
        if m["inputs"] != m0["inputs"]:
            raise ReportDirError(
                f"{folder} and {first} were graded from different submission lists "
                f"({m['input_count']} and {m0['input_count']} files): every shard must be "
                f"given the same submissions, only --shard differs")
    owner: dict[int, Path] = {}
    for folder, m in zip(folders, manifests):
        for k in m["shards"]:
            if k in owner:
                raise ReportDirError(f"shard {k}/{m['shard_count']} is in both {owner[k]} and "
                                     f"{folder}")
            owner[k] = folder
    n = m0["shard_count"]
    missing = [f"{k}/{n}" for k in range(1, n + 1) if k not in owner]
    if missing:
        raise ReportDirError(f"shard(s) {', '.join(missing)} missing: merge needs every shard's "
                             f"report folder")


def merge(folders: list[Path], out: Path, also: list[Path] = (), amend=None) -> list[Result]:
    """Merge shard report folders into ``out``, as one run over all submissions would write.

    ``amend(entries, manifest) -> entries`` may change the results before they are written
    (``merging.py``: regrades, the teacher's scores); ``also``: the other folders it reads, which
    ``out`` must not replace either."""
    folders = [Path(f) for f in folders]
    regrades = [Path(f) for f in also]
    real = [f.resolve() for f in [*folders, *regrades]]
    for i, f in enumerate(real):
        if f in real[:i]:
            raise ReportDirError(f"{[*folders, *regrades][i]} is given twice")
        if out.resolve() == f or f in out.resolve().parents:
            raise ReportDirError(f"--report-dir {out} would replace the shard folder "
                                 f"{[*folders, *regrades][i]}; write the merge somewhere else")
    read = [read_report_dir(f) for f in folders]
    _check_compatible(folders, [m for m, _ in read])
    seen: dict[str, Path] = {}
    for folder, (_, results) in zip(folders, read):
        for r in results:
            for key in (f"report {r.name}", f"submission {r.submission}"):
                if key in seen:
                    raise ReportDirError(f"{key} is in both {seen[key]} and {folder}: the shards "
                                         f"overlap")
                seen[key] = folder
    manifests = [m for m, _ in read]
    manifest = {**manifests[0], "shards": sorted(k for m in manifests for k in m["shards"]),
                "wall_s": [s for m in manifests for s in m["wall_s"]]}
    # (result, the folder its files are in, their stem there, whether its JSON is rewritten)
    entries = [(r, folder, r.name, False) for folder, (_, rs) in zip(folders, read) for r in rs]
    if amend is not None:
        entries = amend(entries, manifest)
    results = [r for r, *_ in entries]
    with fresh_report_dir(out) as fresh:
        for r, folder, stem, rewrite in entries:
            shutil.copyfile(folder / f"{stem}.junit.xml", fresh / f"{r.name}.junit.xml")
            if rewrite:
                write_result(fresh, r)
            else:
                shutil.copyfile(folder / f"{stem}.json", fresh / f"{r.name}.json")
        write_class_files(fresh, results)
        write_manifest(fresh, {**manifest, "reports": sorted(r.name for r in results)})
    return results


def refused_status(results: list[Result]) -> int:
    """0, or ``REFUSED_EXIT`` after a last line that names the refused submissions."""
    refused = [r.submission for r in results if r.refused]
    if not refused:
        return 0
    print(safetext.line(f"graded {len(results) - len(refused)} submission(s), {len(refused)} "
                        f"refused: {', '.join(refused)}", 4000))
    return REFUSED_EXIT
