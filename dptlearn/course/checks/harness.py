"""The shared harness of the exercise checks: cases, verdicts, comparisons, diagnoses.

A check has three phases, so that the verdict can be made outside the learner's kernel:

1. ``Check.case(seed) -> Case`` (trusted side): seeded inputs and weights, a *plan* of steps
   for ``probe.execute`` (pure data) and, privately, what the judge needs (the reference's
   answers). Everything random derives from ``seed``, so a grader can use a secret seed.
2. ``probe.execute(learner_object, case.plan, device)`` (learner's kernel): runs the plan and
   records the results as pure data (see ``dptlearn/course/probe.py``).
3. ``Check.judge(case, results) -> str`` (trusted side): a short description of what was
   checked, or ``CheckFailed``. When the answer is wrong it does not stop at "wrong": it
   re-runs known mistakes on the same inputs and names the one that matches.

``check(obj, device=None)`` runs all three in the learner's own kernel (seed 0): it prints
``✓ <name>: passed (<what>)`` or raises ``CheckFailed``. Inputs run on
``dptlearn.get_device(device)``, in float32 with TF32 off, under ``torch.no_grad()``, and the
global random state is left untouched.
"""
from __future__ import annotations

import hashlib
import math
import textwrap
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ...device import get_device
from .. import probe

INF = math.inf
RTOL, ATOL = 1e-3, 1e-5   # relative to the largest reference value; float32 round-off is ~1e-6
REFERENCE_ERROR = "ReferenceUseError"   # what the grading sandbox's stubs of the head raise

ALIGN_MSG = ("align_corners is False: DUSt3R's weights were trained with bilinear upsampling that pins the "
             "corners (align_corners=True; lecture 04, section 2, shows where the two conventions sample)")
NEAREST_MSG = ("nearest-neighbour upsampling: DUSt3R upsamples bilinearly, corners pinned (align_corners=True); "
               "look at the upsampling mode")
WRAP = 100   # the width of a failed check's message in a notebook

EXCEPTION_HINTS = (
    ("view size is not compatible", "`.view()` needs contiguous memory, and a permute/transpose leaves it "
                                    "strided: `.reshape()` or `einops.rearrange` copy when they must"),
    ("Kernel size can't be greater than actual input size", "a 3x3 conv without padding shrinks the map by 2 "
                                                            "cells per conv: which padding keeps the size?"),
    ("stack expects each tensor to be equal size", "the hooked layers have different widths (the encoder output "
                                                   "is wider than the decoder's), so they cannot be stacked: "
                                                   "return a list"),
    ("Expected all tensors to be on the same device", "create new tensors on the input's device "
                                                     "(e.g. `torch.zeros_like(x)`, `device=x.device`)"),
)


class CheckFailed(AssertionError):
    """A check's verdict against the learner's answer; ``flags`` says why in machine terms.

    ``"reference"`` in ``flags``: the answer used dptlearn's reference for the exercise.
    An ``AssertionError`` for pytest and nbval; in IPython (``_render_traceback_``) the verdict is
    shown alone, without a traceback into the check's own code.
    """

    def __init__(self, name: str, message: str, flags: Iterable[str] = ()):
        super().__init__(f"{name}: {message}")
        self.flags = frozenset(flags)

    def _render_traceback_(self) -> list[str]:
        """What IPython shows for a failed check: ``✗ <name>: <message>``, wrapped, and nothing else."""
        return textwrap.wrap(f"✗ {self}", WRAP, subsequent_indent="    ", break_on_hyphens=False) or ["✗"]


@dataclass
class Case:
    """``plan``: the steps for ``probe.execute`` (pure data); ``data``: the judge's private notes."""

    plan: list
    data: dict = field(default_factory=dict)


# ============================================================================ plan steps

def call(*args, what: str, fn: str | None = None, **kwargs) -> dict:
    """Call the learner's object (or the object built into slot ``fn``) with ``args``."""
    return {"op": "call", "fn": fn, "args": list(args), "kwargs": kwargs, "what": what}


def build(*args, what: str, slot: str = "m") -> dict:
    """Build the learner's class or factory with ``args``; record its state-dict keys and shapes."""
    return {"op": "build", "args": list(args), "slot": slot, "what": what}


