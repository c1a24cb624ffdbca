"""The fast inference path: one switch, and the fused convolutions it uses.

In eval mode without autograd (``torch.inference_mode()`` or ``torch.no_grad()``) the head
can run the same maths faster: channels-last memory, each fusion block's 1x1 conv before
the x2 upsample instead of after (they commute), and conv + ReLU / conv + residual add in
one oneDNN kernel on the CPU, which saves a full pass over the largest feature maps. Only
the rounding order can differ from the reference order.

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


def _fusable(conv: nn.Conv2d, x: torch.Tensor) -> bool:
    return (_POINTWISE is not None and torch.backends.mkldnn.is_available() and x.device.type == "cpu"
            and x.dtype == torch.float32 and conv.weight.dtype == torch.float32
            and not conv._forward_hooks and not conv._forward_pre_hooks and isinstance(conv.padding, tuple))


def conv_relu(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``relu(conv(x))``, fused where oneDNN can."""
    if not _fusable(conv, x):
        return F.relu(conv(x))
    return _POINTWISE(x, conv.weight, conv.bias, conv.padding, conv.stride, conv.dilation, conv.groups,
                      "relu", [None], "")


def conv_add(conv: nn.Conv2d, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``conv(x) + other`` (``other`` must have the conv output's shape), fused where oneDNN can."""
    if not _fusable(conv, x) or other.shape[1] != conv.out_channels:
        return conv(x) + other
    return _POINTWISE(x, other, conv.weight, conv.bias, conv.padding, conv.stride, conv.dilation, conv.groups,
                      "add", 1.0, None, [None], None)
