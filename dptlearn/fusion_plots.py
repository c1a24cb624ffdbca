"""Pictures for the fusion, head and DUSt3R notebooks (04-07). Every label carries a shape.

    plot_align_corners(n_in)          where x2 bilinear samples land, align_corners True vs False
    plot_odd_grid_crop(path, skip)    the row (or column) DUSt3R's crop throws away
    plot_postprocess_curves(d, x)     depth modes (exp, square, linear) and confidence modes
    plot_stage_bars(values, ...)      one bar per head stage (MACs, activation memory, ...)

The curves and sample positions are computed with the package's own functions and
``F.interpolate``, so the pictures cannot drift from the code they describe.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

from .postprocess import conf_activation, depth_activation
from .trace import fmt_shape


def _shape(t: torch.Tensor) -> str:
    return fmt_shape(t.shape)


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
                   zorder=2, label=f"input pixels {_shape(ramp)}" if row == 0 else None)
        ax.scatter(pos.numpy(), np.full(len(pos), y), s=28, color=color, zorder=3,
                   label=f"align_corners={flag}: output samples {_shape(pos)}")
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
        ax.set_title(f"{name}\n{_shape(t)}", fontsize=9)
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


def plot_postprocess_curves(d: torch.Tensor, x: torch.Tensor):
    """Left: output length vs raw length |v| for each depth mode. Right: confidence vs raw channel."""
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 3.8))
    v = torch.stack([d, torch.zeros_like(d), torch.zeros_like(d)], dim=-1)        # (n, 3), length d
    for name in ("exp", "square", "linear"):
        out = depth_activation(v, (name, -math.inf, math.inf)).norm(dim=-1)       # (n,)
        ax0.plot(d.numpy(), out.numpy(), label=f"{name}")
    ax0.set_xlabel(f"raw length |v| = |(x, y, z)|   (v: {_shape(v)})")
    ax0.set_ylabel("output length |pts3d|")
    ax0.set_title("depth_activation: direction kept, length remapped", fontsize=9)
    ax0.legend(fontsize=8)
    ax0.grid(alpha=0.3)
    for mode in (("exp", 1, math.inf), ("sigmoid", 0, 1)):
        ax1.plot(x.numpy(), conf_activation(x, mode).numpy(), label=f"{mode[0]}, vmin={mode[1]}, vmax={mode[2]}")
    ax1.axhline(1.0, color="0.5", lw=0.8, ls="--")
    ax1.set_yscale("log")
    ax1.set_xlabel(f"raw confidence channel c   (c: {_shape(x)})")
    ax1.set_ylabel("conf (log scale)")
    ax1.set_title("conf_activation: DUSt3R uses exp, 1 + e^c > 1", fontsize=9)
    ax1.legend(fontsize=8)
    ax1.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_stage_bars(values: Mapping[str, float], ylabel: str, title: str, shapes: Mapping[str, Sequence[int]] | None = None,
                    ax=None):
    """A bar per stage, in the order given; ``shapes`` (stage -> output shape) go under the stage names."""
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(12, 4.4))
    names = list(values)
    labels = [n if shapes is None or n not in shapes else f"{n}\n{tuple(shapes[n])}" for n in names]
    ax.bar(range(len(names)), [values[n] for n in names], color="#6a3d9a")
    ax.set_xticks(range(len(names)), labels, rotation=40, ha="right", rotation_mode="anchor", fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    if fig is not None:
        fig.tight_layout()
    return ax.figure