def load(state: Mapping[str, torch.Tensor], slot: str = "m") -> dict:
    """Load ``state`` (strict) into the object built into ``slot``."""
    return {"op": "load", "slot": slot, "state": {k: v.detach().cpu().clone() for k, v in state.items()},
            "what": "loading the weights"}


def slot(name: str = "m") -> dict:
    """An argument that stands for the object built into slot ``name``."""
    return {"$slot": name}


def standin(kind: str, params: Any) -> dict:
    """An argument that the probe builds as the stand-in ``kind`` (see ``probe.STANDINS``)."""
    return {"$standin": kind, "params": params}


# ============================================================================ seeded values

def generator(name: str, seed: int, k: int) -> torch.Generator:
    """A generator for draw ``k`` of check ``name`` under ``seed`` (independent for each triple)."""
    digest = hashlib.sha256(f"{name}:{seed}:{k}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def randomize_(module: nn.Module, g: torch.Generator) -> nn.Module:
    """Fill every parameter with seeded values: weights ~ N(0, 1/fan_in), biases ~ N(0, 0.5^2).

    Larger-than-default biases make a missing or extra bias show up clearly.
    """
    with torch.no_grad():
        for _, p in sorted(module.named_parameters()):
            if p.ndim > 1:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel()))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return module.eval()


def up(x: torch.Tensor, align_corners: bool = True, mode: str = "bilinear", size=None) -> torch.Tensor:
    """x2 (or to ``size``) interpolation, for the known mistakes."""
    kw = {} if mode == "nearest" else {"align_corners": align_corners}
    if size is not None:
        return F.interpolate(x, size=tuple(size), mode=mode, **kw)
    return F.interpolate(x, scale_factor=2, mode=mode, **kw)


def shape(t) -> tuple:
    return tuple(t.shape)


def close(got: torch.Tensor, want: torch.Tensor) -> bool:
    """Same shape and equal up to RTOL (relative to the largest reference value) + ATOL; NaN only where NaN."""
    if got.shape != want.shape:
        return False
    got, want = got.detach().cpu().float(), want.detach().cpu().float()
    if torch.isnan(got).any() or torch.isnan(want).any():
        return bool(torch.equal(torch.isnan(got), torch.isnan(want))) and close(
            torch.nan_to_num(got), torch.nan_to_num(want))
    if not got.numel():
        return True
    return (got - want).abs().max().item() <= ATOL + RTOL * want.abs().max().item()   # inf anywhere: False


def same_tensor(a, b: torch.Tensor) -> bool:
    return isinstance(a, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b.cpu())


# ============================================================================ the check

