"""Submissions in: finding the notebooks, reading them safely, telling whose they are (folders,
Canvas and Moodle download names) and which assignment they answer; sharding by student."""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..exercises import Assignment
from ..lms import CANVAS_FILE_RE, MOODLE_FILE_RE, MOODLE_FOLDER_RE, names_assignment, original_name
from . import files, safetext
from .report import Result

MAX_NOTEBOOK_BYTES = 20 * 2**20   # a released notebook with outputs is well under 1 MiB
MAX_CELLS = 1000                # the solutions have at most a few dozen
NAME_BYTES = 80                 # report file stems are cut to this many bytes (+ a hash)
RESERVED_NAMES = {"dptlearn-report", "summary", "gradebook"}   # stems of the class files


class InvalidSubmission(Exception):
    """The submission cannot be graded (not a notebook, no matching assignment...)."""


class Refused(InvalidSubmission):
    """The submission is not read at all (not a regular file): 0, *Needs a look*, exit status 3."""


def expand_submissions(args: list[str]) -> list[str]:
    """Files as given; folders become their ``*.ipynb`` entries, walked without following links
    (``files.find_entries``: links, FIFOs and folders named ``*.ipynb`` are listed, to be refused)."""
    return files.find_entries(args)


def report_names(paths: list[str]) -> list[str]:
    """Unique file stems for the reports: the shortest distinguishing tail of each path.

    ``alice/03.ipynb`` and ``bob/03.ipynb`` become ``alice__03`` and ``bob__03``. Characters
    other than letters, digits, ``.``, ``_`` and ``-`` become ``_``; a stem longer than
    ``NAME_BYTES`` is cut and gets a short hash of the whole (the same on every shard); a stem
    the grader writes itself (``dptlearn-report``, ``summary``, ``gradebook``, a hidden name)
    gets the prefix ``submission-``.
    """
    parts = [Path(os.path.abspath(p)).with_suffix("").parts for p in paths]

    def tail(i: int, k: int) -> str:
        return "__".join(parts[i][-k:])

    depth = [1] * len(paths)
    while True:
        names = [tail(i, depth[i]) for i in range(len(paths))]
        grow = [i for i, n in enumerate(names) if depth[i] < len(parts[i]) and any(
            names[j] == n and parts[j] != parts[i] for j in range(len(paths)))]
        if not grow:
            break
        for i in grow:
            depth[i] += 1
    taken: set[str] = set()
    unique = []
    for n in map(safe_name, names):      # the same path given twice: number the repeats
        k, name = 1, n
        while name.casefold() in taken:
            k += 1
            name = f"{n}-{k}"
        taken.add(name.casefold())
        unique.append(name)
    return unique


def safe_name(text: str) -> str:
    """A report file stem for ``text`` (see ``report_names``)."""
    n = "".join(c if c.isalnum() or c in "._-" else "_" for c in text) or "submission"
    if len(n.encode()) > NAME_BYTES:
        digest = hashlib.sha256(n.encode()).hexdigest()[:10]
        n = n.encode()[:NAME_BYTES].decode("utf-8", "ignore") + "-" + digest
    if n.startswith(".") or n.casefold() in RESERVED_NAMES:
        n = "submission-" + n
    return n


def read_submission(path: Path) -> dict:
    """Parse a submitted notebook, raising InvalidSubmission with a readable reason (Refused when
    it is not a regular file). Every string of the result is ``safetext.data`` (no lone
    surrogates, which valid JSON may hold as ``"\\ud800"``)."""
    try:
        raw = files.read_regular(str(path), MAX_NOTEBOOK_BYTES)
        if len(raw) > MAX_NOTEBOOK_BYTES:       # a regular file: lstat is what was read
            size = os.lstat(path).st_size / 2**20
            raise InvalidSubmission(f"not graded: the file is {size:.1f} MiB, more than the "
                                    f"grader's limit of {MAX_NOTEBOOK_BYTES // 2**20} MiB (clear "
                                    f"the outputs: Edit > Clear Outputs of All Cells)")
        nb = safetext.tree(json.loads(raw.decode("utf-8")))
    except files.NotRegular as exc:
        raise Refused(f"not read: {safetext.path_text(path.name)} is {exc}; only regular files "
                      f"are graded") from None
    except FileNotFoundError:
        raise InvalidSubmission("not graded: the file does not exist") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidSubmission(f"not a valid notebook: the file is not JSON ({exc})") from None
    except RecursionError:
        raise InvalidSubmission("not a valid notebook: its JSON is nested too deeply") from None
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise InvalidSubmission("not a valid notebook: expected a JSON object with a 'cells' list")
    if len(nb["cells"]) > MAX_CELLS:
        raise InvalidSubmission(f"not graded: the notebook has {len(nb['cells'])} cells, more "
                                f"than the grader's limit of {MAX_CELLS}")
    if nb.get("nbformat", 4) != 4:
        raise InvalidSubmission(f"not a valid notebook: expected nbformat 4, got "
                                f"{nb.get('nbformat')!r:.40}; open and save it in JupyterLab")
    if not isinstance(nb.get("metadata", {}), dict):
        raise InvalidSubmission("not a valid notebook: its metadata is not a JSON object")
    for i, cell in enumerate(nb["cells"]):
        source = cell.get("source", "") if isinstance(cell, dict) else None
        text = isinstance(source, str) or (isinstance(source, list)
                                           and all(isinstance(line, str) for line in source))
        if not (text and cell.get("cell_type") in ("code", "markdown", "raw")):
            raise InvalidSubmission(f"not a valid notebook: cell {i} is not a code, markdown or "
                                    f"raw cell with a source")
        if not isinstance(cell.get("metadata", {}), dict):
            raise InvalidSubmission(f"not a valid notebook: cell {i}'s metadata is not a JSON "
                                    f"object")
    return nb


