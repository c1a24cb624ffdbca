"""Trusted verdicts: the grader chooses the inputs, the sandbox records answers, the grader judges.

For every exercise of the run the grader asks the exercise's check for a ``Case`` once, with a
secret seed (``secrets.randbits``), and writes its plan (pure data) to ``cases/<id>.pt``, which
the sandboxes see read-only. Each check cell of a submission is replaced by a *probe cell*
(``probe_cell``) that runs the student's object on that plan in the sandboxed kernel and writes
``results/<id>.pt`` (``dptlearn.course.probe.record``). After the run the grader loads each
results file defensively (``load_results``: a regular file, at most ``MAX_RESULTS_BYTES``,
``torch.load(weights_only=True)``) and calls the check's ``judge``: an exercise earns its points
iff the judge passes. Nothing the sandbox writes besides the recorded answer counts, and the
answer is judged against the reference here, out of the submission's reach.

This module also finds what the report flags without scoring it: edited, injected or deleted
check cells (``check_cell_flags``) and answers identical to dptlearn's reference after
normalisation (``identical_to_reference``).
"""
from __future__ import annotations

import ast
import functools
import importlib
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..exercises import Assignment, source_of, tags_of
from .plugin import clean_message, exercise_of
from .view import head_modules

MAX_RESULTS_BYTES = 64 * 2**20
MAX_ZIP_ENTRIES = 10_000        # records in one results file (torch.save: one per tensor storage)
MAX_NODES = 200_000             # containers and scalars reached while walking a payload
MAX_DEPTH = 40                  # nesting (the probe records at most ~12 levels)
MAX_TENSOR_ELEMENTS = 2**26     # all tensors of one payload together
MAX_STR_CHARS = 100_000         # one string
MAX_TOTAL_CHARS = 2**22         # all strings of one payload, each counted every time it is reached
DEFAULT_CHECKS = "dptlearn.course.checks"
ALIASES = {"dptlearn.checks": DEFAULT_CHECKS}   # ``from dptlearn import checks`` resolves there
PROBE_MODULE = "dptlearn.course.probe"
MIN_IDENTICAL_NODES = 25        # smaller definitions are too short to call a copy
MAX_DEFS = 2000                 # definitions compared per cell


class UnreadableResults(Exception):
    """The recorded answer is missing, too big, not a regular file or not loadable data."""


@dataclass
class CheckCall:
    """What a solution's check cell calls: ``checks.<name>(<expr>)``."""

    name: str
    expr: str


def check_call(source: str) -> CheckCall:
    """Parse a solution's check cell; ValueError when it is not ``checks.<name>(<expr>)``."""
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "checks"
                and node.args):
            return CheckCall(node.func.attr, ast.unparse(node.args[0]))
    raise ValueError(f"expected a check cell calling checks.<name>(<object>), got {source!r}")


def probe_cell_source(ex_id: str, call: CheckCall) -> str:
    """The cell that replaces a check cell when grading: record the answer, judge outside."""
    return (f"import {PROBE_MODULE} as _dptlearn_probe\n"
            f"_dptlearn_probe.record({ex_id!r}, {call.name!r}, {call.expr})")


def checks_module_of(a: Assignment) -> str:
    """The module a solution notebook's set-up cells bind to the name ``checks``.

    ``from dptlearn import checks`` gives ``dptlearn.course.checks``; ``import x as checks``
    gives ``x`` (looked up next to the solutions too, as the grading fixture's checks are).
    """
    found = DEFAULT_CHECKS
    for cell in a.nb["cells"]:
        if cell.get("cell_type") != "code" or exercise_of(tags_of(cell)) is not None:
            continue
        try:
            tree = ast.parse("\n".join(line for line in source_of(cell).splitlines()
                                       if not line.lstrip().startswith(("%", "!"))))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found = next((al.name for al in node.names if (al.asname or al.name) == "checks"),
                             found)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found = next((f"{node.module}.{al.name}" for al in node.names
                              if (al.asname or al.name) == "checks"), found)
    return ALIASES.get(found, found)


def load_checks(a: Assignment) -> dict:
    """The ``CHECKS`` registry that judges assignment ``a`` (see checks_module_of)."""
    import sys

    name = checks_module_of(a)
    sys.path.append(str(a.path.parent))
    try:
        return importlib.import_module(name).CHECKS
    except (ImportError, AttributeError) as exc:
        raise SystemExit(f"dptlearn-grade: {a.path.name}: its checks module {name} has no "
                         f"CHECKS registry ({type(exc).__name__}: {exc})") from None
    finally:
        sys.path.remove(str(a.path.parent))


