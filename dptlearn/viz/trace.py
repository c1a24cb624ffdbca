"""A shape tracer for any DPT head: which stage turned which shape into which.

>>> tr = trace_head(head, tokens, (384, 512))
>>> print(tr.table())          # fixed-width text; nbval compares it exactly
>>> tr.figure()                # the head's data flow, every arrow labelled with its shape

Forward hooks record each submodule's input and output shapes during one forward pass
and are removed afterwards, even if the pass fails. By default the pass runs the
*reference* order of operations (the fast inference path reorders two layers; see dpt.py).
For per-layer parameter counts, ``summary()`` defers to torchinfo. The odd-grid crop inside
``fuse_pyramid`` is a slice, not a module: its row is read off the shapes around it
(``fusion.3``'s output, ``fusion.2``'s path input).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from ..dpt import DPTHead
from .flow import plot_trace
from .shapes import fmt_shape


def _shape(x: Any) -> tuple[int, ...] | None:
    return tuple(x.shape) if isinstance(x, torch.Tensor) else None


def describe(module: nn.Module) -> str:
    """A short name for a layer: 'Conv2d 3x3', 'ConvT 4x4 /4', 'Conv2d 3x3 s2', ..."""
    if isinstance(module, nn.ConvTranspose2d):
        k = module.kernel_size
        return f"ConvT {k[0]}x{k[1]} s{module.stride[0]}"
    if isinstance(module, nn.Conv2d):
        k, s = module.kernel_size, module.stride[0]
        return f"Conv2d {k[0]}x{k[1]}" + (f" s{s}" if s != 1 else "") + ("" if module.bias is not None else " nobias")
    name = type(module).__name__
    factor = getattr(module, "factor", None)
    return f"{name} x{factor:g}" if factor is not None else name


def conv_macs(module: nn.Module, in_shape: Sequence[int], out_shape: Sequence[int]) -> int:
    """Multiply-accumulates of one conv call (0 for anything else)."""
    if isinstance(module, nn.ConvTranspose2d):
        kh, kw = module.kernel_size
        B, Cin, H, W = in_shape
        return B * Cin * (module.out_channels // module.groups) * kh * kw * H * W
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        B, Cout, H, W = out_shape
        return B * Cout * (module.in_channels // module.groups) * kh * kw * H * W
    return 0


@dataclass
class TraceRow:
    name: str                          # e.g. 'reassemble.0', 'fusion.2.unit'
    kind: str                          # e.g. 'ReassembleBranch x4'
    inputs: list[tuple[int, ...]]      # tensor inputs, in call order
    output: dict[str, tuple[int, ...]] | tuple[int, ...]
    macs: int = 0                      # this call's convolution MACs (leaves only)
    depth: int = 0                     # 0: a stage, 1: a layer inside it, 2: inside that


@dataclass
class ShapeTrace:
    rows: list[TraceRow] = field(default_factory=list)
    image_size: tuple[int, int] = (0, 0)

    def stage(self, name: str) -> TraceRow:
        """The row of one stage, e.g. ``trace.stage('fusion.3')``."""
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(f"no stage {name!r} in the trace; stages: {[r.name for r in self.rows]}")

    def table(self, depth: int = 0) -> str:
        """Fixed-width text: one line per stage (``depth=1`` adds the layers inside each stage)."""
        rows = [r for r in self.rows if r.depth <= depth]
        cells = [("stage", "layer", "input", "output")]
        for r in rows:
            out = (" ".join(f"{k} {fmt_shape(v)}" for k, v in r.output.items())
                   if isinstance(r.output, dict) else fmt_shape(r.output))
            indent = "  " * r.depth
            cells.append((indent + r.name, r.kind, " + ".join(fmt_shape(s) for s in r.inputs) or "-", out))
        widths = [max(len(c[i]) for c in cells) for i in range(4)]
        lines = ["  ".join(c[i].ljust(widths[i]) for i in range(4)).rstrip() for c in cells]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def total_macs(self) -> int:
        return sum(r.macs for r in self.rows)

    def macs_by_stage(self) -> dict[str, int]:
        """Convolution MACs summed per stage ('reassemble.branches.0', 'fusion.1', 'head', ...)."""
        out: dict[str, int] = {}
        for r in self.rows:
            if r.macs:
                key = _stage_of(r.name)
                out[key] = out.get(key, 0) + r.macs
        return out

    def figure(self, title: str | None = None):
        return plot_trace(self, title=title)


def dpt_of(head: nn.Module, who: str = "trace_head") -> DPTHead:
    """The DPTHead of ``head``: itself, or its ``.dpt`` (a DUSt3R head); ``who`` names the caller in the error."""
    dpt = head if isinstance(head, DPTHead) else getattr(head, "dpt", None)
    if not isinstance(dpt, DPTHead):
        raise TypeError(f"{who} needs a DPTHead or a module with a .dpt DPTHead, got {type(head).__name__}")
    return dpt


def trace_head(head: nn.Module, tokens: Sequence[torch.Tensor], image_size: Sequence[int]) -> ShapeTrace:
    """Run ``head(tokens, image_size)`` once under ``torch.no_grad`` and record every stage's shapes.

    Works for a ``DPTHead`` or a ``DUSt3RHead`` of any configuration and image size.
    The stages compute the reference order in every mode, so the trace is what the lectures draw
    (a head from ``fast.optimize_for_inference`` would show its commuted fusion blocks instead).
    """
    dpt = dpt_of(head)
    rows: list[TraceRow] = []
    calls: dict[str, int] = {}
    for h in dpt.hooks:
        if isinstance(tokens, (list, tuple)) and h < len(tokens) and isinstance(tokens[h], torch.Tensor):
            rows.append(TraceRow(f"tokens[{h}]", "hooked layer", [], tuple(tokens[h].shape)))

    open_rows: list[TraceRow] = []

    def pre_hook(name: str, module: nn.Module):
        def hook(_m, args):
            label = name
            if name == "to_grid":
                k = calls[name] = calls.get(name, -1) + 1
                label = f"to_grid.{k}"
            row = TraceRow(label, describe(module), [s for s in (_shape(a) for a in args) if s is not None],
                           (), 0, _depth(name))
            rows.append(row)
            open_rows.append(row)
        return hook

    def post_hook(module: nn.Module):
        def hook(_m, _args, output):
            row = open_rows.pop()
            row.output = _shape(output) or ()
            row.macs = conv_macs(module, row.inputs[0], row.output) if row.inputs and row.output else 0
        return hook

    handles = []
    for name, module in dpt.named_modules():
        if not name or isinstance(module, nn.ModuleList) or name == "reassemble":
            continue
        handles.append(module.register_forward_pre_hook(pre_hook(name, module)))
        handles.append(module.register_forward_hook(post_hook(module)))
    try:
        with torch.no_grad():
            result = head(tokens, image_size)
    finally:
        for h in handles:
            h.remove()
    _insert_crop_row(rows, dpt.odd_grid)
    if isinstance(result, dict):
        raw = next(r.output for r in rows if r.name == "head")
        rows.append(TraceRow("postprocess", "DUSt3R postprocess", [raw], {k: tuple(v.shape) for k, v in result.items()}))
    return ShapeTrace(rows, tuple(image_size))


def _insert_crop_row(rows: list[TraceRow], odd_grid: str = "crop") -> None:
    """Add the crop between ``fusion.3`` and ``fusion.2``: from the coarsest block's output to the path it feeds.

    Heads with another answer to odd grids (``DPTHead.odd_grid``) crop nothing: the row says so."""
    names = [r.name for r in rows]
    if "fusion.3" not in names or "fusion.2" not in names:
        return
    before, after = rows[names.index("fusion.3")], rows[names.index("fusion.2")]
    kind = "crop_to (top-left)" if odd_grid == "crop" else f"none ({odd_grid})"
    rows.insert(names.index("fusion.2"), TraceRow("crop", kind, [before.output], after.inputs[0]))


_STAGE_PARTS = {"reassemble": 3, "fusion": 2, "readout": 2}   # 'reassemble.project.0', 'fusion.2', ...


def _stage_of(name: str) -> str:
    """The stage a module belongs to: 'fusion.2.unit.conv1' -> 'fusion.2', 'head.refine' -> 'head'."""
    parts = name.split(".")
    return ".".join(parts[:_STAGE_PARTS.get(parts[0], 1)])


def _depth(name: str) -> int:
    """0 for a stage ('readout.0', 'reassemble.branches.0', 'fusion.2', 'head'), 1 for a layer inside it, 2 below."""
    parts = name.split(".")
    return len(parts) - _STAGE_PARTS.get(parts[0], 1)


def summary(head: nn.Module, tokens: Sequence[torch.Tensor], image_size: Sequence[int], depth: int = 3) -> str:
    """torchinfo's per-layer table (input/output shapes, parameters, kernel sizes) as text."""
    import torchinfo
    stats = torchinfo.summary(head, input_data=[list(tokens), tuple(image_size)], depth=depth, verbose=0,
                              col_names=("input_size", "output_size", "num_params", "kernel_size"),
                              row_settings=("var_names",), device=dpt_of(head).reassemble.project[0].weight.device)
    return str(stats)
