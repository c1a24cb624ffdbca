"""Property-based fuzzing of the grader's untrusted-file reader and of every report writer (issue #21).

* ``load_results`` on arbitrary bytes and on random mutations of a real probe file (the fuzz that
  found zipfile's NotImplementedError): it returns plain data or raises ``UnreadableResults``,
  nothing else, ever;
* every writer on results whose every text field is arbitrary Unicode (lone surrogates, controls,
  bidi and zero-width characters, Markdown): ``<name>.json`` loads with ``json.loads`` (strict) and
  round-trips through ``Result.from_json``, ``<name>.junit.xml`` parses with ``xml.etree``,
  ``summary.csv``/``gradebook.csv`` parse with ``csv`` into rectangular tables, ``summary.md`` renders
  (markdown-it-py) without links, emphasis, strikethrough, images or HTML.
"""
from __future__ import annotations

import csv
import io
import json
import tempfile
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dptlearn.course.grading import report, untrusted

markdown_it = pytest.importorskip("markdown_it", reason="markdown-it-py renders summary.md")
MD = markdown_it.MarkdownIt("commonmark").enable(["table", "strikethrough"])
INERT_TAGS = {"h1", "h2", "h3", "p", "table", "thead", "tbody", "tr", "th", "td", "code", "ul", "li", "strong"}

DANGEROUS = ("\u202a\u202e\u2066\u2069\u200b\u200d\ufeff\x00\x01\x08\x0b\x0c\x1b\x1f\x7f\x85"
             "*_~`|\\[]()<>!&#:@=+-\n\t\r\ud800\udfff\udce9\ufffe")
ANY_TEXT = st.text(st.one_of(st.characters(exclude_categories=[]), st.sampled_from(DANGEROUS)), max_size=60) \
    | st.sampled_from(["https://evil.example/x", "a@b.co", "**PASSED**", "~~x~~", "<img src=x>", "=1+2",
                       "a \\| b", "`x`"])
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def probe_file() -> bytes:
    buf = io.BytesIO()
    torch.save({"check": "check_add", "results": [{"value": 3, "calls": []},
                                                  {"value": torch.arange(6.0).reshape(2, 3), "calls": []}]}, buf)
    return buf.getvalue()


BASE = probe_file()


def loads_or_refuses(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "r.pt"
        path.write_bytes(data)
        try:
            payload = untrusted.load_results(path)
        except untrusted.UnreadableResults as exc:
            assert "\n" not in str(exc) and len(str(exc)) <= 400
            return
        untrusted.require_plain_data(payload)


@FUZZ
@given(st.binary(max_size=2000))
def test_results_loader_on_any_bytes(data):
    loads_or_refuses(data)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(BASE) - 1), st.integers(0, 255)), min_size=1, max_size=8))
def test_results_loader_on_mutated_probe_files(edits):
    data = bytearray(BASE)
    for pos, byte in edits:
        data[pos] = byte
    loads_or_refuses(bytes(data))


def test_results_loader_on_the_zip_version_bomb():
    loads_or_refuses((Path(__file__).parent / "grading" / "bombs" / "zip_version.pt").read_bytes())


# ----------------------------------------------------------------------------- writers

@st.composite
def results(draw):
    out = []
    for i in range(draw(st.integers(1, 3))):
        exercises = [report.ExerciseResult(ex, p, 2, p == 2, draw(ANY_TEXT),
                                           draw(st.sampled_from([[], ["reference"], ["forgery", "identical"]])))
                     for ex, p in (("add", draw(st.sampled_from([0, 2]))), ("grid", 0))]
        out.append(report.Result(
            submission=draw(ANY_TEXT) + f"/{i}.ipynb", name=f"s{i}", assignment="01_fixture",
            max_score=4, exercises=exercises, error=draw(st.none() | ANY_TEXT),
            student=draw(ANY_TEXT), student_id=draw(st.none() | ANY_TEXT), student_from="folder",
            student_folder=draw(ANY_TEXT), notes=draw(st.lists(ANY_TEXT, max_size=2))))
    return out


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags = set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)


@FUZZ
@given(results())
def test_every_writer_writes_what_its_reader_parses(rs):
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for r in rs:
            report.write_partial_junit(out / f"{r.name}.junit.xml", r)
            report.write_result(out, r)
            back = json.loads((out / f"{r.name}.json").read_text(encoding="utf-8"), strict=True)
            assert report.Result.from_json(back).to_json() == back
            ET.parse(out / f"{r.name}.junit.xml")
        report.write_summaries(out, rs)
        for name in ("summary.csv", "gradebook.csv"):
            rows = list(csv.reader(io.StringIO((out / name).read_text(encoding="utf-8"))))
            assert len({len(row) for row in rows}) == 1, name
            assert not any(cell.startswith(("=", "+", "-", "@")) for row in rows[1:] for cell in row
                           if not cell.lstrip("-").replace(".", "").isdigit()), name
        parser = _Tags()
        parser.feed(MD.render((out / "summary.md").read_text(encoding="utf-8")))
        assert parser.tags <= INERT_TAGS, parser.tags