class Judge:
    """The run's cases (one secret seed per exercise) and the checks that judge the answers."""

    def __init__(self, assignments: list[Assignment], cases_dir: Path):
        import torch

        self.calls: dict[str, CheckCall] = {}
        self.cases: dict[str, Any] = {}
        self.checks: dict[str, Any] = {}
        self.broken: dict[str, str] = {}       # exercise id -> why its check could not be prepared
        cases_dir.mkdir(parents=True, exist_ok=True)
        for a in assignments:
            registry = load_checks(a)
            for ex in a.exercises:
                try:
                    self._prepare(a, ex.id, registry, cases_dir, torch)
                except Exception as exc:  # noqa: BLE001 - one broken check must cost one exercise, not the run
                    self.broken[ex.id] = clean_message(
                        f"not graded: the grader could not prepare the check of this exercise "
                        f"({type(exc).__name__}: {exc}); tell your teacher", 400)
        cases_dir.chmod(0o555)

    def _prepare(self, a: Assignment, ex_id: str, registry: dict, cases_dir: Path, torch) -> None:
        call = check_call(source_of(a.check_cell(ex_id)))
        if call.name not in registry:
            raise LookupError(f"{a.path.name} calls checks.{call.name}, which "
                              f"{checks_module_of(a)}.CHECKS lacks")
        self.calls[ex_id], self.checks[ex_id] = call, registry[call.name]
        self.cases[ex_id] = self.checks[ex_id].case(secrets.randbits(63))
        path = cases_dir / f"{ex_id}.pt"
        torch.save(self.cases[ex_id].plan, path)
        path.chmod(0o444)

    def verdict(self, ex_id: str, payload: Any) -> tuple[bool, str, list[str]]:
        """(passed, message, flags) for a loaded results file."""
        if ex_id in self.broken:
            return False, self.broken[ex_id], ["grader-error"]
        if not isinstance(payload, dict) or payload.get("check") != self.calls[ex_id].name:
            return False, ("the recorded answer was not written by the grader's probe "
                           "(forged or damaged results file)"), ["forgery"]
        bad = check_steps(payload.get("results"))
        if bad:
            return False, (f"the recorded answer was not written by the grader's probe ({bad}): "
                           f"forged or damaged results file"), ["forgery"]
        try:
            what = self.checks[ex_id].judge(self.cases[ex_id], payload.get("results"))
        except AssertionError as exc:                     # CheckFailed: "<name>: <why>"
            return False, clean_message(str(exc), 400), sorted(getattr(exc, "flags", ()))
        except Exception as exc:  # noqa: BLE001 - a judge that chokes must cost one exercise
            return False, clean_message(f"the grader could not judge the recorded answer "
                                        f"({type(exc).__name__}: {exc})", 400), []
        return True, clean_message(f"passed ({what})" if what else "passed", 400), []


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
    After: plain data within ``check_data``'s budget, before any judge touches it.
    """
    import io
    import zipfile

    import torch

    data = read_untrusted(path, MAX_RESULTS_BYTES)
    try:
        entries = zipfile.ZipFile(io.BytesIO(data)).infolist()
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise UnreadableResults(f"the recorded answer is not readable data (not a torch zip "
                                f"file: {exc})") from None
    packed = [e.filename for e in entries if e.compress_type != zipfile.ZIP_STORED]
    if packed or len(entries) > MAX_ZIP_ENTRIES:
        raise UnreadableResults(clean_message(
            "the recorded answer is not as torch.save writes it ("
            + (f"compressed entries {packed[:3]}" if packed else f"{len(entries)} entries")
            + ")", 200))
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - whatever the file holds, it is not an answer
        raise UnreadableResults(clean_message(f"the recorded answer is not readable data "
                                              f"({type(exc).__name__}: {exc})", 200)) from None
    check_data(payload)
    return payload


def check_data(obj: Any) -> None:
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


def check_steps(results: Any) -> str | None:
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


# ----------------------------------------------------------------------------- flags

def check_cell_flags(cells: list[dict], a: Assignment) -> dict[str, str]:
    """Exercises whose check cell was edited, injected or deleted -> what was seen.

    The grader replaces every check cell by its own anyway; this only explains the flag.
    """
    known = {ex.id for ex in a.exercises}
    seen: dict[str, list[str]] = {}
    notes: dict[str, str] = {}
    for cell in cells:
        if "check" in tags_of(cell):
            seen.setdefault(exercise_of(tags_of(cell)) or "", []).append(source_of(cell))
    for ex_id, sources in seen.items():
        if ex_id not in known:
            continue
        original = _normal(source_of(a.check_cell(ex_id)))
        if len(sources) > 1:
            notes[ex_id] = f"{len(sources) - 1} extra cell(s) tagged check for this exercise"
        elif _normal(sources[0]) != original:
            notes[ex_id] = "the check cell was edited"
    injected = sorted(k for k in seen if k not in known)
    if injected:
        first = a.exercises[0].id
        notes.setdefault(first, f"cells tagged check for unknown exercises {injected}")
    for ex_id in known - set(seen):
        notes[ex_id] = "the check cell was deleted"
    return notes


def _normal(source: str) -> str:
    return "".join(source.split())


def _defs(source: str) -> list[ast.AST]:
    """Every function and class definition in ``source``, also inside blocks and inside string
    literals that parse as Python (source handed to ``exec``), at most ``MAX_DEFS``."""
    text = "\n".join(line for line in source.splitlines()
                     if not line.lstrip().startswith(("%", "!")))
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []
    defs: list[ast.AST] = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defs.append(node)
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and ("def " in node.value or "class " in node.value) and node.value != source):
            defs += _defs(node.value)
        if len(defs) >= MAX_DEFS:
            break
    return defs[:MAX_DEFS]


@functools.cache        # keyed on the solution's check cell, never a submission's: parsed once
def _names(ex_id: str, check_source: str) -> frozenset[str]:
    """The names an exercise's answer goes by: its id and the names its check cell passes."""
    expr = check_call(check_source).expr
    return frozenset({ex_id} | {n.id for n in ast.walk(ast.parse(expr)) if isinstance(n, ast.Name)})


