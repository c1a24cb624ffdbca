"""Submissions in: finding the notebooks, reading them safely, matching each to its assignment."""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..exercises import Assignment

MAX_NOTEBOOK_BYTES = 200 * 2**20


class InvalidSubmission(Exception):
    """The submission cannot be graded (not a notebook, no matching assignment...)."""


def expand_submissions(args: list[str]) -> list[str]:
    """Files as given; folders become their ``*.ipynb`` files (recursively, sorted)."""
    paths = []
    for arg in args:
        p = Path(arg)
        if p.is_dir():
            paths += [str(f) for f in sorted(p.rglob("*.ipynb"))
                      if ".ipynb_checkpoints" not in f.parts]
        else:
            paths.append(arg)
    return paths


def report_names(paths: list[str]) -> list[str]:
    """Unique file stems for the reports: the shortest distinguishing tail of each path.

    ``alice/03.ipynb`` and ``bob/03.ipynb`` become ``alice__03`` and ``bob__03``.
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
    seen: dict[str, int] = {}
    unique = []
    for n in names:                      # the same path given twice: number the repeats
        n = "".join(c if c.isalnum() or c in "._-" else "_" for c in n) or "submission"
        seen[n] = seen.get(n, 0) + 1
        unique.append(n if seen[n] == 1 else f"{n}-{seen[n]}")
    return unique


def read_submission(path: Path) -> dict:
    """Parse a submitted notebook, raising InvalidSubmission with a readable reason."""
    try:
        size = path.stat().st_size
        if size > MAX_NOTEBOOK_BYTES:
            raise InvalidSubmission(f"not graded: the file is {size / 2**20:.0f} MiB, more than "
                                    f"the {MAX_NOTEBOOK_BYTES // 2**20} MiB limit (clear outputs)")
        nb = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise InvalidSubmission("not graded: the file does not exist") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidSubmission(f"not a valid notebook: the file is not JSON ({exc})") from None
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise InvalidSubmission("not a valid notebook: expected a JSON object with a 'cells' list")
    if nb.get("nbformat", 4) != 4:
        raise InvalidSubmission(f"not a valid notebook: expected nbformat 4, got "
                                f"{nb.get('nbformat')!r}; open and save it in JupyterLab")
    for i, cell in enumerate(nb["cells"]):
        if not (isinstance(cell, dict) and cell.get("cell_type") in ("code", "markdown", "raw")
                and isinstance(cell.get("source", ""), (str, list))):
            raise InvalidSubmission(f"not a valid notebook: cell {i} is not a code, markdown or "
                                    f"raw cell with a source")
    return nb


def find_assignment(nb: dict | None, path: Path, assignments: list[Assignment]) -> Assignment | None:
    """The assignment named in ``metadata.dptlearn.assignment``, else by file name.

    File-name match: the stem equals an assignment's name, or starts with it (the longest wins),
    so ``03_reassemble-alice.ipynb`` still finds ``03_reassemble``.
    """
    by_name = {a.name: a for a in assignments}
    meta = (nb or {}).get("metadata") if isinstance(nb, dict) else None
    declared = ((meta or {}).get("dptlearn") or {}) if isinstance(meta, dict) else {}
    if isinstance(declared, dict) and declared.get("assignment") in by_name:
        return by_name[declared["assignment"]]
    stem = path.stem
    if stem in by_name:
        return by_name[stem]
    prefixed = [a for a in assignments if stem.startswith(a.name)]
    return max(prefixed, key=lambda a: len(a.name)) if prefixed else None
