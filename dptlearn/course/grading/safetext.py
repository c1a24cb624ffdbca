"""Submission text made safe on entry to the trusted side, and the writers in which it stays data.

Everything a submission chooses (file and folder names, notebook metadata, tags, cell sources,
recorded messages, the sandbox's reports) is a Python ``str`` that may hold what no report format
can carry or show honestly: lone surrogates (an escaped ``"\\ud800"`` in notebook JSON, an
exception message, a file name that is not UTF-8), control characters (not XML 1.0), terminal
escapes, bidi overrides and isolates, zero-width characters. This module is the one place that
turns such text into safe text, and the helpers that write it:

* ``data``: lone surrogates shown as ``\\udXXX`` (everything else kept): for notebook content,
  which still runs as code (inside a string literal the escape means what the character meant);
* ``text``: ``data`` plus terminal escapes removed, and control (``Cc`` but tab, LF, CR), format
  (``Cf``: bidi controls, zero-width characters, soft hyphen, tags) and non-characters shown
  visibly as ``\\xNN``, ``\\uXXXX`` or ``\\UXXXXXXXX``; its result is valid UTF-8, XML 1.0
  character data and shows every character it holds (``text(text(s)) == text(s)``);
* ``line``: ``text`` on one line (whitespace folded), cut at a limit;
* ``tree``: ``data`` on every string of a JSON value (keys included); ``seconds``: a duration
  that is finite and >= 0 (else 0.0);
* ``path_text``, ``representable``, ``fallback_name``: a file name as shown (bytes that are not
  UTF-8 as ``\\xNN``), and the ``submission-<hash>`` that replaces a name that cannot be
  represented;
* writers: ``md_code`` (a Markdown code span, inert in CommonMark and GFM: no links, autolinks,
  emphasis, strikethrough, HTML, images, table breaks), ``xml_text`` (JUnit), ``json_dumps``.

Standard library only.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import unicodedata

# Terminal escapes: CSI (colours, cursor) and OSC (titles, hyperlinks) sequences.
ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")
SURROGATE_RE = re.compile("[\ud800-\udfff]")
KEPT_CONTROLS = "\t\n\r"
HASH_CHARS = 16


def _escape(c: str) -> str:
    n = ord(c)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


def _noncharacter(n: int) -> bool:
    return 0xFDD0 <= n <= 0xFDEF or (n & 0xFFFE) == 0xFFFE


def hidden(c: str) -> bool:
    """Whether ``text`` shows the character ``c`` as an escape (see the module docstring)."""
    cat = unicodedata.category(c)
    return ((cat == "Cc" and c not in KEPT_CONTROLS) or cat in ("Cf", "Cs")
            or _noncharacter(ord(c)))


def data(s: str) -> str:
    """``s`` with every lone surrogate shown as ``\\udXXX``: encodable as UTF-8, else unchanged."""
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return SURROGATE_RE.sub(lambda m: _escape(m[0]), s)


def text(s) -> str:
    """``str(s)`` as safe text: no terminal escapes; controls, format characters, surrogates and
    non-characters shown as escapes (see the module docstring)."""
    s = str(s)
    if "\x1b" in s:
        s = ANSI_RE.sub("", s)
    if s.isascii() and (s.isprintable() or all(c.isprintable() or c in KEPT_CONTROLS for c in s)):
        return s
    return "".join(_escape(c) if hidden(c) else c for c in s)


def line(s, limit: int = 400) -> str:
    """``text(s)`` with all whitespace folded to single spaces, cut to ``limit`` characters."""
    s = " ".join(text(s).split())
    return s if len(s) <= limit else s[: limit - 1].rstrip() + "…"


def tree(obj):
    """A JSON value with ``data`` applied to every string in it, keys included (and a float that
    JSON cannot write, NaN or infinite, as None)."""
    if isinstance(obj, str):
        return data(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, list):
        return [tree(v) for v in obj]
    if isinstance(obj, dict):
        return {tree(k) if isinstance(k, str) else k: tree(v) for k, v in obj.items()}
    return obj


def seconds(value) -> float:
    """A duration from a submission's data (the sandbox's JUnit ``time``, a report's
    ``duration_s``): a finite number of seconds >= 0, else 0.0 (unknown). Used on write and on
    read-back, so every sum of durations is a finite float."""
    try:
        v = float(value)
    except (TypeError, ValueError, OverflowError):
        return 0.0
    return v if math.isfinite(v) and v >= 0 else 0.0


# ----------------------------------------------------------------------------- names

def path_text(path: str) -> str:
    """A path as the reports show it: bytes that are not UTF-8 as ``\\xNN`` (from the name's bytes
    on disk), then ``text``."""
    try:
        raw = os.fsencode(path)
    except UnicodeEncodeError:              # a surrogate that no file name can hold
        return text(path)
    return text(raw.decode("utf-8", "backslashreplace"))


def representable(name: str) -> bool:
    """Whether a file or folder name shows as itself: valid UTF-8, no control character (tab and
    line breaks included) and no format character."""
    return path_text(name) == name and not any(c in KEPT_CONTROLS for c in name)


def fallback_name(key: str) -> str:
    """``submission-<16 hex digits>``: the report name of ``key`` (a path as given) when its own name
    cannot be used; the same for the same key on every machine and shard."""
    raw = key.encode("utf-8", "surrogatepass")
    return "submission-" + hashlib.sha256(raw).hexdigest()[:HASH_CHARS]


# ----------------------------------------------------------------------------- writers

def md_code(s, table: bool = False, limit: int = 400) -> str:
    """``line(s)`` as a Markdown code span: nothing in it is parsed (links, bare-URL and e-mail
    autolinks, emphasis, strikethrough, HTML, images, entities). ``table``: the span sits in a
    GFM table cell, so its pipes are escaped (``\\|``; a backslash before one is kept apart by a
    space, as CommonMark-GFM and markdown-it read ``\\\\|`` differently). Empty text gives ``—``."""
    s = line(s, limit)
    if not s:
        return "—"
    if table:
        s = re.sub(r"(\\*)\|", lambda m: (m[1] + " " if m[1] else "") + "\\|", s)
    longest = max((len(run) for run in re.findall(r"`+", s)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if s[0] in "` " or s[-1] in "` " else ""
    return f"{fence}{pad}{s}{pad}{fence}"


def xml_text(s) -> str:
    """Text that XML 1.0 can carry as character data or an attribute value (``text``: only tab, LF
    and CR of the C0 controls, no surrogates, no U+FFFE/U+FFFF); ElementTree escapes ``<&>"``."""
    return text(s)


def json_dumps(obj, **kwargs) -> str:
    """``json.dumps`` of ``tree(obj)``: any reader, in strict mode too, loads what it writes."""
    return json.dumps(tree(obj), ensure_ascii=False, allow_nan=False, **kwargs)
