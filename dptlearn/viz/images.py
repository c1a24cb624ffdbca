"""Images and feature maps, each panel titled with its tensor's shape.

    numbered_patches(nh, nw, p)      a test image: nh x nw coloured patches, each showing its index
    show_images(images, titles)      one panel per image, optional patch grid on top
    show_feature_maps(maps, names)   one channel of each feature map (B, C, h, w)
"""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from .shapes import fmt_shape

# 3x5 bitmaps of the digits 0-9, one string per row ("#" = ink).
_DIGITS = {
    "0": ("###", "#.#", "#.#", "#.#", "###"), "1": (".#.", "##.", ".#.", ".#.", "###"),
    "2": ("###", "..#", "###", "#..", "###"), "3": ("###", "..#", "###", "..#", "###"),
    "4": ("#.#", "#.#", "###", "..#", "..#"), "5": ("###", "#..", "###", "..#", "###"),
    "6": ("###", "#..", "###", "#.#", "###"), "7": ("###", "..#", ".#.", ".#.", ".#."),
    "8": ("###", "#.#", "###", "#.#", "###"), "9": ("###", "#.#", "###", "..#", "###"),
}


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
    return torch.from_numpy(img).permute(2, 0, 1).contiguous()          # (H, W, 3) -> (3, H, W)


def signed_rgb(img: torch.Tensor) -> np.ndarray:
    """An image (3, H, W) in [-1, 1] (the course's input range) as (H, W, 3) in [0, 1] for imshow."""
    return ((img.detach().float().cpu().permute(1, 2, 0) + 1) / 2).clamp(0, 1).numpy()  # (3, H, W) -> (H, W, 3)


def _to_display(img: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W), (3, H, W) or (1, H, W) -> (H, W, 3) or (H, W) numpy."""
    x = img.detach().float().cpu()
    if x.ndim == 4:
        x = x[0]
    if x.ndim == 3 and x.shape[0] in (1, 3):
        x = x.permute(1, 2, 0)                                          # (C, H, W) -> (H, W, C)
    x = x.numpy()
    if x.ndim == 3 and x.shape[-1] == 1:
        x = x[..., 0]                                                   # (H, W, 1) -> (H, W)
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
        ax.set_title(f"{title}\n{fmt_shape(img.shape)}", fontsize=9)
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


def show_feature_maps(maps: Sequence[torch.Tensor], names: Sequence[str] | None = None, channel: int = 0,
                      title: str | None = None):
    """One panel per feature map (B, C, h, w): channel ``channel`` of the first item, shape in the title."""
    fig, axes = plt.subplots(1, len(maps), figsize=(3.2 * len(maps), 3))
    axes = np.atleast_1d(axes)
    for i, (ax, m) in enumerate(zip(axes, maps)):
        ax.imshow(m[0, channel].detach().float().cpu().numpy(), cmap="viridis")     # (h, w)
        label = names[i] if names else f"map {i}"
        ax.set_title(f"{label}\n{fmt_shape(m.shape)}", fontsize=8)
        ax.set_xticks([]), ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.92) if title else None)
    return fig
