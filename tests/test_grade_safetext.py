"""dptlearn.course.grading.safetext: submission text made safe, and the writers in which it stays data.

Unit tests pin each rule with hand-written cases; hypothesis property tests feed arbitrary Unicode
(lone surrogates, controls, bidi and zero-width characters and Markdown's punctuation drawn often)
and check every output with its standard reader: ``json.loads`` (strict), ``xml.etree`` and a real
Markdown renderer (markdown-it-py, CommonMark with GFM tables and strikethrough).
"""
from __future__ import annotations

import io
import json
import os
import re
import unicodedata
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dptlearn.course.grading import safetext

markdown_it = pytest.importorskip("markdown_it", reason="markdown-it-py renders the Markdown checks")
MD = markdown_it.MarkdownIt("commonmark").enable(["table", "strikethrough"])

BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e"
CONTROLS = "".join(map(chr, [*range(0x00, 0x09), 0x0b, 0x0c, *range(0x0e, 0x20), *range(0x7f, 0xa0)]))
MD_PUNCT = "*_~`|\\[]()<>!&#:@/.-+=\"' \n\t"
DANGEROUS = (BIDI + ZERO_WIDTH + CONTROLS + MD_PUNCT + "\ud800\udfff\udce9\ufffe\uffff\U0010ffff"
             + "\u2028\u2029\x85")
ANY_CHAR = st.one_of(st.characters(exclude_categories=[]), st.sampled_from(DANGEROUS))
ANY_TEXT = st.text(ANY_CHAR, max_size=80) | st.sampled_from([
    "https://evil.example/x", "www.evil.example", "mail me: a@b.co", "**PASSED**", "_em_ *em*",
    "~~struck~~", "<img src=x onerror=alert(1)>", "<!-- c -->", "[x](http://e)", "![i](http://e/i.png)",
    "&amp; &#60;", "a | b", "a \\| b", "x\\", "`code` ``two``", "\\", "|", "- item", "# heading"])
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def visible_only(s: str) -> bool:
    """No character that ``text`` must show as an escape is left in ``s``."""
    return not any(safetext.hidden(c) for c in s)


# ----------------------------------------------------------------------------- unit: text

def test_lone_surrogates_become_visible_escapes():
    assert safetext.data("a\ud800b") == "a\\ud800b"
    assert safetext.text("\udfff") == "\\udfff"
    assert safetext.data("ok ✓ 猫 \U0001f600") == "ok ✓ 猫 \U0001f600"     # valid text unchanged
    safetext.text("x\ud800").encode("utf-8")                              # encodable


def test_controls_bidi_and_zero_width_are_shown_not_kept():
    assert safetext.text("a\x01b\x7fc\x9bd") == "a\\x01b\\x7fc\\x9bd"
    assert safetext.text("pass\u202edeliaf") == "pass\\u202edeliaf"
    assert safetext.text("ad\u200bmin\u2066x\u2069") == "ad\\u200bmin\\u2066x\\u2069"
    assert safetext.text("\ufeff\u00ad") == "\\ufeff\\xad"
    assert safetext.text("tab\tnew\nline\r") == "tab\tnew\nline\r"       # kept: XML allows them
    assert safetext.text("\ufffe\uffff\U0010ffff") == "\\ufffe\\uffff\\U0010ffff"


def test_terminal_escapes_are_removed():
    assert safetext.text("\x1b[31mred\x1b[0m") == "red"
    assert safetext.text("\x1b]8;;http://evil\x07link\x1b]8;;\x07") == "link"   # OSC 8 hyperlink
    assert safetext.text("\x1bc") == "\\x1bc"                             # any other ESC is shown


def test_line_folds_and_cuts():
    assert safetext.line("a\n\n b\t\u2028c") == "a b c"
    assert safetext.line("x" * 500, 10) == "x" * 9 + "…"


