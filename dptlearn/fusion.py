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

``fuse_pyramid`` runs the four blocks coarse to fine, with DUSt3R's crop for odd grids.
Every module here computes this reference order in every mode (training, eval, no_grad,
inference_mode), so forward hooks see the shapes the lectures draw; the inference-only
speed-ups (the 1x1 conv before the upsample, fused kernels) are ``fast.optimize_for_inference``.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class Upsample(nn.Module):
    """Bilinear upsampling by ``scale`` with ``align_corners=True`` (DUSt3R's setting everywhere).

    With ``align_corners=True`` only the input and output sizes matter: ``scale=1.75`` on
    ``8n`` rows gives exactly ``14n`` rows (the head's last step for 14-pixel patches).
    ``size=(h, w)`` in a call asks for exactly that size instead: Depth Anything V2's coarsest
    fusion block on an odd grid (``fuse_pyramid_uncropped`` passes it through ``FusionBlock``).
    """

    def __init__(self, scale: float = 2.0):
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        if size is not None:
            return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)  # (B, C, *size)
        return F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=True)  # (B, C, s*h, s*w)

    def extra_repr(self) -> str:
        return f"scale={self.scale:g}"


class ResidualConvUnit(nn.Module):
    """Pre-activation residual unit: ``x + conv2(relu(conv1(relu(x))))``, shape-preserving."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(dim, dim, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(x))            # not in place: x is needed for the skip
        out = self.conv2(F.relu(out))
        return x + out


class FusionBlock(nn.Module):
    """Fuse the coarser path ``x`` with a pyramid level ``skip``, refine, upsample x2.

    ``x, skip: (B, D, h, w) -> (B, D, 2h, 2w)``. With ``with_skip=False`` (the coarsest
    level) the block takes ``x`` alone. ``resize_skip=True`` is transformers' DPT: a skip
    whose size differs from the path's is resized to it (bilinear, ``align_corners=False``)
    instead of being an error; DUSt3R crops the path beforehand instead (``crop_to``).
    ``size=(h, w)`` (keyword only) upsamples to exactly that size instead of x2 (Depth Anything V2's
    coarsest block on an odd grid).
    """

    def __init__(self, dim: int, with_skip: bool = True, resize_skip: bool = False):
        super().__init__()
        self.resize_skip = resize_skip
        self.skip_unit = ResidualConvUnit(dim) if with_skip else None
        self.unit = ResidualConvUnit(dim)
        self.upsample = Upsample()
        self.out_conv = nn.Conv2d(dim, dim, kernel_size=1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None, *,
                size: tuple[int, int] | None = None) -> torch.Tensor:
        out = self.merge(x, skip)              # (B, D, h, w)
        out = self.upsample(out, size)         # (B, D, 2h, 2w) | (B, D, *size)
        return self.out_conv(out)              # (B, D, 2h, 2w) | (B, D, *size)

    def merge(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        """The block before its upsample: ``unit(x + skip_unit(skip))``, (B, D, h, w)."""
        self.check_inputs(x, skip)
        if skip is not None and self.resize_skip and skip.shape[-2:] != x.shape[-2:]:
            skip = F.interpolate(skip, size=x.shape[-2:], mode="bilinear", align_corners=False)  # (B, D, h, w)
        out = x if skip is None else x + self.skip_unit(skip)  # (B, D, h, w)
        return self.unit(out)                  # (B, D, h, w)

    def check_inputs(self, x: torch.Tensor, skip: torch.Tensor | None) -> None:
        if (skip is None) != (self.skip_unit is None):
            want = "a skip input" if self.skip_unit is not None else "no skip input (coarsest level)"
            raise ValueError(f"this FusionBlock expects {want}, got skip={'None' if skip is None else 'a tensor'}")
        resizable = self.resize_skip and skip is not None and skip.shape[:2] == x.shape[:2]
        if skip is not None and skip.shape != x.shape and not resizable:
            raise ValueError(f"FusionBlock: the path {tuple(x.shape)} and the skip {tuple(skip.shape)} must "
                             f"have the same shape (B, D, h, w); an odd grid needs crop_to() on the path")


def crop_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Crop ``x`` (B, C, H, W) to ``size = (h, w)``, keeping the top-left (DUSt3R's odd-grid fix).

    On a grid with an odd side (512x336 -> 21 rows) the x1/2 branch rounds up to 11 rows,
    the fusion doubles that to 22, and the last row must go to meet the 21-row level.
    """
    h, w = size
    if x.shape[-2] < h or x.shape[-1] < w:
        raise ValueError(f"crop_to: cannot crop {tuple(x.shape)} to a larger size (..., {h}, {w})")
    return x[..., :h, :w]  # (B, C, h, w)


