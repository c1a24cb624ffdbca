"""Extra pictures for the lecture notebooks (00-03). Every label that names a tensor shows its shape.

    numbered_patches(nh, nw, p)    a test image: nh x nw coloured patches, each with its index drawn in
    show_images(images, titles)    one panel per image, shape under each title, optional patch grid
    plot_token_list(tokens, hooks) a layer list as a row of boxes, hooked layers highlighted
    plot_dust3r_overview(...)      two views -> token lists -> point maps + confidence, in one figure

Plotting only: nothing here is part of the DPT head.
"""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import FancyBboxPatch

from .trace import fmt_shape

# 3x5 bitmaps of the digits 0-9, one string per row ("#" = ink).
_DIGITS = {
    "0": ("###", "#.#", "#.#", "#.#", "###"), "1": (".#.", "##.", ".#.", ".#.", "###"),
    "2": ("###", "..#", "###", "#..", "###"), "3": ("###", "..#", "###", "..#", "###"),
    "4": ("#.#", "#.#", "###", "..#", "..#"), "5": ("###", "#..", "###", "..#", "###"),
    "6": ("###", "#..", "###", "#.#", "###"), "7": ("###", "..#", ".#.", ".#.", ".#."),
    "8": ("###", "#.#", "###", "#.#", "###"), "9": ("###", "#.#", "###", "..#", "###"),
}


def _shape(x) -> str:
    return fmt_shape(x.shape)


def numbered_patches(nh: int, nw: int, patch_size: int = 16) -> torch.Tensor:
    """An image ``(3, nh*p, nw*p)`` in [0, 1]: patch ``k`` (row-major) has its own colour and shows ``k``.

    The digits are pixels, so they travel with their patch through any rearrangement.
    Needs ``patch_size >= 16`` to fit up to three digits.
    """
    if patch_size < 16:
        raise ValueError(f"numbered_patches needs patch_size >= 16 to draw the digits, got {patch_size}")
    if nh * nw > 999:
        raise ValueError(f"numbered_patches draws at most 999 patches, got {nh}x{nw} = {nh * nw}")
    p = patch_size
    img = np.zeros((nh * p, nw * p, 3), dtype=np.float32)
    cmap = plt.get_cmap("tab20")
    for k in range(nh * nw):
        r, c = divmod(k, nw)
        tile = img[r * p:(r + 1) * p, c * p:(c + 1) * p]
        tile[:] = np.asarray(cmap(k % 20)[:3]) * 0.55 + 0.45          # light background colour
        tile[0, :] = tile[:, 0] = 1.0                                   # white patch border
        text = str(k)
        x0 = (p - 4 * len(text) + 1) // 2                               # 3 px per digit + 1 px gap
        y0 = (p - 5) // 2
        for i, ch in enumerate(text):
            for y, row in enumerate(_DIGITS[ch]):
                for x, px in enumerate(row):
                    if px == "#":
                        tile[y0 + y, x0 + 4 * i + x] = 0.0
    return torch.from_numpy(img).permute(2, 0, 1).contiguous()          # (3, H, W)


def _to_display(img: torch.Tensor) -> np.ndarray:
    x = img.detach().float().cpu()
    if x.ndim == 4:
        x = x[0]
    if x.ndim == 3 and x.shape[0] in (1, 3):
        x = x.permute(1, 2, 0)
    x = x.numpy()
    if x.ndim == 3 and x.shape[-1] == 1:
        x = x[..., 0]
    return x