def test_tree_cleans_keys_and_values_and_non_finite_floats():
    got = safetext.tree({"k\ud800": ["v\udc80", 1, 2.5, float("nan"), None, True]})
    assert got == {"k\\ud800": ["v\\udc80", 1, 2.5, None, None, True]}


# ----------------------------------------------------------------------------- unit: names

def test_a_name_that_is_not_utf8_shows_its_bytes():
    name = os.fsdecode(b"caf\xe9-\xff.ipynb")                # as os.listdir returns it
    assert safetext.path_text(name) == "caf\\xe9-\\xff.ipynb"
    assert not safetext.representable(name)
    assert safetext.representable("Jane Doe_1_assignsubmission_file_/02 — é.ipynb")
    assert not safetext.representable("alice\u202e.ipynb") and not safetext.representable("a\x07")
    assert not safetext.representable("alice\nbob")


def test_fallback_name_is_stable_hex_and_total():
    a = safetext.fallback_name(os.fsdecode(b"x/\xe9.ipynb"))
    assert a == safetext.fallback_name(os.fsdecode(b"x/\xe9.ipynb"))
    assert a.startswith("submission-") and len(a) == len("submission-") + 16
    int(a.removeprefix("submission-"), 16)
    assert safetext.fallback_name("\ud800") != safetext.fallback_name("\ud801")


# ----------------------------------------------------------------------------- unit: writers

