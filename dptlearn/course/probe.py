"""The kernel side of a check: run the learner's code on given inputs and record what it gives.

A check has three phases (see ``checks/harness.py``): the trusted side chooses a *plan* of
steps and keeps the expected answers; ``execute`` runs the learner's object on that plan in
the learner's kernel and returns *results*; the trusted side judges them. Plans and results
are pure data (tensors on the CPU, numbers, strings, None, lists, tuples, dicts), so both
survive ``torch.save`` / ``torch.load(weights_only=True)`` between processes.

This module is the only course module inside the grading sandbox, so it imports torch and
nothing from dptlearn: no reference is within reach of the learner's code. Where an exercise
takes parts of the head as arguments (fusion blocks), the plan asks for *stand-ins* defined
here: simple, position-sensitive maps with the real parts' attribute names and call signatures,
so the learner's wiring is what gets tested.

Steps (dicts; the key ``what`` is a label for messages):

    {"op": "call", "fn": None | slot, "args": [...], "kwargs": {...}, "keep": None | slot}
        call the learner's object (or the object built into ``slot``); with ``keep``, the
        output is also kept as that slot;
        -> {"value": data, "off_device": [devices of output tensors that are not the run device],
            "mutated": [indices of tensor arguments changed in place]}
    {"op": "build", "args": [...], "slot": name}
        ``obj = learner(*args)``, kept as ``slot`` (an nn.Module is moved to the device, eval mode);
        -> {"value": {"type", "module", "sequential", "children", "state": {key: shape}}}
    {"op": "load", "slot": name, "state": {key: tensor} | {"$slot": name}}
        ``load_state_dict(state)`` (strict) into the object in ``slot`` -> {"value": "loaded"}
    {"op": "source"}   the learner's function's source text (``inspect.getsource``, cut to
        SOURCE_CHARS): find-the-bug checks compare it with the code they handed out
    {"op": "value"}    the learner's object itself as pure data: predict exercises hand in a dict

A ``call`` (without ``fn``) or ``build`` step with ``"of": [key, ...]`` uses
``learner[key][...]`` instead of the learner's object itself: the capstone hands in a dict of
its objects, e.g. ``{"parts": ..., "head": ...}`` (a missing part raises when it is looked up,
which is recorded like any other error of the step).

Arguments may hold ``{"$slot": name}`` (a built object) and ``{"$standin": kind, "params": {...}}``;
every tensor is copied to the run device. A step that raises gives
``{"raised": type name, "message": text}`` instead of ``value``. Every step result also lists
in ``calls`` the dptlearn head functions that ran during it, in the order of their first call,
as qualified names such as ``dptlearn.grid.tokens_to_grid`` (``sys.setprofile``; the first step
also names the handed-in object when it is a head function or class), and ``recorder_off``
when the learner's code switched that recorder off.
"""
from __future__ import annotations

import numbers
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

HEAD_DIR = Path(__file__).resolve().parents[1]           # dptlearn/, next to course/
NOT_HEAD = ("__init__", "device")   # every other top-level module is the head (as the grading view)
MESSAGE_CHARS = 2000   # recorded exception messages are cut to this length
MAX_ITEMS = 1000       # containers longer than this are described, not recorded
SOURCE_CHARS = 20_000  # a recorded source text is cut to this length
PROBE_DIR_VAR = "DPTLEARN_PROBE_DIR"


# ============================================================================ stand-ins

class StandInScale(nn.Module):
    """``a * x``: where a real block has a residual unit on the skip input."""

    def __init__(self, a: float):
        super().__init__()
        self.a = a

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a * x


class StandInBlock(nn.Module):
    """A fusion block's stand-in: ``x2 nearest((x + a * skip) * scale + shift)``, per channel.

    Same signature and input checks as ``FusionBlock.forward(x, skip=None)``; ``skip_unit`` is
    None for the coarsest block.
    """

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor, a: float | None):
        super().__init__()
        self.scale, self.shift = nn.Parameter(scale), nn.Parameter(shift)
        self.skip_unit = StandInScale(a) if a is not None else None

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if (skip is None) != (self.skip_unit is None):
            want = "a skip input" if self.skip_unit is not None else "no skip input (coarsest level)"
            raise ValueError(f"this fusion block expects {want}, got skip={'None' if skip is None else 'a tensor'}")
        if skip is not None and skip.shape != x.shape:
            raise ValueError(f"fusion block: the path {tuple(x.shape)} and the skip {tuple(skip.shape)} must have "
                             f"the same shape (B, D, h, w); an odd grid needs a crop of the path")
        out = x if skip is None else x + self.skip_unit(skip)                  # (B, D, h, w)
        out = out * self.scale[:, None, None] + self.shift[:, None, None]
        return F.interpolate(out, scale_factor=2, mode="nearest")              # (B, D, 2h, 2w)


