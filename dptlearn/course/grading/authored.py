"""Exercises a teacher writes in the notebook alone: the solution cell is the reference.

An *authored* exercise (docs/authoring.md) has, besides its intro and solution cells, a check cell
``checks.authored(<answer>)`` and one code cell tagged ``spec`` that gives the inputs and the
comparison, in plain Python:

    inputs = [(x1, w1), ...]      or   def inputs(g): ...   (g: a torch.Generator, secret seed)
    rtol, atol = 1e-5, 1e-6       (optional: the tolerance of the default comparison)
    def compare(got, want, *args): assert ...   (optional: replaces the default comparison)

No ``inputs``: the answer is a value, compared as a whole. The generator drops the spec cell and
stubs the solution, so the student's notebook has neither.

When grading, ``AuthoredCheck`` is the exercise's ``Check`` (``judge.Judge`` asks ``check_of``).
``case(seed)`` runs on the trusted side: it executes the *solution notebook's* own cells (its
set-up cells and this exercise's cells before its check cell, then the spec) in a fresh namespace
in the grader's process, draws the inputs from the secret seed, runs the teacher's answer on them
through ``probe.execute`` on the CPU, and keeps those results in ``case.data``; the plan (the
sandbox's ``cases/<id>.pt``) holds the inputs only. ``probe.record`` runs the student's answer
on the plan in the sandbox; ``judge`` compares the two results here, with the spec's ``compare``
or the tolerance. The reference, its results, the seed and the comparison never enter the sandbox;
nothing the student's notebook defines (its own ``compare``, a patched ``torch``) runs here.
"""
from __future__ import annotations

import contextlib
import io
import threading
import traceback
from typing import Any

import torch

from .. import probe
from ..checks.harness import Case, Check, CheckFailed, generator
from ..exercises import AUTHORED, Assignment
from .sandboxed.cells import cell_exercise, cell_tags, python_source, source_of

# torch.testing.assert_close's defaults: float32 rtol 1.3e-6 (about 11 float32 ulps), atol 1e-5
DEFAULT_TOL = {torch.float16: (1e-3, 1e-5), torch.bfloat16: (1.6e-2, 1e-5),
               torch.float32: (1.3e-6, 1e-5), torch.float64: (1e-7, 1e-7)}
MAX_CASES = 100
DATA = (type(None), bool, int, float, str)


def check_of(a: Assignment, ex_id: str, call) -> AuthoredCheck | None:
    """The Check of exercise ``ex_id`` when it is authored (it has a spec cell), else None."""
    ex = next((e for e in a.exercises if e.id == ex_id), None)
    if ex is None or ex.spec_index is None or call.check != AUTHORED:
        return None
    return AuthoredCheck(a, ex_id, call.answer, ex.check_index, ex.spec_index, ex.points)


def _plain(value: Any, where: str, depth: int = 0) -> None:
    """``value`` must be data the sandbox loads (``torch.load(weights_only=True)``)."""
    if isinstance(value, torch.Tensor) or type(value) in DATA:
        return
    if depth < 8 and type(value) in (list, tuple):
        for v in value:
            _plain(v, where, depth + 1)
        return
    if depth < 8 and type(value) is dict and all(type(k) is str and not k.startswith("$")
                                                 for k in value):
        for v in value.values():
            _plain(v, where, depth + 1)
        return
    raise TypeError(f"{where} holds a {type(value).__name__}: an input may be tensors, numbers, "
                    f"strings, None, and lists, tuples and dicts (str keys) of them")


def _described(value: Any, depth: int = 0) -> str | None:
    """The type name of the first object in ``value`` that ``probe.to_data`` could only describe."""
    if isinstance(value, dict):
        if "type" in value and set(value) <= {"type", "len"}:
            return str(value["type"])
        value = list(value.values())
    if type(value) in (list, tuple) and depth < 9:
        return next((k for v in value if (k := _described(v, depth + 1))), None)
    return None


