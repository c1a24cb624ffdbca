"""Reading what a sandbox wrote, without trusting it: the recorded answers and the JUnit report.

A sandbox writes ``results/<id>.pt`` (through ``dptlearn.course.probe.record``) and its pytest
writes ``junit.xml``; anything in the sandbox could have written either instead. Each is read
as a regular file (no symlink, no FIFO) of bounded size (``read_untrusted``); an answer must
then be a torch zip of stored entries holding plain data within fixed budgets
(``load_results``, ``require_plain_data``) before a judge touches it, and its steps must be
shaped as the probe writes them (``malformed_steps``). What fails says why in an
``UnreadableResults`` message that never quotes the data.
"""
from __future__ import annotations

import os
import stat
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from . import safetext
from .sandboxed.cells import clean_message

MAX_RESULTS_BYTES = 64 * 2**20
MAX_JUNIT_BYTES = 32 * 2**20
MAX_ZIP_ENTRIES = 10_000        # records in one results file (torch.save: one per tensor storage)
MAX_NODES = 200_000             # containers and scalars reached while walking a payload
MAX_DEPTH = 40                  # nesting (the probe records at most ~12 levels)
MAX_TENSOR_ELEMENTS = 2**26     # all tensors of one payload together
MAX_STR_CHARS = 100_000         # one string
MAX_TOTAL_CHARS = 2**22         # all strings of one payload, each counted every time it is reached


class UnreadableResults(Exception):
    """The recorded answer is missing, too big, not a regular file or not loadable data."""


