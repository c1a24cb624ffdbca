"""Stage 5: the regression head, from the finest fused map (1/2 of the image) to pixels.

    reduce   3x3 conv  D -> D/2          (B, D/2, H/2, W/2)
    upsample x2 bilinear, align_corners  (B, D/2, H, W)   (to (H, W) exactly when the patch
                                                          size is not 16, e.g. 14: x1.75)
    refine   3x3 conv  D/2 -> last_dim   (B, last_dim, H, W)
    ReLU
    predict  1x1 conv  last_dim -> out   (B, out, H, W)   out = 3 (+1 for confidence)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .fused import conv_relu
from .fusion import Upsample


class RegressionHead(nn.Module):
    """``(B, feature_dim, h, w) -> (B, out_channels, 2h, 2w)``: raw per-pixel predictions.

    ``out_size`` replaces the x2 factor by an explicit size (used for patch sizes other than 16).
    """

    def __init__(self, feature_dim: int, last_dim: int, out_channels: int):
        super().__init__()
        if feature_dim % 2:
            raise ValueError(f"feature_dim must be even (the head halves it), got {feature_dim}")
        self.reduce = nn.Conv2d(feature_dim, feature_dim // 2, kernel_size=3, padding=1)
        self.upsample = Upsample()
        self.refine = nn.Conv2d(feature_dim // 2, last_dim, kernel_size=3, padding=1)
        self.predict = nn.Conv2d(last_dim, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor, out_size: tuple[int, int] | None = None, fast: bool = False) -> torch.Tensor:
        x = self.reduce(x)                     # (B, D/2, h, w)
        x = self.upsample(x, out_size)         # (B, D/2, 2h, 2w) or (B, D/2, *out_size)
        x = conv_relu(self.refine, x) if fast else F.relu(self.refine(x))  # (B, last_dim, ...)
        return self.predict(x)                 # (B, out_channels, ...)
