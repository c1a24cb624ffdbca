"""Figures of a trained two-view model: what its head's stages compute, where it trusts itself, its 3D output.

    capture_stages             the maps after reassemble and after each fusion block of one DPT head
    feature_rgb                a (C, h, w) feature map as an RGB picture (its 3 principal components)
    plot_trained_vs_random     the same stages of a trained and a random head, one row each, shapes in the titles
    plot_confidence_and_error  image | log-confidence | error map | error per confidence bin
    plot_two_view_points       view 1's and view 2's point maps in camera 1's frame, predicted next to true

The functions take plain tensors (and, for `capture_stages`, a head module); they never train anything.
"""
from __future__ import annotations

from typing import Callable, Sequence

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator
import numpy as np
import torch
from torch import nn

from .images import signed_rgb
from .shapes import fmt_shape
from .trace import dpt_of


def capture_stages(head: nn.Module, run: Callable[[], object]) -> dict[str, torch.Tensor]:
    """Call `run()` (a forward pass that goes through `head`) and keep what the stages output.

    head: a DPTHead or a module with a `.dpt` DPTHead (a DUSt3R head). Returns {'reassemble.{i}': (B, D, h_i, w_i)
    for the 4 levels, finest first, 'fusion.{i}': (B, D, h, w) for each fusion block} (detached, on the CPU).
    """
    dpt = dpt_of(head, "capture_stages")
    out: dict[str, torch.Tensor] = {}

    def keep_levels(_m, _args, levels):
        out.update({f"reassemble.{i}": x.detach().cpu() for i, x in enumerate(levels)})

    def keep(name):
        return lambda _m, _args, y: out.__setitem__(name, y.detach().cpu())

    handles = [dpt.reassemble.register_forward_hook(keep_levels)]
    handles += [block.register_forward_hook(keep(f"fusion.{i}")) for i, block in enumerate(dpt.fusion)]
    try:
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
    return out


def feature_rgb(x: torch.Tensor) -> np.ndarray:
    """(C, h, w) -> (h, w, 3) in [0, 1]: the projection on the 3 principal components of the C-dim pixel vectors."""
    if x.dim() != 3:
        raise ValueError(f"expected a feature map (C, h, w), got {tuple(x.shape)}")
    C, h, w = x.shape
    v = x.detach().float().cpu().reshape(C, h * w).T  # (h*w, C)
    v = v - v.mean(0)
    _, _, basis = torch.linalg.svd(v, full_matrices=False)  # basis (min(h*w, C), C)
    k = min(3, basis.shape[0])
    p = v @ basis[:k].T  # (h*w, k)
    p = torch.cat([p, torch.zeros(h * w, 3 - k)], dim=1)  # (h*w, 3)
    lo, hi = p.quantile(0.02, dim=0), p.quantile(0.98, dim=0)
    rgb = ((p - lo) / (hi - lo).clamp(min=1e-8)).clamp(0, 1)  # (h*w, 3)
    return rgb.reshape(h, w, 3).numpy()


def plot_trained_vs_random(trained: dict[str, torch.Tensor], random: dict[str, torch.Tensor],
                           names: Sequence[str], item: int = 0, title: str | None = None):
    """Two rows (trained, random weights), one column per stage name; each panel is `feature_rgb` of batch item
    `item`, titled with the map's shape. Both dicts come from `capture_stages`."""
    missing = [n for n in names if n not in trained or n not in random]
    if missing:
        raise KeyError(f"expected stage names among {sorted(trained)}, got {missing}")
    fig, axes = plt.subplots(2, len(names), figsize=(2.6 * len(names), 4.6), squeeze=False)
    for row, (label, maps) in enumerate([("trained", trained), ("random", random)]):
        for ax, name in zip(axes[row], names):
            ax.imshow(feature_rgb(maps[name][item]), interpolation="nearest")
            ax.set_title(f"{label}: {name}\n{fmt_shape(maps[name].shape)}", fontsize=8)
            ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle(title or "Feature maps (3 principal components as RGB): trained weights vs random weights",
                 fontsize=10)
    fig.tight_layout()
    return fig


