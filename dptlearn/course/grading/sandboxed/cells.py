"""What a notebook's cells say: tags, exercise ids, points, sources (standard library only).

Both sides of the sandbox read cells through here: the grading plugin inside it, and outside
it the grader (staging, integrity flags, the judge's set-up) and the exercise generator. So
they agree on what a tag is, which exercise a cell belongs to and which of its lines are
Python. ``clean_message`` is the one way a message is cut for a report, inside and outside.
"""
from __future__ import annotations

import re

MESSAGE_CHARS = 300
ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
NOT_PYTHON = ("%", "!")         # IPython magics and shell lines start so


def cell_tags(cell: dict) -> list[str]:
    """The tags of a notebook cell (an empty list when it has none or they are malformed)."""
    tags = (cell.get("metadata") or {}).get("tags") or []
    return [t for t in tags if isinstance(t, str)] if isinstance(tags, list) else []


def exercise_of(tags: list[str]) -> str | None:
    """The ``<id>`` of the first ``ex:<id>`` tag, or None."""
    return next((t[3:] for t in tags if t.startswith("ex:") and len(t) > 3), None)


def cell_exercise(cell: dict) -> str | None:
    """The exercise a cell belongs to (its ``ex:<id>`` tag), or None."""
    return exercise_of(cell_tags(cell))


def points_of(tags: list[str]) -> str | None:
    """The ``<n>`` of the first ``points:<n>`` tag, or None."""
    return next((t[7:] for t in tags if t.startswith("points:")), None)


def source_of(cell: dict) -> str:
    """A cell's source as one string (the file may hold a string or a list of lines)."""
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def python_source(source: str) -> str:
    """``source`` without its IPython magic and shell lines (``%...``, ``!...``): what
    ``ast.parse`` or ``exec`` can take."""
    return "\n".join(line for line in source.splitlines()
                     if not line.lstrip().startswith(NOT_PYTHON))


def fresh_cell(cell_type: str, source: str | list[str], tags: list[str]) -> dict:
    """A new cell of ``cell_type``: ``source``, only ``tags`` as metadata, no outputs."""
    new = {"cell_type": cell_type, "metadata": {}, "source": source}
    if tags:
        new["metadata"]["tags"] = tags
    if cell_type == "code":
        new.update(execution_count=None, outputs=[])
    return new


def clean_message(text: str, limit: int = MESSAGE_CHARS) -> str:
    """Strip ANSI codes, fold whitespace to single spaces and cut to ``limit`` characters."""
    text = " ".join(ANSI_RE.sub("", str(text)).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
