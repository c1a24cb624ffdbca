"""Two details of the fusion path: where x2 bilinear upsampling samples, and the odd-grid crop.

    upsample_positions(n_in, align_corners)   where each x2 output reads the input (the numbers behind the plot)
    plot_align_corners(n_in)                  those positions, align_corners True vs False
    plot_odd_grid_crop(path, skip)            the row (or column) DUSt3R's crop throws away

The positions come from ``F.interpolate`` itself, so the picture cannot drift from the code it describes.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

from .shapes import fmt_shape


def upsample_positions(n_in: int, align_corners: bool) -> torch.Tensor:
    """Where each of the ``2 * n_in`` outputs of a x2 bilinear upsample reads the input, in input-pixel units.

    Interpolating the ramp ``0, 1, ..., n_in - 1`` returns exactly those source coordinates.
    """
    ramp = torch.arange(n_in, dtype=torch.float64).view(1, 1, 1, n_in)             # (1, 1, 1, n_in)
    up = F.interpolate(ramp, scale_factor=(1, 2), mode="bilinear", align_corners=align_corners)
    return up.view(-1)                                                               # (2 n_in,)


def plot_align_corners(n_in: int = 5):
    """One row per setting: input pixels (squares) and where the x2 outputs sample them (dots)."""
    fig, ax = plt.subplots(figsize=(9, 2.8))
    ramp = torch.arange(n_in)
    for row, (flag, color) in enumerate(((True, "#1f77b4"), (False, "#d62728"))):
        pos = upsample_positions(n_in, flag)
        y = 1.0 - row
        ax.scatter(ramp.numpy(), np.full(n_in, y), marker="s", s=160, facecolor="white", edgecolor="0.3",
                   zorder=2, label=f"input pixels {fmt_shape(ramp.shape)}" if row == 0 else None)
        ax.scatter(pos.numpy(), np.full(len(pos), y), s=28, color=color, zorder=3,
                   label=f"align_corners={flag}: output samples {fmt_shape(pos.shape)}")
    ax.set_yticks([1, 0], ["align_corners=True", "align_corners=False"])
    ax.set_xlabel("position in the input row (pixel units)")
    ax.set_ylim(-0.7, 1.7)
    ax.set_title(f"x2 bilinear upsampling of a row of {n_in} pixels: where the {2 * n_in} outputs read the input",
                 fontsize=10)
    ax.legend(loc="upper center", ncol=3, fontsize=7, frameon=False, bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout()
    return fig


def plot_odd_grid_crop(path: torch.Tensor, skip: torch.Tensor, channel: int = 0):
    """The upsampled coarse path (B, C, 2h', 2w') next to the skip (B, C, h, w) it must match.

    Rows/columns of ``path`` beyond the skip's size are hatched: the crop drops them.
    """
    h, w = skip.shape[-2:]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, t, name in ((axes[0], path, "path after fusion.3 (x2)"), (axes[1], skip, "skip: the 1/16 level")):
        ax.imshow(t[0, channel].detach().float().cpu().numpy(), cmap="viridis", interpolation="nearest")
        ax.set_title(f"{name}\n{fmt_shape(t.shape)}", fontsize=9)
        ax.set_xlabel(f"columns ({t.shape[-1]})")
        ax.set_ylabel(f"rows ({t.shape[-2]})")
    H, W = path.shape[-2:]
    if H > h:
        axes[0].add_patch(plt.Rectangle((-0.5, h - 0.5), W, H - h, fill=False, hatch="xxx", edgecolor="red", lw=1.5))
    if W > w:
        axes[0].add_patch(plt.Rectangle((w - 0.5, -0.5), W - w, H, fill=False, hatch="xxx", edgecolor="red", lw=1.5))
    fig.suptitle(f"crop_to(path, ({h}, {w})) keeps the top-left {h}x{w}; hatched = dropped", fontsize=10)
    fig.tight_layout()
    return fig
