"""Stage 5: the regression head, from the finest fused map (1/2 of the image) to pixels.

    reduce   3x3 conv  D -> D/2          (B, D/2, H/2, W/2)
    upsample bilinear, align_corners     (B, D/2, H, W)   x2 for 16-pixel patches; for other
                                                          patch sizes x(p/8), e.g. x1.75 for p = 14
    refine   3x3 conv  D/2 -> last_dim   (B, last_dim, H, W)
    ReLU
    predict  1x1 conv  last_dim -> out   (B, out, H, W)   out = 3 (+1 for confidence)
    (activation)                         DUSt3R: none (postprocess.py does it); DPT: ReLU;
                                         Depth Anything V2: ReLU (relative) or sigmoid (metric)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .fusion import Upsample

HEAD_ACTIVATIONS = (None, "relu", "sigmoid")


class RegressionHead(nn.Module):
    """``(B, feature_dim, h, w) -> (B, out_channels, scale*h, scale*w)``: raw per-pixel predictions.

    ``activation``: ``None`` (DUSt3R: raw values), ``'relu'`` or ``'sigmoid'`` after the last conv.
    """

    def __init__(self, feature_dim: int, last_dim: int, out_channels: int, scale: float = 2.0,
                 activation: str | None = None):
        super().__init__()
        if feature_dim % 2:
            raise ValueError(f"feature_dim must be even (the head halves it), got {feature_dim}")
        if activation not in HEAD_ACTIVATIONS:
            raise ValueError(f"activation must be one of {HEAD_ACTIVATIONS}, got {activation!r}")
        self.activation = activation
        self.reduce = nn.Conv2d(feature_dim, feature_dim // 2, kernel_size=3, padding=1)
        self.upsample = Upsample(scale)
        self.refine = nn.Conv2d(feature_dim // 2, last_dim, kernel_size=3, padding=1)
        self.predict = nn.Conv2d(last_dim, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.reduce(x)                     # (B, D/2, h, w)
        x = self.upsample(x)                   # (B, D/2, 2h, 2w)
        x = F.relu(self.refine(x))             # (B, last_dim, 2h, 2w)
        return self.activate(self.predict(x))  # (B, out_channels, 2h, 2w)

    def activate(self, x: torch.Tensor) -> torch.Tensor:
        """The head's last activation (``activation``), if any."""
        if self.activation == "relu":
            return F.relu(x)
        return torch.sigmoid(x) if self.activation == "sigmoid" else x

    def extra_repr(self) -> str:
        return f"activation={self.activation!r}" if self.activation else ""
