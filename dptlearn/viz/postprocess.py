"""DUSt3R's output parametrisations as curves, drawn with the package's own ``depth_activation`` and
``conf_activation`` (so the curves are the code, not a copy of it)."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import torch

from ..postprocess import conf_activation, depth_activation
from .shapes import fmt_shape


def plot_postprocess_curves(d: torch.Tensor, x: torch.Tensor):
    """Left: output length vs raw length |v| for each depth mode. Right: confidence vs raw channel."""
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 3.8))
    v = torch.stack([d, torch.zeros_like(d), torch.zeros_like(d)], dim=-1)        # (n, 3), length d
    for name in ("exp", "square", "linear"):
        out = depth_activation(v, (name, -math.inf, math.inf)).norm(dim=-1)       # (n,)
        ax0.plot(d.numpy(), out.numpy(), label=f"{name}")
    ax0.set_xlabel(f"raw length |v| = |(x, y, z)|   (v: {fmt_shape(v.shape)})")
    ax0.set_ylabel("output length |pts3d|")
    ax0.set_title("depth_activation: direction kept, length remapped", fontsize=9)
    ax0.legend(fontsize=8)
    ax0.grid(alpha=0.3)
    for mode in (("exp", 1, math.inf), ("sigmoid", 0, 1)):
        ax1.plot(x.numpy(), conf_activation(x, mode).numpy(), label=f"{mode[0]}, vmin={mode[1]}, vmax={mode[2]}")
    ax1.axhline(1.0, color="0.5", lw=0.8, ls="--")
    ax1.set_yscale("log")
    ax1.set_xlabel(f"raw confidence channel c   (c: {fmt_shape(x.shape)})")
    ax1.set_ylabel("conf (log scale)")
    ax1.set_title("conf_activation: DUSt3R uses exp, 1 + e^c > 1", fontsize=9)
    ax1.legend(fontsize=8)
    ax1.grid(alpha=0.3)
    fig.tight_layout()
    return fig
