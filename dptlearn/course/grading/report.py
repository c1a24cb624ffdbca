"""Reports out: per-submission JSON and JUnit files, the class summary (CSV and Markdown)."""
from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .plugin import clean_message


@dataclass
class ExerciseResult:
    id: str
    points: int
    max_points: int
    passed: bool
    message: str


@dataclass
class Result:
    """Everything the reports say about one submission."""

    submission: str                     # the path as given on the command line
    name: str                           # unique report file stem
    assignment: str | None = None
    score: int = 0
    max_score: int = 0
    exercises: list[ExerciseResult] = field(default_factory=list)
    error: str | None = None
    duration_s: float = 0.0

    def to_json(self) -> dict:
        d = asdict(self)
        d["duration_s"] = round(self.duration_s, 2)
        return d


def write_junit(path: Path, name: str, cases: list[ET.Element]) -> None:
    """One submission's testcases (cut from its batch's report) as a JUnit XML file."""
    count = {k: sum(1 for tc in cases if tc.find(k) is not None)
             for k in ("failure", "error", "skipped")}
    suite = ET.Element("testsuite", name=name, tests=str(len(cases)),
                       failures=str(count["failure"]), errors=str(count["error"]),
                       skipped=str(count["skipped"]),
                       time=f"{sum(float(tc.get('time') or 0) for tc in cases):.3f}")
    suite.extend(cases)
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)


def write_error_junit(path: Path, name: str, message: str) -> None:
    """The JUnit file of a submission that could not be run."""
    case = ET.Element("testcase", classname=name, name="submission")
    ET.SubElement(case, "error", message=message).text = message
    write_junit(path, name, [case])


def write_partial_junit(path: Path, result: Result) -> None:
    """One testcase per exercise, for a run that left no pytest report."""
    cases = []
    for ex in result.exercises:
        case = ET.Element("testcase", classname=result.name, name=f"exercise {ex.id}")
        props = ET.SubElement(case, "properties")
        for k, v in (("exercise", ex.id), ("role", "check"), ("points", ex.max_points)):
            ET.SubElement(props, "property", name=k, value=str(v))
        if not ex.passed:
            ET.SubElement(case, "failure", message=ex.message).text = ex.message
        cases.append(case)
    write_junit(path, result.name, cases)


def write_result(report_dir: Path, result: Result) -> None:
    """``<name>.json``; also the JUnit file when no run produced one."""
    result.score = sum(e.points for e in result.exercises)
    junit = report_dir / f"{result.name}.junit.xml"
    if not junit.exists():
        write_error_junit(junit, result.name, result.error or "not graded")
    (report_dir / f"{result.name}.json").write_text(
        json.dumps(result.to_json(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def exercise_columns(results: list[Result]) -> list[str]:
    """Every exercise id met, in first-seen order."""
    cols: list[str] = []
    for r in results:
        cols += [e.id for e in r.exercises if e.id not in cols]
    return cols


def summary_csv(results: list[Result]) -> str:
    cols = exercise_columns(results)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["submission", "report", "assignment", "score", "max_score", "error"]
               + [f"{c}{suffix}" for c in cols for suffix in (":points", ":max", ":message")])
    for r in results:
        by_id = {e.id: e for e in r.exercises}
        row = [r.submission, r.name, r.assignment or "", r.score, r.max_score, r.error or ""]
        for c in cols:
            e = by_id.get(c)
            row += [e.points, e.max_points, e.message] if e else ["", "", ""]
        w.writerow(row)
    return buf.getvalue()


def _md(text: str) -> str:
    return clean_message(text, 400).replace("|", "\\|")


def summary_md(results: list[Result], seconds: float) -> str:
    cols = exercise_columns(results)
    lines = ["# Grading summary", "",
             "| submission | assignment | score | " + " | ".join(f"`{c}`" for c in cols) + " |",
             "|---|---|---|" + "---|" * len(cols)]
    for r in results:
        by_id = {e.id: e for e in r.exercises}
        cells = []
        for c in cols:
            e = by_id.get(c)
            if e is None:
                cells.append("")
            elif e.passed or r.error:              # a run-level error is shown once, in "score"
                cells.append(f"{'✓' if e.passed else '✗'} {e.points}/{e.max_points}")
            else:
                cells.append(f"✗ {e.points}/{e.max_points}: {_md(e.message)}")
        score = f"**{r.score}/{r.max_score}**" + (f" ({_md(r.error)})" if r.error else "")
        lines.append(f"| {_md(r.submission)} | {r.assignment or '—'} | {score} | "
                     + " | ".join(cells) + " |")
    lines += ["", f"{len(results)} submission(s) graded in {seconds:.1f} s."]
    return "\n".join(lines) + "\n"