class _Html(HTMLParser):
    """Tags met, and the text outside ``<code>`` and inside it."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags, self.outside, self.inside, self._code = [], [], [], 0

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self._code += tag == "code"

    def handle_endtag(self, tag):
        self._code -= tag == "code"

    def handle_data(self, d):
        (self.inside if self._code else self.outside).append(d)


def render(markdown: str) -> _Html:
    parser = _Html()
    parser.feed(MD.render(markdown))
    return parser


INERT_TAGS = {"table", "thead", "tbody", "tr", "th", "td", "code", "ul", "li", "p"}


def assert_inert_row(cells: list[str]):
    """A GFM table whose body row holds ``md_code(cell, table=True)`` per cell renders as one row
    of exactly those cells, each one code span showing ``line(cell)``, nothing else live."""
    header = "| " + " | ".join(f"c{i}" for i in range(len(cells))) + " |"
    rule = "|" + "---|" * len(cells)
    row = "| " + " | ".join(safetext.md_code(c, table=True) for c in cells) + " |"
    html = MD.render("\n".join([header, rule, row]) + "\n")
    parser = _Html()
    parser.feed(html)
    assert html.count("<td>") == len(cells), html
    assert set(parser.tags) <= INERT_TAGS, html
    # documented display rule of table cells: a backslash right before a pipe is kept apart by a space
    shown = [re.sub(r"(\\+)\|", r"\1 |", safetext.line(c)) for c in cells]
    outside = "".join(parser.outside)
    for i in range(len(cells)):
        outside = outside.replace(f"c{i}", "", 1)
    assert outside.replace("—", "", shown.count("")).strip() == "", html
    assert "".join(parser.inside) == "".join(shown), (parser.inside, shown)


def test_markdown_code_span_is_inert():
    for msg in ["see https://evil.example/x and a@b.co", "**PASSED** _em_ ~~no~~", "<b>x</b> <!-- c -->",
                "[x](http://e) ![i](http://e/i.png)", "`tick` ``two`` ```", "a | b", "a \\| b", "x\\",
                "&amp; &#60;", "pass\u202edeliaf z\u200bw", "`", "``", "` x `"]:
        assert_inert_row([msg, "honest"])
        html = render("- " + safetext.md_code(msg) + "\n")
        assert set(html.tags) <= INERT_TAGS and html.tags.count("code") == 1, msg
        assert "".join(html.inside) == safetext.line(msg), (msg, html.inside)
        assert "".join(html.outside).strip() == "", msg


def test_md_code_of_nothing_is_a_dash():
    assert safetext.md_code("") == "—" == safetext.md_code(" \n\t")


def test_xml_text_parses():
    case = ET.Element("testcase", name=safetext.xml_text("a\x01\ud800\ufffe"))
    ET.SubElement(case, "failure", message=safetext.xml_text("\x00\x1b]0;t\x07x")).text = \
        safetext.xml_text("\x0c<&>\"")
    back = ET.fromstring(ET.tostring(case, encoding="unicode"))
    assert back.get("name") == "a\\x01\\ud800\\ufffe"
    assert back.find("failure").get("message") == "\\x00x"
    assert back.find("failure").text == "\\x0c<&>\""


# ----------------------------------------------------------------------------- properties

@FAST
@given(ANY_TEXT)
def test_text_is_safe_idempotent_and_loses_nothing_visible(s):
    t = safetext.text(s)
    t.encode("utf-8")
    assert visible_only(t) and "\x1b" not in t
    assert safetext.text(t) == t
    if "\x1b" not in s:                 # every visible character of s is still there, in order
        kept = iter(t)
        assert all(c in kept for c in s if not safetext.hidden(c))


@FAST
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | ANY_TEXT,
                    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(ANY_TEXT, kids, max_size=4),
                    max_leaves=20))
def test_json_loads_strictly_and_round_trips(obj):
    out = safetext.json_dumps(obj, indent=1)
    out.encode("utf-8")
    assert json.loads(out, strict=True) == safetext.tree(obj)
    assert safetext.tree(safetext.tree(obj)) == safetext.tree(obj)


@FAST
@given(st.lists(ANY_TEXT, min_size=1, max_size=4))
def test_junit_with_any_text_is_well_formed(texts):
    suite = ET.Element("testsuite", name=safetext.xml_text(texts[0]))
    for t in texts:
        case = ET.SubElement(suite, "testcase", name=safetext.xml_text(t))
        ET.SubElement(case, "failure", message=safetext.xml_text(t)).text = safetext.xml_text(t)
    buf = io.BytesIO()
    ET.ElementTree(suite).write(buf, encoding="utf-8", xml_declaration=True)
    back = ET.fromstring(buf.getvalue())
    assert [c.get("name") for c in back] == [safetext.text(t).replace("\r", "\r") for t in texts]
    assert [c.find("failure").text or "" for c in back] == \
        [safetext.text(t).replace("\r\n", "\n").replace("\r", "\n") for t in texts]


@FAST
@given(st.lists(ANY_TEXT, min_size=1, max_size=3))
def test_markdown_with_any_text_renders_inert(cells):
    assert_inert_row(cells)
    for c in cells:
        html = render("- " + safetext.md_code(c) + "\n")
        assert set(html.tags) <= INERT_TAGS
        assert "".join(html.inside) == (safetext.line(c) if safetext.line(c) else "")


@FAST
@given(st.binary(max_size=40))
def test_any_file_name_has_a_safe_display_and_a_fallback(raw):
    name = os.fsdecode(raw)
    shown = safetext.path_text(name)
    shown.encode("utf-8")
    assert visible_only(shown)
    assert safetext.representable(name) == (shown == name and not set(name) & set("\t\n\r"))
    if safetext.representable(name):
        assert os.fsencode(name) == raw and raw.decode("utf-8") == name
    assert safetext.fallback_name(name).isascii()


def test_the_hidden_set_is_what_xml_forbids_and_more():
    """Every code point XML 1.0 forbids is hidden; hidden ones are controls, format characters,
    surrogates or non-characters only (no letter, digit, mark, punctuation or space)."""
    for n in [*range(0x20), 0xfffe, 0xffff, *range(0xd800, 0xe000, 97)]:
        if chr(n) not in "\t\n\r":
            assert safetext.hidden(chr(n)), hex(n)
    for n in range(0, 0x110000, 7):
        if safetext.hidden(chr(n)):
            assert unicodedata.category(chr(n)) in ("Cc", "Cf", "Cs", "Cn"), hex(n)
