"""A ViT's list of layer outputs as a row of boxes (index, name, shape), the hooked layers highlighted."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.patches import FancyBboxPatch

from .shapes import fmt_shape


def plot_token_list(tokens: Sequence[torch.Tensor], hooks: Sequence[int], names: Sequence[str] | None = None,
                    title: str | None = None):
    """Draw a list of layer outputs as boxes (index, name, shape); the hooked ones are highlighted."""
    n = len(tokens)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.95 * n), 2.4))
    for i, t in enumerate(tokens):
        hooked = i in hooks
        ax.add_patch(FancyBboxPatch((i + 0.06, 0.1), 0.88, 0.8, boxstyle="round,pad=0.02",
                                    facecolor="#f6b26b" if hooked else "#eeeeee",
                                    edgecolor="#b45f06" if hooked else "0.6", lw=1.4 if hooked else 0.8))
        label = names[i] if names else f"layer {i}"
        ax.text(i + 0.5, 0.72, f"[{i}]", ha="center", va="center", fontsize=9, weight="bold")
        ax.text(i + 0.5, 0.5, label, ha="center", va="center", fontsize=7.5)
        ax.text(i + 0.5, 0.26, fmt_shape(t.shape).replace(", ", ",\n", 1), ha="center", va="center", fontsize=7.5,
                family="monospace")
    ax.set_xlim(0, n)
    ax.set_ylim(0, 1.0)
    ax.axis("off")
    hooked = ", ".join(str(h) for h in hooks)
    ax.set_title(title or f"{n} layer outputs; the head reads the highlighted ones: [{hooked}]", fontsize=10)
    fig.tight_layout()
    return fig
