"""Stage 4: RefineNet-style fusion, coarse to fine.

A *residual conv unit* refines a feature map without changing its shape:
``x + conv2(relu(conv1(relu(x))))`` ("pre-activation": the ReLU comes before each conv).
The first ReLU must not work in place, or it would overwrite ``x`` before the skip add.

A *fusion block* merges the coarser path with the next pyramid level, refines, doubles
the resolution and mixes channels:

    out = x                        # the path coming up from the coarser level
    out = out + skip_unit(skip)    # the pyramid level at this scale (absent at the coarsest)
    out = unit(out)
    out = upsample x2 (bilinear, align_corners=True)
    out = out_conv(out)            # 1x1

DUSt3R's coarsest block is built with a skip unit too, but it only ever gets one input,
so those weights are never used; here the coarsest block is built without it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .fused import conv_add, conv_relu


class Upsample(nn.Module):
    """Bilinear upsampling with ``align_corners=True`` (DUSt3R's setting everywhere).

    x2 by default; with ``size=(H, W)`` to that size instead (for a x2 size the result is
    the same: with ``align_corners=True`` only the input and output sizes matter).
    """

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        if size is None:
            return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)  # (B, C, 2h, 2w)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=True)           # (B, C, *size)


class ResidualConvUnit(nn.Module):
    """Pre-activation residual unit: ``x + conv2(relu(conv1(relu(x))))``, shape-preserving."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(dim, dim, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, fast: bool = False) -> torch.Tensor:
        if fast:                               # same maths, conv+ReLU and conv+add fused
            return conv_add(self.conv2, conv_relu(self.conv1, F.relu(x)), x)
        out = self.conv1(F.relu(x))            # not in place: x is needed for the skip
        out = self.conv2(F.relu(out))
        return x + out


class FusionBlock(nn.Module):
    """Fuse the coarser path ``x`` with a pyramid level ``skip``, refine, upsample x2.

    ``x, skip: (B, D, h, w) -> (B, D, 2h, 2w)``. With ``with_skip=False`` (the coarsest
    level) the block takes ``x`` alone.
    """

    def __init__(self, dim: int, with_skip: bool = True):
        super().__init__()
        self.skip_unit = ResidualConvUnit(dim) if with_skip else None
        self.unit = ResidualConvUnit(dim)
        self.upsample = Upsample()
        self.out_conv = nn.Conv2d(dim, dim, kernel_size=1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None, fast: bool = False) -> torch.Tensor:
        if (skip is None) != (self.skip_unit is None):
            want = "a skip input" if self.skip_unit is not None else "no skip input (coarsest level)"
            raise ValueError(f"this FusionBlock expects {want}, got skip={'None' if skip is None else 'a tensor'}")
        out = x
        if skip is not None:
            if skip.shape != x.shape:
                raise ValueError(f"FusionBlock: the path {tuple(x.shape)} and the skip {tuple(skip.shape)} must "
                                 f"have the same shape (B, D, h, w); an odd grid needs crop_to() on the path")
            out = out + self.skip_unit(skip, fast)  # (B, D, h, w)
        out = self.unit(out, fast)             # (B, D, h, w)
        if fast:
            # A 1x1 conv commutes with bilinear upsampling (its weights sum to 1), so mixing
            # channels first does the same maths on 4x fewer pixels.
            return self.upsample(self.out_conv(out))   # (B, D, 2h, 2w)
        out = self.upsample(out)               # (B, D, 2h, 2w)
        return self.out_conv(out)              # (B, D, 2h, 2w)


class CropTo(nn.Module):
    """``crop_to`` as a module, so the shape tracer shows the crop as a stage."""

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return crop_to(x, size)


def crop_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Crop ``x`` (B, C, H, W) to ``size = (h, w)``, keeping the top-left (DUSt3R's odd-grid fix).

    On a grid with an odd side (512x336 -> 21 rows) the x1/2 branch rounds up to 11 rows,
    the fusion doubles that to 22, and the last row must go to meet the 21-row level.
    """
    h, w = size
    if x.shape[-2] < h or x.shape[-1] < w:
        raise ValueError(f"crop_to: cannot crop {tuple(x.shape)} to a larger size (..., {h}, {w})")
    return x[..., :h, :w]  # (B, C, h, w)