class _Normalise(ast.NodeTransformer):
    """Drop names of the definition itself, docstrings and annotations."""

    def _strip(self, node):
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
        return node

    def visit_FunctionDef(self, node):
        self.generic_visit(node)
        node.returns, node.decorator_list = None, []
        return self._strip(node)

    def visit_ClassDef(self, node):
        self.generic_visit(node)
        return self._strip(node)

    def visit_arg(self, node):
        node.annotation = None
        return node


def normal_form(node: ast.AST) -> str:
    """A definition's AST without its own name, docstrings, annotations or positions."""
    import copy

    node = _Normalise().visit(copy.deepcopy(node))
    node.name = "_"
    return ast.dump(node, annotate_fields=False)


def reference_forms(package: Path) -> dict[str, str]:
    """normal form -> ``dptlearn.<module>.<name>`` for every definition the view stubs."""
    forms = {}
    for module in head_modules(package):
        path = package / f"{module}.py"
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and \
                    sum(1 for _ in ast.walk(node)) >= MIN_IDENTICAL_NODES:
                forms[normal_form(node)] = f"dptlearn.{module}.{node.name}"
    return forms


def identical_to_reference(cells: list[dict], a: Assignment,
                           forms: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """Copies of dptlearn's reference in a notebook: ({exercise: the reference it copies},
    notes on copies that belong to no exercise).

    Every code cell counts, not only solution cells: a copy in an exercise's solution cell is
    that exercise's; one elsewhere (a cell without tags, a string handed to ``exec``) belongs
    to the exercise whose name, or whose check cell's argument, is the copy's name or the
    reference's.
    """
    names = {ex.id: _names(ex.id, source_of(a.check_cell(ex.id))) for ex in a.exercises}
    found: dict[str, str] = {}
    loose: list[str] = []
    for cell in cells:
        if cell.get("cell_type") != "code":
            continue
        tags = tags_of(cell)
        own = exercise_of(tags) if "solution" in tags else None
        for node in _defs(source_of(cell)):
            ref = forms.get(normal_form(node))
            if ref is None:
                continue
            mine = [own] if own in names else [
                ex for ex, n in names.items() if {node.name, ref.rsplit(".", 1)[1]} & n]
            for ex in mine:
                found.setdefault(ex, ref)
            if not mine and ref not in loose:
                loose.append(ref)
    return found, [f"a cell holds a copy of {ref} (identical after normalisation)"
                   for ref in loose]
