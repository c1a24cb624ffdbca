"""Inference-only speed-ups for a DPT head, as one opt-in transform: ``optimize_for_inference``.

The stage modules compute the reference order only, in every mode. For inference,

    fast = optimize_for_inference(head)                    # or (head, dtype=torch.bfloat16)
    with torch.inference_mode():
        out = fast(tokens, (H, W))                         # tokens in the head's dtype

returns a new head (``head`` itself is not changed) that does the same maths faster:

- **channels-last** memory for every conv's weights, so oneDNN runs them NHWC end to end;
- each fusion block's **1x1 conv before its upsample** instead of after: a 1x1 conv is an affine
  map per pixel and bilinear weights sum to 1, so the two commute, and the conv runs on 4x fewer
  pixels;
- **fused kernels**: conv + ReLU and conv + residual add in one oneDNN kernel
  (``torch.ops.mkldnn._convolution_pointwise``, a private op: this module is the only place that
  uses it), which saves a pass over the largest maps; where the op or a dtype is missing on this
  CPU, the plain ops run instead;
- **bfloat16** where asked (``dtype=torch.bfloat16``; oneDNN has the kernels on CPUs with AVX-512
  BF16 or AMX). The fused kernels also run under ``torch.autocast("cpu", dtype=torch.bfloat16)``,
  casting their operands as ``nn.Conv2d`` does.

Only the rounding order differs: in float32 the result matches the plain head to 1e-5 relative
(tests/test_fast.py). The optimised head is **eval-only**: its parameters are frozen, ``.train()``
raises, and so does a forward whose input requires a gradient (train the plain head, then call
``optimize_for_inference`` again). Forward hooks on its fusion blocks see the commuted order; hooks
belong on the plain head, which draws what the lectures draw. A conv that carries a hook is never
fused, so the hook sees its call. ``torch.compile`` (inductor, freezing on) works offline too, but
takes about a minute to compile for a few percent more; ``make bench`` measures it (``--compile``)
and onnxruntime beside this (docs/benchmarks.md).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .fusion import FusionBlock, ResidualConvUnit
from .head import RegressionHead

_POINTWISE = getattr(torch.ops.mkldnn, "_convolution_pointwise", None) if hasattr(torch.ops, "mkldnn") else None
# The dtypes the fused kernels run in on this CPU: bfloat16 needs AVX-512 BF16 or AMX.
FUSED_DTYPES: tuple[torch.dtype, ...] = ()
if _POINTWISE is not None and torch.backends.mkldnn.is_available():
    FUSED_DTYPES = (torch.float32, torch.bfloat16) if torch.ops.mkldnn._is_mkldnn_bf16_supported() else (torch.float32,)


def _operands(conv: nn.Conv2d, *xs: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor | None]:
    """``xs``, weight and bias in the dtype the conv computes in (autocast's, when it is on)."""
    w, b = conv.weight, conv.bias
    if torch.is_autocast_enabled("cpu") and xs[0].device.type == "cpu":
        dtype = torch.get_autocast_dtype("cpu")
        xs, w, b = [x.to(dtype) for x in xs], w.to(dtype), None if b is None else b.to(dtype)
    return list(xs), w, b


def _fusable(conv: nn.Conv2d, x: torch.Tensor, w: torch.Tensor) -> bool:
    return (x.device.type == "cpu" and x.dtype == w.dtype and x.dtype in FUSED_DTYPES
            and isinstance(conv.padding, tuple) and not conv._forward_hooks and not conv._forward_pre_hooks)


def conv_relu(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``relu(conv(x))``, in one kernel where oneDNN can."""
    (xc,), w, b = _operands(conv, x)
    if not _fusable(conv, xc, w):
        return F.relu(conv(x))
    return _POINTWISE(xc, w, b, conv.padding, conv.stride, conv.dilation, conv.groups, "relu", [None], "")


def conv_add(conv: nn.Conv2d, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``conv(x) + other`` (``other`` has the conv output's shape), in one kernel where oneDNN can."""
    (xc, oc), w, b = _operands(conv, x, other)
    if not _fusable(conv, xc, w) or oc.dtype != xc.dtype or other.shape[1] != conv.out_channels:
        return conv(x) + other
    return _POINTWISE(xc, oc, w, b, conv.padding, conv.stride, conv.dilation, conv.groups,
                      "add", 1.0, None, [None], None)


class EvalOnly:
    """Mixin of the swapped-in modules: frozen, eval-only, no gradients."""

    def train(self, mode: bool = True):
        if mode:
            raise RuntimeError(f"{type(self).__name__} comes from optimize_for_inference and is eval-only: "
                               f"train the plain head (optimize_for_inference returns a copy; the original is "
                               f"unchanged), then optimise it again")
        return super().train(False)

    def _no_grad_input(self, x: torch.Tensor) -> None:
        if x.requires_grad and torch.is_grad_enabled():
            raise RuntimeError(f"{type(self).__name__} (from optimize_for_inference) computes no gradients: "
                               f"run the plain head for backward, or call this one under torch.inference_mode()")


class FastResidualConvUnit(EvalOnly, ResidualConvUnit):
    """``x + conv2(relu(conv1(relu(x))))`` with conv1 + ReLU and conv2 + add each one kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._no_grad_input(x)
        return conv_add(self.conv2, conv_relu(self.conv1, F.relu(x)), x)   # (B, D, h, w)


class FastFusionBlock(EvalOnly, FusionBlock):
    """A fusion block with its 1x1 ``out_conv`` before the upsample (they commute): 4x fewer pixels."""

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None, *,
                size: tuple[int, int] | None = None) -> torch.Tensor:
        self._no_grad_input(x)
        out = self.out_conv(self.merge(x, skip))   # (B, D, h, w)
        return self.upsample(out, size)            # (B, D, 2h, 2w) | (B, D, *size)


class FastRegressionHead(EvalOnly, RegressionHead):
    """The regression head with its 3x3 ``refine`` conv and the ReLU after it in one kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._no_grad_input(x)
        x = self.upsample(self.reduce(x))          # (B, D/2, 2h, 2w)
        x = conv_relu(self.refine, x)              # (B, last_dim, 2h, 2w)
        return self.activate(self.predict(x))      # (B, out_channels, 2h, 2w)


SWAPS = {ResidualConvUnit: FastResidualConvUnit, FusionBlock: FastFusionBlock, RegressionHead: FastRegressionHead}


def is_optimized(module: nn.Module) -> bool:
    """Whether ``module`` holds a module swapped in by ``optimize_for_inference``."""
    return any(isinstance(m, EvalOnly) for m in module.modules())


def optimize_for_inference(head: nn.Module, dtype: torch.dtype | None = None) -> nn.Module:
    """A new, eval-only copy of ``head`` (any module holding dptlearn stages) that runs faster.

    ``dtype``: convert the copy's weights (e.g. ``torch.bfloat16``; feed it tokens of that dtype).
    Stage modules of exactly dptlearn's classes are swapped for their fused versions (subclasses
    are left as they are); every weight goes channels-last. ``head`` is not changed.
    """
    if is_optimized(head):
        raise ValueError("optimize_for_inference: this head is already optimised; pass the plain head")
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"optimize_for_inference: dtype must be a floating torch.dtype, got {dtype!r}")
    fast = copy.deepcopy(head).eval().requires_grad_(False)
    for m in fast.modules():
        if type(m) in SWAPS:
            m.__class__ = SWAPS[type(m)]       # same parameters and buffers, the fused forward
    if dtype is not None:
        fast = fast.to(dtype)
    return fast.to(memory_format=torch.channels_last)