def _check_pyramid(who: str, levels: Sequence[torch.Tensor], fusion: Sequence[nn.Module]) -> None:
    if len(levels) != 4 or len(fusion) != 4:
        raise ValueError(f"{who} needs 4 levels and 4 fusion blocks, got {len(levels)} and {len(fusion)}")


def fuse_pyramid(levels: Sequence[torch.Tensor], fusion: Sequence[nn.Module]) -> torch.Tensor:
    """Coarse to fine over 4 levels (finest first, 1/4 .. 1/32 of the image) -> (B, D, 8nh, 8nw).

    ``fusion[3]`` takes the coarsest level alone; its x2 output is cropped to the 1/16 level's
    size (one row or column too many on an odd grid), then each finer block takes the path
    and its level.
    """
    _check_pyramid("fuse_pyramid", levels, fusion)
    path = fusion[3](levels[3])                     # (B, D, 2*ceil(nh/2), 2*ceil(nw/2))
    path = crop_to(path, levels[2].shape[-2:])      # (B, D, nh, nw)
    for i in (2, 1, 0):
        path = fusion[i](path, levels[i])           # (B, D, 2nh, 2nw) -> (4nh, 4nw) -> (8nh, 8nw)
    return path


ODD_GRIDS = ("crop", "resize_skip", "upsample_to_level")


def fuse_pyramid_uncropped(levels: Sequence[torch.Tensor], fusion: Sequence[nn.Module], odd_grid: str) -> torch.Tensor:
    """``fuse_pyramid`` without DUSt3R's crop: the two other answers to an odd patch grid.

    - ``resize_skip`` (transformers' DPT): nothing is cut; each finer block resizes its level to the
      larger path (its blocks are built with ``resize_skip=True``), so on an odd side the map ends
      one coarsest cell larger: ``(B, D, 16*ceil(nh/2), ...)`` instead of ``(B, D, 8nh, ...)``.
    - ``upsample_to_level`` (Depth Anything V2): the coarsest block upsamples straight to the 1/16
      level's size (``ceil(nh/2) -> nh`` rows, not ``-> 2*ceil(nh/2)``); every later step is an
      exact doubling, so the map is ``(B, D, 8nh, 8nw)`` as with the crop, with other values.
    On an even grid all three give the same numbers.
    """
    if odd_grid not in ODD_GRIDS[1:]:
        raise ValueError(f"fuse_pyramid_uncropped: odd_grid must be one of {ODD_GRIDS[1:]}, got {odd_grid!r} "
                         f"(DUSt3R's 'crop' is fuse_pyramid)")
    _check_pyramid("fuse_pyramid_uncropped", levels, fusion)
    size = tuple(levels[2].shape[-2:]) if odd_grid == "upsample_to_level" else None
    path = fusion[3](levels[3], size=size)          # (B, D, nh, nw) | (B, D, 2*ceil(nh/2), 2*ceil(nw/2))
    for i in (2, 1, 0):
        path = fusion[i](path, levels[i])           # x2 each: (B, D, 8nh, 8nw) | (B, D, 16*ceil(nh/2), ...)
    return path