def find_assignment(nb: dict | None, path: Path, assignments: list[Assignment],
                    notes: list[str] | None = None) -> Assignment | None:
    """The assignment named in ``metadata.dptlearn.assignment``, else by file name.

    File-name match, after dropping a Canvas or Moodle download prefix: the stem equals an
    assignment's name, or starts with it (the longest wins), so ``03_reassemble-alice.ipynb``
    and Canvas's ``doejane_12_345_03_reassemble-1.ipynb`` still find ``03_reassemble``.
    When the metadata and the file name disagree, the metadata wins and a sentence saying so
    is appended to ``notes`` (also when the metadata names no assignment).
    """
    by_name = {a.name: a for a in assignments}
    meta = nb.get("metadata") if isinstance(nb, dict) else None
    declared = meta.get("dptlearn") if isinstance(meta, dict) else None
    claimed = declared.get("assignment") if isinstance(declared, dict) else None
    claimed = claimed if isinstance(claimed, str) or claimed is None else repr(claimed)[:80]
    filename = original_name(path.name)
    stem = Path(filename).stem
    prefixed = [a for a in assignments if names_assignment(path.name, a.name)]
    by_file = by_name.get(stem) or (max(prefixed, key=lambda a: len(a.name)) if prefixed else None)
    if claimed in by_name:
        if by_file is not None and by_file.name != claimed and notes is not None:
            notes.append(f"graded as {claimed}, the assignment named in the notebook's metadata; "
                         f"its file name {filename!r} suggests {by_file.name}")
        return by_name[claimed]
    if claimed is not None and notes is not None:
        notes.append(f"the notebook's metadata names assignment {str(claimed)[:80]!r}, which "
                     f"does not exist; " + (f"matched {by_file.name} by its file name"
                                            if by_file else "its file name matches none either"))
    return by_file


# ----------------------------------------------------------------------------- who and what

SHARD_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$", re.ASCII)


@dataclass(frozen=True)
class Student:
    """Who handed a notebook in, as far as its path tells."""

    name: str                       # folder name, Canvas's "lastfirst" or Moodle's full name
    lms_id: str | None = None       # Canvas's user id (stable across assignments)
    source: str = "folder"          # "folder", "canvas" or "moodle"
    late: bool = False              # Canvas marked the file _LATE
    folder: str = ""                # the folder the identity comes from, as given


def _from_folder(name: str, folder: str) -> Student:
    m = MOODLE_FOLDER_RE.match(name)
    return (Student(m["name"].strip(), source="moodle", folder=folder) if m
            else Student(name, folder=folder))


def _from_download_name(p: Path, folder: str) -> Student:
    if m := CANVAS_FILE_RE.match(p.name):
        return Student(m["name"], m["uid"], "canvas", late=bool(m["late"]), folder=folder)
    if m := MOODLE_FILE_RE.match(p.name):
        return Student(m["name"].strip(), source="moodle", folder=folder)
    return _from_folder(p.parent.name or str(p.parent), folder)


def _download_student(name: str) -> str | None:
    """Whom an LMS download name names (Canvas's user id or Moodle's full name), else None."""
    if m := CANVAS_FILE_RE.match(name):
        return f"id:{m['uid']}"
    if m := MOODLE_FILE_RE.match(name):
        return f"name:{m['name'].strip()}"
    return None


def is_download_folder(folder: str, given: list[str] = (), classes: bool = False) -> bool:
    """Whether the notebooks lying directly in ``folder`` are an LMS download (their names are
    the students) rather than one student's own folder (the folder is the student): every
    notebook there (on disk, and ``given``) has a download name, and they name two students or
    more, or the folder also holds students' folders (``classes``). One plain name, or download
    names of one student alone, make it a student's folder: a student cannot hand in a file
    named as a classmate's download."""
    try:
        names = [n for n in os.listdir(folder) if n.endswith(".ipynb")]
    except OSError:
        names = []
    whom = {_download_student(n) for n in [*names, *given]}
    return None not in whom and (len(whom) >= 2 or classes)


