"""The data-flow diagram of a traced head: tokens -> grids -> pyramid -> fusion -> head.

``plot_trace(trace)`` takes any object with ``.rows`` (each with ``.name``, ``.kind``, ``.inputs``,
``.output``), ``.stage(name)`` and ``.image_size`` -- a ``viz.trace.ShapeTrace`` in practice. Every
arrow's label is a recorded shape, never typed by hand. This module does not import the tracer,
so the tracer can import it.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.patches import FancyBboxPatch

from .shapes import fmt_shape


def _fmt(shape) -> str:
    """A shape, or a dict of named shapes (one per line)."""
    if isinstance(shape, dict):
        return "\n".join(f"{k} {fmt_shape(v)}" for k, v in shape.items())
    return fmt_shape(shape)


def _box(ax, x, y, text, color, w=2.5, h=0.55):
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.04",
                                facecolor=color, edgecolor="0.3", linewidth=0.8))
    ax.text(x, y, text, ha="center", va="center", fontsize=7.5)


def _arrow(ax, x0, y0, x1, y1, label):
    ax.annotate("", xy=(x1, y1), xytext=(x0, y0),
                arrowprops=dict(arrowstyle="-|>", color="0.35", lw=0.9, shrinkA=12, shrinkB=12))
    ax.text((x0 + x1) / 2 + 0.1, (y0 + y1) / 2, label, fontsize=6.5, color="#1f4e9c", family="monospace",
            ha="left", va="center")


def plot_trace(trace, title: str | None = None):
    """Draw the DPT data flow of a traced head, one column per pyramid level; returns the Figure."""
    hooks = [r for r in trace.rows if r.name.startswith("tokens[")]
    fig, ax = plt.subplots(figsize=(11, 7.2))
    xs = [1.5 + 3.2 * i for i in range(4)]
    ys = {"tokens": 6.6, "grid": 5.3, "branch": 4.0, "project": 2.7, "fusion": 1.3}
    colors = {"tokens": "#fde2c7", "grid": "#fff3b0", "branch": "#d6ecd2", "project": "#cfe3f7",
              "fusion": "#e6d9f2", "head": "#f7d4d4"}
    for i, x in enumerate(xs):
        tok = hooks[i] if i < len(hooks) else None
        grid = trace.stage(f"to_grid.{i}")
        branch, project = trace.stage(f"reassemble.branches.{i}"), trace.stage(f"reassemble.project.{i}")
        _box(ax, x, ys["tokens"], f"{tok.name if tok else 'tokens'}\n(B, N, C)", colors["tokens"])
        _box(ax, x, ys["grid"], "rearrange\nb (nh nw) c -> b c nh nw", colors["grid"])
        _box(ax, x, ys["branch"], f"{branch.name}\n{branch.kind}", colors["branch"])
        _box(ax, x, ys["project"], f"{project.name}\n3x3 conv -> D", colors["project"])
        _box(ax, x, ys["fusion"], f"fusion.{i}\n{'+ skip, ' if i < 3 else ''}RCU, x2 up", colors["fusion"])
        _arrow(ax, x, ys["tokens"], x, ys["grid"], _fmt(grid.inputs[0]))
        _arrow(ax, x, ys["grid"], x, ys["branch"], _fmt(grid.output))
        _arrow(ax, x, ys["branch"], x, ys["project"], _fmt(branch.output))
        _arrow(ax, x, ys["project"], x, ys["fusion"], _fmt(project.output))
    crop = trace.stage("crop")
    for i in (3, 2, 1):                                    # the path runs coarse -> fine, right to left
        out = trace.stage(f"fusion.{i}").output
        label = _fmt(out) if i != 3 else f"{_fmt(out)}\ncrop -> {_fmt(crop.output)}"
        ax.annotate("", xy=(xs[i - 1] + 1.3, ys["fusion"]), xytext=(xs[i] - 1.3, ys["fusion"]),
                    arrowprops=dict(arrowstyle="-|>", color="#6a3d9a", lw=1.2))
        ax.text((xs[i] + xs[i - 1]) / 2, ys["fusion"] - 0.45, label, fontsize=6.5, ha="center", va="top",
                color="#6a3d9a", family="monospace")
    head = trace.stage("head")
    hx, hy = xs[0], -0.4
    _box(ax, hx, hy, "head\n3x3, x2 up, 3x3, ReLU, 1x1", colors["head"])
    _arrow(ax, xs[0], ys["fusion"], hx, hy, _fmt(trace.stage("fusion.0").output))
    post = next((r for r in trace.rows if r.name == "postprocess"), None)
    ax.annotate("", xy=(hx + 3.2, hy), xytext=(hx + 1.3, hy), arrowprops=dict(arrowstyle="-|>", color="0.35", lw=0.9))
    ax.text(hx + 1.4, hy + 0.35, _fmt(head.output), fontsize=6.5, color="#1f4e9c", family="monospace")
    if post is not None:
        _box(ax, hx + 4.6, hy, "postprocess\n" + _fmt(post.output), "#eeeeee", w=2.8, h=0.7)
    H, W = trace.image_size
    ax.set_title(title or f"DPT head data flow, image (H, W) = ({H}, {W}); arrows carry tensor shapes", fontsize=10)
    ax.text(xs[3] + 1.3, ys["fusion"] - 1.2, "fusion runs coarse -> fine\n(right to left)", fontsize=7,
            ha="right", color="#6a3d9a")
    ax.set_xlim(-0.2, xs[3] + 1.6)
    ax.set_ylim(-1.1, 7.1)
    ax.axis("off")
    fig.tight_layout()
    return fig
