"""DUSt3R in one picture: two views -> ViT encoder/decoder -> token lists -> two DPT heads -> outputs."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import FancyBboxPatch

from .images import signed_rgb
from .shapes import fmt_shape


def _pointmap_rgb(pts: torch.Tensor, mask: torch.Tensor | None = None) -> np.ndarray:
    """(H, W, 3) points -> colours: each axis min-max normalised over the valid pixels."""
    x = pts.detach().float().cpu()
    m = torch.ones(x.shape[:2], dtype=torch.bool) if mask is None else mask.cpu().bool()
    lo = x[m].min(dim=0).values                                         # (3,)
    hi = x[m].max(dim=0).values                                         # (3,)
    rgb = ((x - lo) / (hi - lo).clamp(min=1e-8)).clamp(0, 1)
    rgb[~m] = 1.0
    return rgb.numpy()


def plot_dust3r_overview(img1: torch.Tensor, img2: torch.Tensor, tokens1: Sequence[torch.Tensor],
                         out1: dict, out2: dict, pts1: torch.Tensor, pts2_in_1: torch.Tensor,
                         mask1: torch.Tensor | None = None, mask2: torch.Tensor | None = None):
    """DUSt3R in one picture: two views -> ViT encoder/decoder -> token lists -> two DPT heads -> outputs.

    ``img*`` are ``(3, H, W)`` in [-1, 1]; ``tokens1`` is view 1's token list; ``out*`` the heads' dicts
    (``pts3d`` ``(B, H, W, 3)``, ``conf`` ``(B, H, W)``); ``pts1`` / ``pts2_in_1`` ``(H, W, 3)`` are the targets
    drawn as colours (x, y, z -> r, g, b). Every label comes from a tensor's shape.
    """
    fig = plt.figure(figsize=(12, 5.2))
    gs = fig.add_gridspec(2, 4, width_ratios=[1, 1.45, 1, 1])
    for row, (img, out, pts, mask, name) in enumerate(((img1, out1, pts1, mask1, "1"),
                                                        (img2, out2, pts2_in_1, mask2, "2"))):
        ax = fig.add_subplot(gs[row, 0])
        ax.imshow(signed_rgb(img))   # (H, W, 3)
        ax.set_title(f"view {name}: image {fmt_shape(img.shape)}", fontsize=8.5)
        ax.axis("off")
        ax = fig.add_subplot(gs[row, 2])
        ax.imshow(_pointmap_rgb(pts, mask))
        frame = "camera 1" if name == "1" else "camera 1 (!)"
        ax.set_title(f"pts3d{name}: xyz as rgb, in {frame}\ntarget {fmt_shape(pts.shape)}, head gives "
                     f"{fmt_shape(out['pts3d'].shape)}", fontsize=8)
        ax.axis("off")
        ax = fig.add_subplot(gs[row, 3])
        conf = out["conf"][0].detach().float().cpu().numpy()            # (H, W)
        im = ax.imshow(conf, cmap="magma")
        fig.colorbar(im, ax=ax, fraction=0.035)
        ax.set_title(f"conf{name} (untrained head, > 1)\n{fmt_shape(out['conf'].shape)}", fontsize=8)
        ax.axis("off")
    ax = fig.add_subplot(gs[:, 1])
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")
    L = len(tokens1) - 1

    def box(y, h, text, color):
        ax.add_patch(FancyBboxPatch((0.05, y - h / 2), 0.9, h, boxstyle="round,pad=0.01", facecolor=color,
                                    edgecolor="0.4", lw=0.8))
        ax.text(0.5, y, text, ha="center", va="center", fontsize=7.5)

    H, W = img1.shape[-2:]
    p = int(round((H * W / tokens1[0].shape[1]) ** 0.5))              # patch side, from N = (H/p)(W/p)
    box(0.86, 0.14, f"shared ViT encoder ({p}x{p} patches -> N = {tokens1[0].shape[1]} tokens)\n"
        f"per view: tokens[0] {fmt_shape(tokens1[0].shape)}", "#fde2c7")
    box(0.55, 0.2, f"two decoders, {L} blocks each,\ncross-attending to the other view\n"
        f"per view: tokens[1..{L}] {fmt_shape(tokens1[1].shape)} each", "#d6ecd2")
    box(0.25, 0.16, f"two DPT heads (same layout, own weights)\nread {L + 1} tensors per view\n"
        f"-> pts3d {fmt_shape(out1['pts3d'].shape)}, conf {fmt_shape(out1['conf'].shape)}", "#cfe3f7")
    for y0, y1 in ((0.79, 0.65), (0.45, 0.33)):
        ax.annotate("", xy=(0.5, y1), xytext=(0.5, y0), arrowprops=dict(arrowstyle="-|>", color="0.3"))
    ax.text(0.5, 0.06, "B = batch, N = (H/p)(W/p) tokens, C = channels", ha="center", fontsize=7, color="0.3")
    fig.suptitle("DUSt3R in one picture: two images in, one point map + confidence per view out "
                 "(both point maps in camera 1's frame)", fontsize=10)
    fig.tight_layout()
    return fig