def read_untrusted(path: Path, limit: int) -> bytes:
    """The bytes of a file a sandbox wrote: a regular file (no symlink), at most ``limit`` bytes.

    Raises UnreadableResults saying what is wrong.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise UnreadableResults("no answer was recorded") from None
    except OSError as exc:
        raise UnreadableResults(f"the recorded answer is not a regular file ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnreadableResults("the recorded answer is not a regular file")
        if info.st_size > limit:
            raise UnreadableResults(f"the recorded answer is {info.st_size / 2**20:.0f} MiB, more "
                                    f"than the {limit // 2**20} MiB limit")
        with os.fdopen(os.dup(fd), "rb") as fh:
            return fh.read(limit + 1)[:limit]
    finally:
        os.close(fd)


def load_results(path: Path) -> Any:
    """The data a probe recorded, read without trusting the file (see UnreadableResults).

    Before unpickling: a torch zip whose every entry is stored uncompressed (no deflate bomb).
    After: plain data within ``require_plain_data``'s budget, before any judge touches it.
    """
    import io
    import zipfile

    import torch

    data = read_untrusted(path, MAX_RESULTS_BYTES)
    try:
        entries = zipfile.ZipFile(io.BytesIO(data)).infolist()
    except Exception as exc:  # noqa: BLE001 - zipfile raises more than BadZipFile (NotImplementedError...)
        raise UnreadableResults(clean_message(f"the recorded answer is not readable data (not a "
                                              f"torch zip file: {type(exc).__name__}: {exc})", 200)) from None
    packed = sum(e.compress_type != zipfile.ZIP_STORED for e in entries)
    if packed or len(entries) > MAX_ZIP_ENTRIES:
        raise UnreadableResults("the recorded answer is not as torch.save writes it ("
                                + (f"compressed entries: {packed} of {len(entries)}" if packed else
                                   f"{len(entries)} entries") + ")")
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - whatever the file holds, it is not an answer
        raise UnreadableResults(clean_message(f"the recorded answer is not readable data "
                                              f"({type(exc).__name__}: {exc})", 200)) from None
    require_plain_data(payload)
    return payload


def require_plain_data(obj: Any) -> None:
    """UnreadableResults unless ``obj`` is plain data of bounded size.

    Plain data: None, bool, int, float, str (at most ``MAX_STR_CHARS`` each, ``MAX_TOTAL_CHARS``
    in all), list, tuple, dict,
    and strided tensors (``weights_only`` already refuses ints of more than 255 bytes). Every
    node counts each time it is reached, shared references included (a few kilobytes of
    pickle can reach a list billions of times), against ``MAX_NODES``; tensors count their
    elements (a stride-0 view of one number can claim any size) against
    ``MAX_TENSOR_ELEMENTS``. Only type names go into the message: the data itself is never
    turned into text here.
    """
    import torch

    nodes, elements, chars = 1, 0, 0
    stack = [(obj, 0)]
    while stack:
        x, depth = stack.pop()
        kind = type(x)
        if kind in (dict, list, tuple):         # counted when pushed: the stack stays bounded
            nodes += 2 * len(x) if kind is dict else len(x)
            if nodes > MAX_NODES or depth >= MAX_DEPTH:
                raise UnreadableResults(f"the recorded answer is too large (more than "
                                        f"{MAX_NODES} items or {MAX_DEPTH} levels deep)")
            items = [v for kv in x.items() for v in kv] if kind is dict else x
            stack += [(v, depth + 1) for v in items]
        elif kind is torch.Tensor:
            if x.layout != torch.strided:
                raise UnreadableResults(f"the recorded answer holds a {x.layout} tensor")
            elements += x.numel()
            if elements > MAX_TENSOR_ELEMENTS:
                raise UnreadableResults(f"the recorded answer holds more than "
                                        f"{MAX_TENSOR_ELEMENTS} tensor elements")
        elif kind is str:
            chars += len(x)
            if len(x) > MAX_STR_CHARS or chars > MAX_TOTAL_CHARS:
                raise UnreadableResults(f"the recorded answer holds a string of more than "
                                        f"{MAX_STR_CHARS} characters, or more than "
                                        f"{MAX_TOTAL_CHARS} in all")
        elif kind not in (int, float, bool, type(None)):
            raise UnreadableResults(f"the recorded answer holds a {kind.__name__[:40]}, which is "
                                    f"not plain data")


def malformed_steps(results: Any) -> str | None:
    """Why the steps of a loaded payload are not what the probe writes, or None: the fields that
    messages quote (``raised``, ``message``, ``calls``) must be strings."""
    if not isinstance(results, list):
        return "its results are not a list"
    for i, step in enumerate(results):
        if not isinstance(step, dict):
            return f"step {i} is a {type(step).__name__}, not a dict"
        for key in ("raised", "message"):
            if key in step and not isinstance(step[key], str):
                return f"step {i}'s {key!r} is a {type(step[key]).__name__}, not a str"
        calls = step.get("calls", [])
        if not (isinstance(calls, list) and all(isinstance(c, str) for c in calls)):
            return f"step {i}'s 'calls' is not a list of str"
    return None


# ----------------------------------------------------------------------------- the JUnit report

def read_junit(path: Path) -> dict[str, list[ET.Element]] | None:
    """The testcases (one per cell) of a sandbox's JUnit report grouped by ``submission``
    (None: no report, or not one that parses)."""
    try:
        root = ET.fromstring(read_untrusted(path, MAX_JUNIT_BYTES))
    except (UnreadableResults, ET.ParseError):
        return None
    groups: dict[str, list[ET.Element]] = {}
    for tc in root.iter("testcase"):
        props = {p.get("name"): p.get("value") for p in tc.iter("property")}
        groups.setdefault(props.get("submission", ""), []).append(tc)
    return groups


def cell_report(tc: ET.Element) -> dict:
    """One cell's report (a JUnit testcase): its properties plus ``outcome``, ``failure`` (its
    message) and ``time``."""
    props = {p.get("name"): p.get("value") for p in tc.iter("property")}
    bad = [el for el in tc if el.tag in ("failure", "error", "skipped")]
    props["outcome"] = bad[0].tag if bad else "passed"
    props["failure"] = bad[0].get("message", "") if bad else ""
    props["time"] = safetext.seconds(tc.get("time"))     # "inf", "nan", "-1": 0.0
    return props
