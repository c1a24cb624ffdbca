"""Report names that carry the student: ``alice__01_tokens_and_hooks__1_``, not ``01_tokens_and_hooks__1_``.

``submissions.report_names`` gives each submission the shortest tail of its path that is unique
in the class, so a student's second copy (``alice/01_tokens_and_hooks (1).ipynb``) can be named
without the student's folder. Once the students are known (``submissions.assign_students``),
``carry_students`` puts the student in front of every name of a student with more than one
submission that does not already start with the student or hold them as a part; a name the grader had to replace (``submission-<hash>``) and a name that
would collide are kept. It runs on the whole class before sharding, so every shard agrees.
"""
from __future__ import annotations

from .submissions import safe_name


def carry_students(results: list) -> None:
    """Rename, in place, the submissions of every student who handed in more than one."""
    taken = {r.name.casefold() for r in results}
    count: dict[str, int] = {}
    for r in results:
        count[r.student_key] = count.get(r.student_key, 0) + 1
    for r in results:
        if not r.student or r.name.startswith("submission-") or count[r.student_key] < 2:
            continue
        stem = safe_name(r.student).casefold()
        name = r.name.casefold()
        if name.startswith(stem) or stem in name.split("__"):
            continue
        new = safe_name(f"{safe_name(r.student)}__{r.name}")
        if new.casefold() not in taken:
            taken.discard(name)
            taken.add(new.casefold())
            r.name = new
