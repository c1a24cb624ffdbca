"""Every class-level file of a report folder, from the per-submission ``Result``s alone.

``summary.csv``, ``summary.md`` and ``gradebook.csv`` (``report.py``), ``feedback/<student>.html``
and ``.md`` (``feedback.py``) and ``written-answers.csv`` (``written.py``). A grading run and a
merge both write them here, in a fixed order from the same results, so a merge of shards writes
the same bytes as one run.
"""
from __future__ import annotations

from pathlib import Path

from .feedback import write_feedback
from .report import Result, write_summaries
from .written import write_sheet


def write_class_files(report_dir: Path, results: list[Result]) -> None:
    write_summaries(report_dir, results)
    write_feedback(report_dir, results)
    write_sheet(report_dir, results)
