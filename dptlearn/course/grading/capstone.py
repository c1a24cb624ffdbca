"""The capstone's zero, linked to its cause: a sibling notebook that was not graded.

Notebook 06 runs the student's own 01–05 (docs/authoring.md, "The capstone"); when one of them is
missing from the student's sandbox its exercises score 0 with ``… needs your answers from
03_reassemble.ipynb … and it is not there``. The usual cause is a notebook the student handed in
under another name without its metadata, which then matched no assignment (``not graded: no
assignment matches …``). ``capstone_notes`` finds such pairs among one student's results and says
so, for ``summary.md``'s *Needs a look* and the student's feedback; it reads the results only (no
state), so a run and a merge say the same.
"""
from __future__ import annotations

import re
from pathlib import Path

NEEDS = re.compile(r"needs your answers from ((?:[\w.-]+\.ipynb(?:, )?)+) in the same folder")


def capstone_notes(results: list) -> list[tuple[object, str]]:
    """(the capstone's result, a note) for each capstone that scored 0 for missing siblings while
    the same student handed in a notebook that matched no assignment."""
    by_student: dict[str, list] = {}
    for r in results:
        by_student.setdefault(r.student_key, []).append(r)
    out = []
    for mine in by_student.values():
        unmatched = [r for r in mine if not r.assignment]
        if not unmatched:
            continue
        for r in mine:
            missing = sorted({name for e in r.exercises for m in [NEEDS.search(e.message or "")]
                              if m for name in m.group(1).split(", ")})
            if missing:
                files = ", ".join(repr(Path(u.submission).name) for u in unmatched)
                out.append((r, f"{r.assignment} scored 0 because it needs {', '.join(missing)}; "
                               f"this student's {files} matched no assignment (see Not graded): "
                               f"if it is one of those, rename it to its assignment's name (or keep "
                               f"the notebook's metadata) and regrade"))
    return out
