"""File names that learning-management systems give to downloaded submissions (standard library only).

Both the grader (which names the student and the assignment of each file) and `course.answers` (which finds a
learner's sibling notebooks, possibly inside a teacher's download) read names through here, so the two agree.
"""
from __future__ import annotations

import re
from pathlib import Path

# Canvas's "Download Submissions": <lastfirst>[_LATE]_<user id>_<submission id>_<original name>
CANVAS_FILE_RE = re.compile(
    r"^(?P<name>[^_]+?)(?P<late>_LATE)?_(?P<uid>\d+)_(?P<sid>\d+)_(?P<orig>.+)$", re.IGNORECASE)
# Moodle's "Download all submissions": <Full Name>_<participant id>_assignsubmission_file_<name>,
# as one flat file or (the default since Moodle 3.1) as a folder holding the original file
MOODLE_FILE_RE = re.compile(r"^(?P<name>[^_]+)_(?P<pid>\d+)_assignsubmission_file_(?P<orig>.+)$")
MOODLE_FOLDER_RE = re.compile(r"^(?P<name>[^_]+)_(?P<pid>\d+)_assignsubmission_file_?$")


def original_name(filename: str) -> str:
    """The file name the student gave, without a Canvas or Moodle download prefix."""
    m = CANVAS_FILE_RE.match(filename) or MOODLE_FILE_RE.match(filename)
    return m["orig"] if m else filename


def names_assignment(filename: str, assignment: str) -> bool:
    """Whether a file's name says it answers ``assignment``: after dropping a download prefix, its stem is the
    assignment's name or starts with it (``03_reassemble-alice.ipynb``, Canvas's
    ``doejane_12_345_03_reassemble-1.ipynb``). Where several assignments match one name, the grader takes the
    longest."""
    return Path(original_name(filename)).stem.startswith(assignment)