STANDINS = {"fusion_blocks": lambda blocks: nn.ModuleList(StandInBlock(**b) for b in blocks)}


def build_standin(kind: str, params: Any) -> nn.Module:
    """The stand-in ``kind`` from plan data (its parameters are the given tensors), in eval mode."""
    return STANDINS[kind](params).eval()


# ============================================================================ recording

def resolve_device(device=None) -> torch.device:
    """The argument, else ``$DPTLEARN_DEVICE``, else CUDA when available, else the CPU."""
    choice = device if device is not None else os.environ.get("DPTLEARN_DEVICE") or None
    dev = torch.device(choice if choice is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def _head_name(code) -> str | None:
    """``dptlearn.<module>.<qualname>`` for code from one of the head's module files, else None."""
    path = Path(os.path.realpath(code.co_filename))
    if (path.parent != HEAD_DIR or path.stem in NOT_HEAD or path.stem.startswith("_")
            or code.co_name == "<module>"):
        return None
    return f"dptlearn.{path.stem}.{code.co_qualname}"


def _handed_in(student: Any) -> list:
    """Head names of ``student`` itself when it is (or derives from) a head function or class: a
    reference that fails before its first line runs (wrong arguments) is never seen as a call."""
    if isinstance(student, type):
        funcs = [getattr(v, "__func__", v) for klass in student.__mro__ for v in vars(klass).values()]
    else:
        funcs = [getattr(student, "__func__", getattr(student, "func", student))]
    codes = [f.__code__ for f in funcs if hasattr(f, "__code__")]
    return list(dict.fromkeys(name for name in map(_head_name, codes) if name is not None))


@contextmanager
def _head_calls() -> Iterator[dict]:
    """Record the head functions that run inside the block: ``{"calls": {name: None}, "recorder_off": bool}``."""
    seen: dict = {}
    record = {"calls": {}, "recorder_off": False}       # name -> None, in the order of first call

    def profile(frame, event, arg):
        if event == "call":
            code = frame.f_code
            if code not in seen:
                seen[code] = _head_name(code)
            if seen[code] is not None:
                record["calls"].setdefault(seen[code])

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        yield record
    finally:
        record["recorder_off"] = sys.getprofile() is not profile
        sys.setprofile(previous)


def to_data(obj: Any, depth: int = 0) -> Any:
    """Pure data for ``obj``: tensors detached on the CPU, containers recursively, else a description."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if obj is None or type(obj) in (bool, int, float, str):
        return obj
    if isinstance(obj, str):
        return str(obj)
    if isinstance(obj, numbers.Integral):   # numpy scalars and enums become plain numbers (loadable data)
        return int(obj)
    if isinstance(obj, numbers.Real):
        return float(obj)
    if isinstance(obj, torch.Size):
        return tuple(int(v) for v in obj)
    if isinstance(obj, (list, tuple, dict)) and (depth > 8 or len(obj) > MAX_ITEMS):
        return {"type": type(obj).__name__, "len": len(obj)}
    if type(obj) in (list, tuple):
        return type(obj)(to_data(v, depth + 1) for v in obj)
    if isinstance(obj, dict):
        return {_key(k): to_data(v, depth + 1) for k, v in obj.items()}
    return {"type": type(obj).__name__}


def _key(k: Any) -> str | int:
    if isinstance(k, str):
        return str(k)
    return int(k) if isinstance(k, numbers.Integral) and not isinstance(k, bool) else repr(k)


def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)


def _resolve(arg: Any, slots: dict, dev: torch.device) -> Any:
    """Plan data -> call argument: tensors to the device, slots and stand-ins built."""
    if isinstance(arg, torch.Tensor):
        return arg.to(dev, copy=True)
    if isinstance(arg, dict) and "$slot" in arg:
        return slots[arg["$slot"]]
    if isinstance(arg, dict) and "$standin" in arg:
        return build_standin(arg["$standin"], _resolve(arg["params"], slots, dev))
    if type(arg) in (list, tuple):
        return type(arg)(_resolve(v, slots, dev) for v in arg)
    if type(arg) is dict:
        return {k: _resolve(v, slots, dev) for k, v in arg.items()}
    return arg


def _describe_module(obj: Any) -> dict:
    if not isinstance(obj, nn.Module):
        return {"type": type(obj).__name__, "module": False}
    return {"type": type(obj).__name__, "module": True, "sequential": isinstance(obj, nn.Sequential),
            "children": [type(m).__name__ for m in obj.children()],
            "state": {k: list(v.shape) for k, v in obj.state_dict().items()}}


def _step(student: Any, step: dict, slots: dict, dev: torch.device) -> dict:
    op = step["op"]
    for key in step.get("of", ()):
        student = student[key]
    if op == "source":
        import inspect
        return {"value": inspect.getsource(student)[:SOURCE_CHARS]}
    if op == "value":
        return {"value": to_data(student)}
    if op == "build":
        obj = student(*_resolve(step["args"], slots, dev))
        if isinstance(obj, nn.Module):
            obj = obj.to(dev).eval()
        slots[step["slot"]] = obj
        return {"value": _describe_module(obj)}
    if op == "load":
        state = step["state"]
        state = slots[state["$slot"]] if "$slot" in state else {k: v.clone() for k, v in state.items()}
        slots[step["slot"]].load_state_dict(state)
        return {"value": "loaded"}
    if op != "call":
        raise ValueError(f"unknown plan step {op!r}")
    target = student if step.get("fn") is None else slots[step["fn"]]
    args = _resolve(step.get("args", []), slots, dev)
    kwargs = _resolve(step.get("kwargs", {}), slots, dev)
    watched = list(_tensors(args))
    before = [t.clone() for t in watched]
    out = target(*args, **kwargs)
    if step.get("keep"):
        slots[step["keep"]] = out
    return {"value": to_data(out),
            "off_device": sorted({str(t.device) for t in _tensors(out) if t.device != dev}),
            "mutated": [i for i, (t, b) in enumerate(zip(watched, before))
                        if t.shape != b.shape or not torch.equal(t, b)]}


@contextmanager
def _exact() -> Iterator[None]:
    """float32-exact (TF32 off), no autograd, seeded; restores the global RNG and TF32 flags."""
    flags = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(0)
            yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags


def execute(student: Any, plan: list, device=None) -> list:
    """Run ``student`` on every step of ``plan``; one result dict per step (never raises for its errors)."""
    dev = resolve_device(device)
    slots: dict = {}
    results = []
    with _exact():
        for step in plan:
            with _head_calls() as seen:
                try:
                    result = _step(student, step, slots, dev)
                except (Exception, SystemExit) as e:  # noqa: BLE001 - the learner's errors are results
                    result = {"raised": type(e).__name__, "message": str(e)[:MESSAGE_CHARS]}
            result["calls"] = list(seen["calls"])
            if seen["recorder_off"]:
                result["recorder_off"] = True
            results.append(result)
    if results:
        results[0]["calls"] = list(dict.fromkeys(_handed_in(student) + results[0]["calls"]))
    return results


def record(ex_id: str, check_name: str, student: Any) -> None:
    """Grading: run ``student`` on ``$DPTLEARN_PROBE_DIR/cases/<ex_id>.pt``, write ``results/<ex_id>.pt``.

    The case file holds the plan (a list of steps); the results file gets
    ``{"check": check_name, "results": [...]}``. Prints one neutral line; the verdict is made
    outside the notebook.
    """
    root = Path(os.environ[PROBE_DIR_VAR])
    plan = torch.load(root / "cases" / f"{ex_id}.pt", weights_only=True)
    payload = {"check": check_name, "results": execute(student, plan)}
    out = root / "results" / f"{ex_id}.pt"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, out)
    print(f"answer recorded for {ex_id}; the grader checks it outside the notebook")
