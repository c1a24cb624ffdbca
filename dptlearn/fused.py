"""Fused convolutions for the fast inference path: conv + ReLU and conv + add in one kernel.

On the CPU, oneDNN can apply a ReLU or add a residual while it writes a convolution's
output, saving a full pass over the feature map (the maps at full resolution are the
largest tensors of the head). The maths is the same; only the rounding order can differ.
Used only in eval mode without autograd (``DPTHead.use_fast_path``), for float32 CPU
tensors, and never for a conv that has hooks (hooks must see every call); everywhere else
these fall back to the plain ops.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_POINTWISE = getattr(torch.ops.mkldnn, "_convolution_pointwise", None) if hasattr(torch.ops, "mkldnn") else None


def _fusable(conv: nn.Conv2d, x: torch.Tensor) -> bool:
    return (_POINTWISE is not None and torch.backends.mkldnn.is_available() and x.device.type == "cpu"
            and x.dtype == torch.float32 and conv.weight.dtype == torch.float32
            and not conv._forward_hooks and not conv._forward_pre_hooks and isinstance(conv.padding, tuple))


def conv_relu(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``relu(conv(x))``."""
    if not _fusable(conv, x):
        return F.relu(conv(x))
    return _POINTWISE(x, conv.weight, conv.bias, conv.padding, conv.stride, conv.dilation, conv.groups,
                      "relu", [None], "")


def conv_add(conv: nn.Conv2d, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``conv(x) + other`` (``other`` must have the conv output's shape)."""
    if not _fusable(conv, x) or other.shape[1] != conv.out_channels:
        return conv(x) + other
    return _POINTWISE(x, other, conv.weight, conv.bias, conv.padding, conv.stride, conv.dilation, conv.groups,
                      "add", 1.0, None, [None], None)
