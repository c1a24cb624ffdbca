"""One bar per head stage (MACs, activation memory, time, ...), each stage's output shape under its name."""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt

from .shapes import fmt_shape


def plot_stage_bars(values: Mapping[str, float], ylabel: str, title: str,
                    shapes: Mapping[str, Sequence[int]] | None = None, ax=None):
    """A bar per stage, in the order given; ``shapes`` (stage -> output shape) go under the stage names."""
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(12, 4.4))
    names = list(values)
    labels = [n if shapes is None or n not in shapes else f"{n}\n{fmt_shape(shapes[n])}" for n in names]
    ax.bar(range(len(names)), [values[n] for n in names], color="#6a3d9a")
    ax.set_xticks(range(len(names)), labels, rotation=40, ha="right", rotation_mode="anchor", fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    if fig is not None:
        fig.tight_layout()
    return ax.figure