class Check:
    """One exercise's check. Subclasses set ``name``, ``forbidden`` and implement ``make_case``
    (seeded, trusted) and ``verify`` (reads the results, returns what was checked or fails)."""

    name: str = ""
    forbidden: tuple[str, ...] = ()   # dptlearn names (modules, functions, classes) that are the reference
    kernel_answer: str | None = None   # a value exercise's answer name: learner mode refuses head use (kernel.py)

    # ------------------------------------------------------------------ the three phases

    def case(self, seed: int) -> Case:
        """The inputs, weights and expected answers for ``seed`` (global RNG untouched)."""
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(0)
            return self.make_case(int(seed))

    def judge(self, case: Case, results: Any) -> str:
        """What was checked, or ``CheckFailed``. Results that do not fit the plan fail too."""
        if (not isinstance(results, list) or len(results) != len(case.plan)
                or not all(isinstance(r, dict) and ("value" in r or "raised" in r) for r in results)):
            self.fail(f"the recorded results do not fit this check's plan ({len(case.plan)} steps)")
        self._no_reference(results)
        try:
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                return self.verify(case, results)
        except CheckFailed:
            raise
        except Exception as e:  # noqa: BLE001 - forged or damaged results must not crash the judge
            raise CheckFailed(self.name, f"the recorded results do not fit this check ({type(e).__name__}: {e})")

    def __call__(self, obj: Any, device=None) -> None:
        """Learner mode: case (seed 0) -> run in this kernel -> judge; print the verdict or raise."""
        if self.kernel_answer:   # a value was computed before this cell: look at how, as the grader would
            from .kernel import refuse_head_use
            refuse_head_use(self, self.kernel_answer)
        case = self.case(0)
        what = self.judge(case, probe.execute(obj, case.plan, get_device(device)))
        print(f"✓ {self.name}: passed ({what})")

    def make_case(self, seed: int) -> Case:
        raise NotImplementedError

    def verify(self, case: Case, results: list) -> str:
        raise NotImplementedError

    # ------------------------------------------------------------------ verdict helpers

    def fail(self, message: str, *flags: str):
        raise CheckFailed(self.name, message, flags)

    def _no_reference(self, results: list) -> None:
        for r in results:
            if r.get("raised") == REFERENCE_ERROR:   # its message says what: "uses dptlearn.<mod>.<name>, ..."
                message = str(r.get("message", ""))
                self.fail(message if message.startswith("uses dptlearn.") else
                          f"uses dptlearn's reference ({message}): write your own", "reference")
        if any(r.get("recorder_off") for r in results):
            self.fail("your code switched off the check's call recorder (sys.setprofile): leave it alone",
                      "reference")
        calls = [c for r in results for c in r.get("calls", ())]      # in the order of first call
        used = [c for c in calls if any(c == f or c.startswith(f + ".") for f in self.forbidden)]
        if used:   # name the first one: what the learner's code called (the rest runs inside it)
            self.fail(f"uses {'.'.join(used[0].split('.')[:3])}, the reference for this exercise: write your own",
                      "reference")

    def value(self, case: Case, results: list, i: int, hint: str | None = None) -> Any:
        """The value step ``i`` returned; a recorded exception fails with where it came from."""
        r, what = results[i], case.plan[i]["what"]
        if "raised" not in r:
            return r["value"]
        kind, message = r["raised"], r.get("message", "")
        if kind == "NotImplementedError":
            self.fail(f"not implemented yet — {what} raised NotImplementedError" + (f" ({message})" if message else "")
                      + ": replace the stub with your code")
        hint = hint or next((h for pat, h in EXCEPTION_HINTS if pat in message), None)
        self.fail(f"{what} raised {kind}: {message}" + (f" — hint: {hint}" if hint else "")
                  + " (run it yourself in a cell to see the line)")

    def expect_value_error(self, case: Case, results: list, i: int, why: str,
                           returned: Callable[[Any], str] = repr, tail: str = "") -> None:
        """Step ``i`` must have raised ValueError (``why`` names the rule it enforces)."""
        r, what = results[i], case.plan[i]["what"]
        kind = r.get("raised")
        if kind == "ValueError":
            return
        if kind == "NotImplementedError":
            self.fail(f"not implemented yet — your code raised NotImplementedError ({r.get('message', '')}): "
                      f"replace the stub with your code")
        if kind is not None:
            self.fail(f"{what} should raise ValueError ({why}), got {kind}: {r.get('message', '')}")
        self.fail(f"{what} should raise ValueError ({why}), but you returned {returned(r['value'])}{tail}")

    def as_tensor(self, got: Any, label: str) -> torch.Tensor:
        if not isinstance(got, torch.Tensor):
            kind = got.get("type") if isinstance(got, dict) and set(got) <= {"type", "len"} else type(got).__name__
            self.fail(f"{label} should be a torch.Tensor, got {kind}")
        return got

    def mapping(self, got: Any, keys: set, label: str) -> dict:
        """``got`` must be a dict with exactly ``keys``; ``label`` says what to return."""
        if self.kind(got) != "dict" or set(got) != keys:
            self.fail(f"{label}, got {sorted(got) if self.kind(got) == 'dict' else self.kind(got)}")
        return got

    @staticmethod
    def kind(got: Any) -> str:
        """The learner's value's type name (as recorded)."""
        if isinstance(got, dict) and set(got) <= {"type", "len"} and "type" in got:
            return got["type"]
        return type(got).__name__

    def compare(self, got: Any, want: torch.Tensor, *, label: str, dims: str, result: dict | None = None,
                shape_hints: Mapping[tuple, str] | None = None,
                candidates: Iterable[tuple[str, Callable[[], torch.Tensor]]] = ()) -> None:
        """Shape first (``dims`` spells the axes, e.g. ``(B, C, nh, nw)``), then values.

        ``candidates`` are (diagnosis, thunk) pairs: known mistakes re-run on the same inputs;
        the first whose output matches the learner's names the mistake.
        """
        got = self.as_tensor(got, label)
        off = (result or {}).get("off_device") or []
        if off:
            self.fail(f"{label} is on {off[0]}, expected the input's device (create new tensors on x.device)")
        if got.shape != want.shape:
            hint = (shape_hints or {}).get(shape(got))
            self.fail(f"{label}: expected {dims} = {shape(want)}, got {shape(got)}" + (f" — {hint}" if hint else ""))
        if not got.is_floating_point():
            self.fail(f"{label} should be a float tensor like its input, got dtype {got.dtype}")
        if close(got, want):
            return
        for diagnosis, thunk in candidates:
            try:
                cand = thunk()
            except Exception:  # noqa: BLE001 - a mistake that cannot even run on these inputs
                continue
            if isinstance(cand, torch.Tensor) and close(got, cand):
                self.fail(f"{label}: {diagnosis}")
        if torch.isnan(got).any() and not torch.isnan(want).any():
            self.fail(f"{label} contains NaN where the reference has none")
        diff = (got.float() - want.float()).abs().nan_to_num(nan=INF)
        idx = tuple(int(i) for i in torch.unravel_index(diff.argmax(), diff.shape))
        self.fail(f"{label} has the right shape {dims} = {shape(want)} but the wrong values: max |diff| = "
                  f"{diff.max().item():.3g} at index {idx} (reference value {want[idx].item():.4g}, "
                  f"yours {got[idx].item():.4g})")

    def module(self, case: Case, results: list, i: int) -> dict:
        """The record of build step ``i``: it must have given an nn.Module."""
        rec = self.value(case, results, i)
        if not rec.get("module"):
            self.fail(f"{case.plan[i]['what']} should give a torch.nn.Module, got {rec.get('type')} (subclass "
                      f"nn.Module and call super().__init__() first)")
        return rec

    def weights_loaded(self, case: Case, results: list, i_build: int, i_load: int,
                       no_bias_note: str = "DUSt3R builds these convs with bias=False",
                       bias_note: str = "DUSt3R's convs here have a bias (nn.Conv2d's default bias=True)",
                       hint: Callable[[list, list, list], str | None] | None = None) -> dict:
        """The built module's parameters carry the prescribed names and shapes, and the load worked."""
        rec = self.module(case, results, i_build)
        ref_state = case.plan[i_load]["state"]
        got = {k: list(v) for k, v in rec["state"].items()}
        missing = [k for k in ref_state if k not in got]
        unexpected = [k for k in got if k not in ref_state]
        mismatched = [(k, list(ref_state[k].shape), got[k]) for k in ref_state
                      if k in got and got[k] != list(ref_state[k].shape)]
        if missing or unexpected or mismatched:
            extra_bias = [k for k in unexpected if k.endswith(".bias") and k[:-5] + ".weight" in ref_state]
            missing_bias = [k for k in missing if k.endswith(".bias") and k[:-5] + ".weight" in got]
            if extra_bias and not missing and not mismatched and len(extra_bias) == len(unexpected):
                self.fail(f"bias where DUSt3R has none: {extra_bias} — {no_bias_note}")
            if missing_bias and not unexpected and not mismatched and len(missing_bias) == len(missing):
                self.fail(f"missing bias: {missing_bias} — {bias_note}")
            specific = hint(missing, unexpected, mismatched) if hint else None
            parts = [f"missing parameters {missing}"] if missing else []
            parts += [f"unexpected parameters {unexpected}"] if unexpected else []
            parts += [f"{k}: expected shape {want}, got {have}" for k, want, have in mismatched]
            if specific:        # the diagnosis first, then only what differs
                self.fail(f"{specific} — your module's parameters differ: " + "; ".join(parts))
            table = (f" (expected { {k: list(v.shape) for k, v in ref_state.items()} })"
                     if len(ref_state) <= 8 else "")
            self.fail("your module's parameters do not match the names and shapes the exercise prescribes"
                      f"{table}: " + "; ".join(parts))
        r = results[i_load]
        if "raised" in r:
            self.fail(f"loading the reference weights into your module failed: {r['raised']}: {r.get('message', '')}")
        return rec

    def unchanged(self, results: list, i: int, message: str) -> None:
        """Step ``i`` must not have modified its tensor arguments in place."""
        if results[i].get("mutated"):
            self.fail(message)