def plot_confidence_and_error(img: torch.Tensor, conf: torch.Tensor, err: torch.Tensor, mask: torch.Tensor,
                              bins: int = 5):
    """One image: RGB (3, H, W) in [-1, 1], log-confidence (H, W), error (H, W), valid mask (H, W) bool.

    The last panel sorts the valid pixels by confidence into `bins` equal groups and shows each group's mean
    error: a confidence that ranks its own errors gives a falling staircase. Returns the Figure.
    """
    if not (conf.shape == err.shape == mask.shape == img.shape[1:]):
        raise ValueError(f"expected conf, err, mask of shape {tuple(img.shape[1:])}, got {tuple(conf.shape)}, "
                         f"{tuple(err.shape)}, {tuple(mask.shape)}")
    m = mask.bool().cpu()
    order = conf.cpu()[m].argsort()  # (n,) least confident first
    groups = err.cpu()[m][order].tensor_split(bins)  # bins x (about n / bins,)
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.0), gridspec_kw={"width_ratios": [1, 1, 1, 0.8]})
    axes[0].imshow(signed_rgb(img))
    axes[0].set_title(f"image {fmt_shape(img.shape)}", fontsize=9)
    im = axes[1].imshow(conf.log().masked_fill(~m, float("nan")).cpu().numpy(), cmap="viridis")
    axes[1].set_title(f"log confidence {fmt_shape(conf.shape)}", fontsize=9)
    fig.colorbar(im, ax=axes[1], fraction=0.03).set_label("log C (0: the floor C = 1)", fontsize=8)
    vmax = err.cpu()[m].quantile(0.95).item()  # a few huge errors would otherwise flatten the colour scale
    im = axes[2].imshow(err.masked_fill(~m, float("nan")).cpu().numpy(), cmap="magma", vmin=0, vmax=vmax)
    axes[2].set_title(f"3D error {fmt_shape(err.shape)} (colours cap at 95th pct)", fontsize=9)
    fig.colorbar(im, ax=axes[2], fraction=0.03).set_label("scale-normalised units", fontsize=8)
    for ax in axes[:3]:
        ax.set_xticks([]), ax.set_yticks([])
    axes[3].bar(range(1, bins + 1), [g.mean().item() for g in groups], color="tab:purple")
    axes[3].set_xticks(range(1, bins + 1))
    axes[3].set_xlabel(f"confidence group (1 = least confident {100 // bins}%, {bins} = most)", fontsize=8)
    axes[3].set_ylabel("mean 3D error", fontsize=8)
    axes[3].set_title("error by confidence", fontsize=9)
    fig.suptitle("Where the model trusts itself vs where it is wrong (sky pixels blank: no label)", fontsize=10)
    fig.tight_layout(w_pad=2.5)
    return fig


def plot_two_view_points(pred: Sequence[torch.Tensor], true: Sequence[torch.Tensor], masks: Sequence[torch.Tensor],
                         step: int = 2, elev: float = 20, azim: float = -65):
    """View 1's and view 2's point maps (H, W, 3), both in camera 1's frame, in one 3D plot: predicted | true.

    pred, true: [view 1 points, view 2 points in camera 1]; masks: [mask1, mask2] (H, W) bool. Each side is
    divided by its mean distance to camera 1 over the valid pixels of both views (DUSt3R's normalisation: the
    prediction is only defined up to scale). Points are coloured by the image they come from; every
    `step`-th pixel is drawn. Axes: x right, z forward, -y up, at one scale (a sphere looks round).
    """
    if not (len(pred) == len(true) == len(masks) == 2):
        raise ValueError(f"expected two views each of pred, true, masks, got {len(pred)}, {len(true)}, {len(masks)}")
    for p, t, m in zip(pred, true, masks):
        if not (p.shape == t.shape and p.shape[:-1] == m.shape and p.shape[-1] == 3):
            raise ValueError(f"expected pred, true (H, W, 3) and mask (H, W), got {tuple(p.shape)}, "
                             f"{tuple(t.shape)}, {tuple(m.shape)}")

    def normalised(pts):  # both views' valid, subsampled points, divided by their shared mean norm
        qs = [x.detach().float().cpu()[::step, ::step][m.cpu()[::step, ::step]] for x, m in zip(pts, masks)]  # (n_v, 3)
        s = torch.cat(qs).norm(dim=-1).mean()
        return [(q / s).numpy() for q in qs]

    sides = [("predicted", normalised(pred)), ("true", normalised(true))]
    ref = np.concatenate(sides[1][1])  # the true extent sets both sides' axes
    lo, hi = np.quantile(ref, 0.01, axis=0), np.quantile(ref, 0.99, axis=0)
    fig = plt.figure(figsize=(12, 5))
    for k, (label, views) in enumerate(sides):
        ax = fig.add_subplot(1, 2, k + 1, projection="3d")
        for q, color, name in zip(views, ["tab:blue", "tab:orange"], ["view 1", "view 2 (in camera 1)"]):
            ax.scatter(q[:, 0], q[:, 2], -q[:, 1], s=3, c=color, depthshade=False, label=f"{name}: {len(q)} points")
        ax.set_xlim(lo[0], hi[0]), ax.set_ylim(lo[2], hi[2]), ax.set_zlim(-hi[1], -lo[1])
        ax.set_box_aspect(tuple(hi[[0, 2, 1]] - lo[[0, 2, 1]]))  # one unit is as long on every axis: true shapes
        ax.zaxis.set_major_locator(MaxNLocator(3))
        ax.set_xlabel("x"), ax.set_ylabel("z (forward)"), ax.set_zlabel("-y (up)", labelpad=2)
        ax.view_init(elev=elev, azim=azim)
        ax.set_title(f"{label} point maps {fmt_shape(pred[0].shape)} x 2, camera 1's frame", fontsize=9)
        ax.legend(loc="upper left", fontsize=8, markerscale=4)
    fig.tight_layout()
    return fig