def show_images(images: Sequence[torch.Tensor], titles: Sequence[str], patch_size: int | None = None,
                suptitle: str | None = None, scale: float = 3.2):
    """One panel per image (``(3, H, W)``, ``(1, 3, H, W)`` or ``(H, W)``); each title ends with its shape.

    ``patch_size`` draws the patch grid on top. Returns the Figure.
    """
    if len(images) != len(titles):
        raise ValueError(f"got {len(images)} images but {len(titles)} titles")
    first = _to_display(images[0])
    aspect = first.shape[0] / first.shape[1]
    fig, axes = plt.subplots(1, len(images), figsize=(scale * len(images), scale * aspect + 0.7))
    axes = np.atleast_1d(axes)
    for ax, img, title in zip(axes, images, titles):
        x = _to_display(img)
        ax.imshow(np.clip(x, 0, 1) if x.ndim == 3 else x, cmap=None if x.ndim == 3 else "viridis",
                  interpolation="nearest")
        ax.set_title(f"{title}\n{_shape(img)}", fontsize=9)
        ax.set_xticks([]), ax.set_yticks([])
        if patch_size:
            H, W = x.shape[:2]
            for y in range(0, H + 1, patch_size):
                ax.axhline(y - 0.5, color="k", lw=0.4)
            for xx in range(0, W + 1, patch_size):
                ax.axvline(xx - 0.5, color="k", lw=0.4)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.94) if suptitle else None)
    return fig


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
        ax.text(i + 0.5, 0.26, _shape(t).replace(", ", ",\n", 1), ha="center", va="center", fontsize=7.5,
                family="monospace")
    ax.set_xlim(0, n)
    ax.set_ylim(0, 1.0)
    ax.axis("off")
    hooked = ", ".join(str(h) for h in hooks)
    ax.set_title(title or f"{n} layer outputs; the head reads the highlighted ones: [{hooked}]", fontsize=10)
    fig.tight_layout()
    return fig


def _pointmap_rgb(pts: torch.Tensor, mask: torch.Tensor | None = None) -> np.ndarray:
    """(H, W, 3) points -> colours: each axis min-max normalised over the valid pixels."""
    x = pts.detach().float().cpu()
    m = torch.ones(x.shape[:2], dtype=torch.bool) if mask is None else mask.cpu().bool()
    lo = x[m].min(dim=0).values
    hi = x[m].max(dim=0).values
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
        ax.imshow(((img.detach().cpu().permute(1, 2, 0) + 1) / 2).clamp(0, 1).numpy())
        ax.set_title(f"view {name}: image {_shape(img)}", fontsize=8.5)
        ax.axis("off")
        ax = fig.add_subplot(gs[row, 2])
        ax.imshow(_pointmap_rgb(pts, mask))
        frame = "camera 1" if name == "1" else "camera 1 (!)"
        ax.set_title(f"pts3d{name}: xyz as rgb, in {frame}\ntarget {_shape(pts)}, head gives "
                     f"{_shape(out['pts3d'])}", fontsize=8)
        ax.axis("off")
        ax = fig.add_subplot(gs[row, 3])
        conf = out["conf"][0].detach().float().cpu().numpy()
        im = ax.imshow(conf, cmap="magma")
        fig.colorbar(im, ax=ax, fraction=0.035)
        ax.set_title(f"conf{name} (untrained head, > 1)\n{_shape(out['conf'])}", fontsize=8)
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
        f"per view: tokens[0] {_shape(tokens1[0])}", "#fde2c7")
    box(0.55, 0.2, f"two decoders, {L} blocks each,\ncross-attending to the other view\n"
        f"per view: tokens[1..{L}] {_shape(tokens1[1])} each", "#d6ecd2")
    box(0.25, 0.16, f"two DPT heads (same layout, own weights)\nread {L + 1} tensors per view\n"
        f"-> pts3d {_shape(out1['pts3d'])}, conf {_shape(out1['conf'])}", "#cfe3f7")
    for y0, y1 in ((0.79, 0.65), (0.45, 0.33)):
        ax.annotate("", xy=(0.5, y1), xytext=(0.5, y0), arrowprops=dict(arrowstyle="-|>", color="0.3"))
    ax.text(0.5, 0.06, "B = batch, N = (H/p)(W/p) tokens, C = channels", ha="center", fontsize=7, color="0.3")
    fig.suptitle("DUSt3R in one picture: two images in, one point map + confidence per view out "
                 "(both point maps in camera 1's frame)", fontsize=10)
    fig.tight_layout()
    return fig