def _below(p: Path, roots: list[str]) -> tuple[str, tuple[str, ...]] | None:
    """(the given folder, the path below it) for the nearest given folder holding ``p``."""
    found = [(r, p.relative_to(Path(os.path.abspath(r))).parts) for r in roots
             if Path(os.path.abspath(r)) in p.parents]
    return min(found, key=lambda f: len(f[1])) if found else None


def identify_student(path: str, roots: list[str], flat: bool = True,
                     downloads: set[str] | None = None) -> Student:
    """The student of ``path``, given the files and folders named on the command line.

    A file in a folder below a given folder belongs to that first folder (one folder per
    student; Moodle's ``Full Name_123_assignsubmission_file_`` folders give the full name).
    Download names (Canvas, Moodle) are read only where the LMS puts them: a file lying
    directly in a given folder, or given itself when all the files given (``flat``) share one
    folder; otherwise a file belongs to the folder that holds it. ``folder`` is where the
    identity comes from: files of different folders never share a student. ``downloads`` (the
    absolute folders that ``is_download_folder``; None: all) limits where download names count:
    elsewhere the file is the student's of the folder that holds it.
    """
    p = Path(os.path.abspath(path))
    below = _below(p, roots)
    if below is not None and len(below[1]) > 1:
        return _from_folder(below[1][0], os.path.normpath(os.path.join(below[0], below[1][0])))
    folder = os.path.normpath(below[0] if below else os.path.dirname(path) or ".")
    if (below is not None or flat) and (downloads is None or str(p.parent) in downloads):
        return _from_download_name(p, folder)
    return _from_folder(p.parent.name or str(p.parent), folder)


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> (K, N) with 1 <= K <= N; ValueError naming what was expected."""
    m = SHARD_RE.match(text)
    if not m:
        raise ValueError(f"expected K/N with whole numbers, e.g. 2/4, got {text!r}")
    k, n = int(m[1]), int(m[2])
    if not 1 <= k <= n:
        raise ValueError(f"expected 1 <= K <= N, got {k}/{n}")
    return k, n


def shard_of(keys: list[str], n: int) -> dict[str, int]:
    """Shard number (1..n) of each student key: round robin over the sorted distinct keys.

    All notebooks of a student share a key, hence a shard; the order of the command line
    does not matter; shard sizes differ by at most one student.
    """
    return {key: i % n + 1 for i, key in enumerate(sorted(set(keys)))}


def assign_students(results: list[Result], inputs: list[str]) -> None:
    """Fill each result's student fields from its path (see ``identify_student``).

    When several folders claim one student (the same Canvas id or name), each folder is graded
    as a student of its own, and every one of their results says so in a note.
    """
    loose = {os.path.dirname(os.path.abspath(r.submission)) for r in results
             if _below(Path(os.path.abspath(r.submission)), inputs) is None}
    direct: dict[str, list[str]] = {}      # folder -> the names in it that could be downloads
    for r in results:
        p = Path(os.path.abspath(r.submission))
        direct.setdefault(str(p.parent), []).append(p.name)
    above = {str(q) for r in results for q in Path(os.path.abspath(r.submission)).parents[1:]}
    downloads = {d for d, names in direct.items() if is_download_folder(d, names, d in above)}
    claims: dict[str, set[str]] = {}
    for r in results:
        s = identify_student(r.submission, inputs, flat=len(loose) <= 1, downloads=downloads)
        if s != identify_student(r.submission, inputs, flat=len(loose) <= 1):
            r.notes.append(f"the file name {safetext.line(os.path.basename(r.submission), 120)!r} "
                           f"is an LMS download name, but it lies in the student's own folder: "
                           f"graded as {s.name!r}'s")
        r.student, r.student_id, r.student_from = s.name, s.lms_id, s.source
        r.student_folder = s.folder
        claims.setdefault(s.lms_id or s.name, set()).add(s.folder)
        if s.late:
            r.notes.append("handed in late (Canvas's download name says LATE)")
    for r in results:
        folders = sorted(claims[r.student_id or r.student or ""])
        if len(folders) > 1:
            r.notes.append(f"{'two' if len(folders) == 2 else len(folders)} folders claim student "
                           f"{r.student!r} ({', '.join(folders)}); each is graded as a student "
                           f"of its own")


def in_shard(results: list[Result], shard: tuple[int, int] | None) -> list[Result]:
    """The results of shard K of N (all of them without a shard); students must be assigned."""
    if shard is None:
        return results
    k, n = shard
    where = shard_of([r.student_key for r in results], n)
    return [r for r in results if where[r.student_key] == k]
