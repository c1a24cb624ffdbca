"""Stage 3: reassemble four same-size token grids into a four-level feature pyramid.

Every hooked layer arrives as a grid at 1/p of the image (1/16 for p = 16). Each branch
first projects the channels with a 1x1 conv, then resamples by a fixed factor:

    branch 0  x4   ConvTranspose2d(k=4, s=4)   -> 1/4 of the image
    branch 1  x2   ConvTranspose2d(k=2, s=2)   -> 1/8
    branch 2  x1   (nothing)                   -> 1/16
    branch 3  x1/2 Conv2d(k=3, s=2, p=1)       -> 1/32 (rounded up: 21 rows -> 11)

A 3x3 conv without bias then brings every level to the fusion width D (DUSt3R's
``scratch.layer_rn``). ``Reassemble`` is the whole stage: four branches + four projections.

All resampling here is learned; the only fixed interpolation in DPT is in the fusion
blocks and the head.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

REASSEMBLE_FACTORS = (4, 2, 1, 0.5)


def resample(dim: int, factor: float) -> nn.Module | None:
    """The learned resampling layer for one branch (None for factor 1)."""
    if factor == 4:
        return nn.ConvTranspose2d(dim, dim, kernel_size=4, stride=4)
    if factor == 2:
        return nn.ConvTranspose2d(dim, dim, kernel_size=2, stride=2)
    if factor == 1:
        return None
    if factor == 0.5:
        return nn.Conv2d(dim, dim, kernel_size=3, stride=2, padding=1)
    raise ValueError(f"reassemble factor must be one of {REASSEMBLE_FACTORS}, got {factor!r}")


class ReassembleBranch(nn.Sequential):
    """1x1 projection ``in_dim -> out_dim``, then resampling by ``factor``.

    ``(B, in_dim, nh, nw) -> (B, out_dim, factor*nh, factor*nw)``; for factor 1/2 the
    size is ``ceil(n/2)``. Index ``[0]`` is the projection, ``[1]`` the resampler.
    """

    def __init__(self, in_dim: int, out_dim: int, factor: float):
        layers = [nn.Conv2d(in_dim, out_dim, kernel_size=1)]
        up_or_down = resample(out_dim, factor)
        if up_or_down is not None:
            layers.append(up_or_down)
        super().__init__(*layers)
        self.factor = factor

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


class Reassemble(nn.Module):
    """Four same-size grids -> four levels at the fusion width, finest first.

    ``grids[i]: (B, dim_tokens[i], nh, nw)`` -> ``levels[i]: (B, feature_dim, f_i*nh, f_i*nw)``
    with ``f = (4, 2, 1, 1/2)``. ``branches[i]`` resamples (``dim_tokens[i] -> layer_dims[i]``),
    ``project[i]`` is a 3x3 conv without bias (``layer_dims[i] -> feature_dim``).
    """

    def __init__(self, dim_tokens: Sequence[int], layer_dims: Sequence[int], feature_dim: int):
        super().__init__()
        self.branches = nn.ModuleList(ReassembleBranch(c, d, f)
                                      for c, d, f in zip(dim_tokens, layer_dims, REASSEMBLE_FACTORS))
        self.project = nn.ModuleList(nn.Conv2d(d, feature_dim, kernel_size=3, padding=1, bias=False)
                                     for d in layer_dims)

    def forward(self, grids: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(grids) != 4:
            raise ValueError(f"Reassemble needs 4 grids (one per hooked layer), got {len(grids)}")
        return [proj(branch(g)) for branch, proj, g in zip(self.branches, self.project, grids)]  # 1/4 .. 1/32