class AuthoredCheck(Check):
    """The check of one authored exercise, made from its solution notebook (trusted code)."""

    forbidden = ()

    def __init__(self, a: Assignment, ex_id: str, answer: str, check_index: int, spec_index: int,
                 points: int = 1):
        self.name, self.ex_id, self.answer, self.points = answer, ex_id, answer, points
        self.cells = self._reference_cells(a, ex_id, check_index) + [
            (f"{a.path.name}, cell {spec_index} (spec)", source_of(a.nb["cells"][spec_index]), True)]
        self.ns: dict | None = None
        self.lock = threading.Lock()      # the judge runs in one thread per sandbox

    @staticmethod
    def _reference_cells(a: Assignment, ex_id: str, check_index: int) -> list[tuple[str, str, bool]]:
        """The notebook's set-up cells and this exercise's own cells before its check cell (not
        check, spec or solution-only cells): what the student's kernel has run at that point."""
        out = []
        for i, cell in enumerate(a.nb["cells"][:check_index]):
            tags, ex = cell_tags(cell), cell_exercise(cell)
            if (cell.get("cell_type") == "code" and ex in (None, ex_id)
                    and not {"check", "spec", "solution-only"} & set(tags)):
                out.append((f"{a.path.name}, cell {i}", source_of(cell), ex is not None))
        return out

    def namespace(self) -> dict:
        """The teacher's namespace: the cells run once, quietly; a failing set-up cell is skipped
        (as a learner's kernel carries on), a failing cell of the exercise or spec is an error."""
        if self.ns is not None:
            return self.ns
        ns: dict = {"__name__": f"dptlearn_authored_{self.ex_id}"}
        skipped = []
        with (contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()),
              torch.enable_grad()):
            for where, source, own in self.cells:
                try:
                    exec(compile(python_source(source), f"<{where}>", "exec"), ns)  # noqa: S102 - the teacher's own code
                except Exception as exc:  # noqa: BLE001 - reported below with its cell
                    if own:
                        raise RuntimeError(f"{where} failed: {type(exc).__name__}: {exc}"
                                           + (f" (skipped set-up: {'; '.join(skipped)})"
                                              if skipped else "")) from None
                    skipped.append(f"{where}: {traceback.format_exception_only(exc)[-1].strip()}")
        try:
            ns["__answer__"] = eval(self.answer, ns)  # noqa: S307 - the solution's check cell
        except Exception as exc:  # noqa: BLE001
            raise RuntimeError(f"the reference {self.answer} is not defined by the solution's "
                               f"cells ({type(exc).__name__}: {exc})") from None
        compare = ns.get("compare")
        if compare is not None and not callable(compare):
            raise TypeError(f"the spec's compare must be a function, got {type(compare).__name__}")
        self.ns = ns
        return ns

    # ------------------------------------------------------------------ the three phases

    def make_case(self, seed: int) -> Case:
        ns = self.namespace()
        if "inputs" not in ns:
            plan = [{"op": "value", "what": "your answer"}]
        else:
            try:
                cases = ns["inputs"](generator(f"authored:{self.ex_id}", seed, 0)) \
                    if callable(ns["inputs"]) else ns["inputs"]
            except Exception as exc:  # noqa: BLE001 - the teacher's generator
                raise RuntimeError(f"the spec's inputs(g) raised {type(exc).__name__}: {exc}") from None
            if not isinstance(cases, (list, tuple)) or not 0 < len(cases) <= MAX_CASES:
                raise TypeError(f"the spec's inputs must be a list of 1 to {MAX_CASES} cases, got "
                                f"{type(cases).__name__}" + (f" of {len(cases)}"
                                                             if hasattr(cases, "__len__") else ""))
            n = len(cases)
            plan = []
            for k, args in enumerate(cases, 1):
                args = list(args) if type(args) is tuple else [args]
                _plain(args, f"the spec's input case {k}")
                plan.append({"op": "call", "fn": None, "args": args, "kwargs": {},
                             "what": f"your answer on case {k} of {n}"})
        want = probe.execute(ns["__answer__"], plan, device="cpu")
        broken = [r for r in want if r.get("raised") in ("NotImplementedError",
                                                         "ReferenceUseError")]
        if broken or all("raised" in r for r in want):     # a spec that tests nothing
            raise RuntimeError(f"the reference raised {(broken or want)[0]['raised']}: "
                               f"{(broken or want)[0].get('message', '')}"
                               + ("" if broken else " (on every case)"))
        if ns.get("partial") is True and self.points % len(plan):
            raise ValueError(f"partial credit: the exercise's {self.points} point(s) must be a "
                             f"multiple of its {len(plan)} case(s)")
        for k, r in enumerate(want, 1):
            if "value" in r and (kind := _described(r["value"])):
                raise TypeError(f"the reference's answer on case {k} holds a {kind}, which is not "
                                f"data: an answer is compared as tensors, numbers, strings, None, "
                                f"lists, tuples and dicts")
        return Case(plan, {"want": want})

    def verify(self, case: Case, results: list) -> str:
        n, failed = len(case.plan), []
        with self.lock:
            for k, (mine, ref) in enumerate(zip(results, case.data["want"])):
                try:
                    self._verify_one(case, results, k, mine, ref)
                except CheckFailed as exc:
                    if self.ns.get("partial") is not True:      # all or nothing: the first one
                        raise
                    failed.append(str(exc)[len(self.name) + 2:])
        if failed:                  # partial credit: an equal share of the points per case
            earned = (n - len(failed)) * (self.points // n)
            exc = CheckFailed(self.name, f"{n - len(failed)} of {n} cases pass ({earned} of "
                                         f"{self.points} points); the first that fails: {failed[0]}")
            exc.points = earned
            raise exc
        how = ("your teacher's test" if self.ns.get("compare") is not None else
               "the reference, within the tolerance")
        return (f"{n} case(s) agree with {how}" if case.plan[0]["op"] == "call"
                else f"your answer agrees with {how}")

    def _verify_one(self, case: Case, results: list, k: int, mine: dict, ref: dict) -> None:
        what = case.plan[k]["what"]
        if "raised" in ref:                             # the reference refuses this input
            if mine.get("raised") == ref["raised"]:
                return
            if mine.get("raised") == "NotImplementedError":
                self.value(case, results, k)
            got = (f"it raised {mine['raised']}: {mine.get('message', '')}" if "raised" in mine
                   else f"it returned {self.kind(mine['value'])}")
            self.fail(f"{what} should raise {ref['raised']}, but {got}")
        got = self.value(case, results, k)
        if mine.get("mutated") and not ref.get("mutated"):
            self.fail(f"{what} changed its argument(s) {mine['mutated']} in place: return a new "
                      f"value and leave the inputs as they are")
        compare = self.ns.get("compare")
        if compare is None:
            wrong = differs(got, ref["value"], self.ns.get("rtol"), self.ns.get("atol"))
            if wrong:
                self.fail(f"{what}: {wrong}")
            return
        args = case.plan[k].get("args", [])
        try:
            compare(got, ref["value"], *args)      # (its prints go to the grader's output)
        except AssertionError as exc:
            self.fail(f"{what}: {exc}" if str(exc) else f"{what} does not pass your teacher's test")
        except Exception as exc:  # noqa: BLE001 - the answer does not fit the teacher's test
            self.fail(f"{what} does not fit your teacher's test ({type(exc).__name__}: {exc})")


def _tolerance(want: torch.Tensor, rtol, atol) -> tuple[float, float]:
    r, a = DEFAULT_TOL.get(want.dtype, (0.0, 0.0))
    return (r if rtol is None else float(rtol)), (a if atol is None else float(atol))


def differs(got: Any, want: Any, rtol=None, atol=None, path: str = "your output") -> str | None:
    """Why ``got`` (the student's recorded value) is not ``want`` (the reference's), or None.
    Never shows the reference's values: shapes, types, lengths and keys only."""
    if isinstance(want, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            return f"{path} should be a torch.Tensor, got {Check.kind(got)}"
        if got.shape != want.shape:
            return f"{path} should have shape {tuple(want.shape)}, got {tuple(got.shape)}"
        if got.dtype != want.dtype:
            return f"{path} should have dtype {want.dtype}, got {got.dtype}"
        r, a = _tolerance(want, rtol, atol)
        if want.is_floating_point() or want.is_complex():
            bad = ~torch.isclose(got, want, rtol=r, atol=a, equal_nan=True)
        else:
            bad = got != want
        if bad.any():
            first = tuple(int(i) for i in bad.nonzero()[0])
            tol = f" (atol {a:g} + rtol {r:g} × |reference|)" if want.is_floating_point() else ""
            return (f"{path} has the right shape {tuple(want.shape)} but {int(bad.sum())} of "
                    f"{want.numel()} values differ from the reference{tol}, the first at index "
                    f"{first}")
        return None
    if isinstance(want, (list, tuple)):
        if type(got) not in (list, tuple):
            return f"{path} should be a {type(want).__name__}, got {Check.kind(got)}"
        if len(got) != len(want):
            return f"{path} should have {len(want)} items, got {len(got)}"
        return next((m for i, (g, w) in enumerate(zip(got, want))
                     if (m := differs(g, w, rtol, atol, f"{path}[{i}]"))), None)
    if isinstance(want, dict):
        if type(got) is not dict:
            return f"{path} should be a dict, got {Check.kind(got)}"
        if set(got) != set(want):
            missing, extra = sorted(map(str, set(want) - set(got))), sorted(map(str, set(got) - set(want)))
            return f"{path} has the wrong keys" + (f"; missing {missing}" if missing else "") + (
                f"; unexpected {extra}" if extra else "")
        return next((m for key in want if (m := differs(got[key], want[key], rtol, atol,
                                                        f"{path}[{key!r}]"))), None)
    if isinstance(want, float) and not isinstance(got, bool) and isinstance(got, (int, float)):
        r, a = DEFAULT_TOL[torch.float64] if rtol is None and atol is None else (
            float(rtol or 0.0), float(atol or 0.0))
        if abs(got - want) <= a + r * abs(want) or (got != got and want != want):
            return None
        return f"{path} is not the reference's value (within atol {a:g} + rtol {r:g} × |reference|)"
    if type(got) is not type(want):
        return f"{path} should be of type {type(want).__name__}, got {Check.kind(got)}"
    return None if got == want else f"{path} is not the reference's value"
