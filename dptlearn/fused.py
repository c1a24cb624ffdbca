"""The fast inference path: one switch, and the fused convolutions it uses.

In eval mode without autograd (``torch.inference_mode()`` or ``torch.no_grad()``) the head
can run the same maths faster: channels-last memory, each fusion block's 1x1 conv before
the x2 upsample instead of after (they commute), and conv + ReLU / conv + residual add in
one oneDNN kernel on the CPU, which saves a full pass over the largest feature maps. Only
the rounding order can differ from the reference order.

The fused kernels run in float32 and, where oneDNN supports it on this CPU (AVX-512 BF16 or
AMX), in bfloat16: for a head converted with ``head.to(torch.bfloat16)``, and under
``torch.autocast("cpu", dtype=torch.bfloat16)``, where a fused conv casts its operands (input,
weight, bias and the tensor it adds) to autocast's dtype, as ``nn.Conv2d`` does under autocast,
and returns bfloat16.

The switch is module state, set in one place (as timm's ``fused_attn``): every module that
has a fast path reads its own ``fast_inference`` attribute, and ``set_fast_inference``
flips it for a whole model. ``forward()`` keeps exactly the signature its exercise asks for.
Convs that carry hooks are never fused (hooks must see every call).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_POINTWISE = getattr(torch.ops.mkldnn, "_convolution_pointwise", None) if hasattr(torch.ops, "mkldnn") else None
# The dtypes the fused kernels run in on this CPU: bfloat16 needs AVX-512 BF16 or AMX.
_FUSED_DTYPES: tuple[torch.dtype, ...] = ()
if _POINTWISE is not None:
    _FUSED_DTYPES = (torch.float32, torch.bfloat16) if torch.ops.mkldnn._is_mkldnn_bf16_supported() else (torch.float32,)


class FastPath:
    """Mixin for modules with a fast inference path; ``fast_inference`` is on by default."""

    fast_inference: bool = True

    def use_fast_path(self) -> bool:
        """Take the fast path only when it cannot change what training or autograd sees."""
        return self.fast_inference and not self.training and not torch.is_grad_enabled()


def set_fast_inference(model: nn.Module, on: bool) -> nn.Module:
    """Switch the fast inference path on or off for every module of ``model`` that has one."""
    for m in model.modules():
        if isinstance(m, FastPath):
            m.fast_inference = bool(on)
    return model


def _operands(conv: nn.Conv2d, *xs: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor | None]:
    """``xs``, weight and bias in the dtype the conv computes in (autocast's, when it is on)."""
    w, b = conv.weight, conv.bias
    if torch.is_autocast_enabled("cpu") and xs[0].device.type == "cpu":
        dtype = torch.get_autocast_dtype("cpu")
        xs, w, b = [x.to(dtype) for x in xs], w.to(dtype), None if b is None else b.to(dtype)
    return list(xs), w, b


def _fusable(conv: nn.Conv2d, x: torch.Tensor, w: torch.Tensor) -> bool:
    return (x.device.type == "cpu" and x.dtype == w.dtype and x.dtype in _FUSED_DTYPES
            and torch.backends.mkldnn.is_available() and isinstance(conv.padding, tuple)
            and not conv._forward_hooks and not conv._forward_pre_hooks)


def conv_relu(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``relu(conv(x))``, fused where oneDNN can."""
    (xc,), w, b = _operands(conv, x)
    if not _fusable(conv, xc, w):
        return F.relu(conv(x))
    return _POINTWISE(xc, w, b, conv.padding, conv.stride, conv.dilation, conv.groups, "relu", [None], "")


def conv_add(conv: nn.Conv2d, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``conv(x) + other`` (``other`` must have the conv output's shape), fused where oneDNN can."""
    (xc, oc), w, b = _operands(conv, x, other)
    if not _fusable(conv, xc, w) or oc.dtype != xc.dtype or other.shape[1] != conv.out_channels:
        return conv(x) + other
    return _POINTWISE(xc, oc, w, b, conv.padding, conv.stride, conv.dilation, conv.groups,
                      "add", 1.0, None, [None], None)
