"""Stage 2: a token sequence is an image in disguise.

Patch tokens come row by row (row index slow, column index fast), so a sequence of
``N = nh * nw`` tokens folds back into a grid with one einops pattern. A plain
``reshape(B, C, nh, nw)`` without moving the channel axis first scrambles the patches:
that is the classic bug the course draws.
"""
from __future__ import annotations

from typing import Sequence

import torch
from einops import rearrange


def is_positive_int(value) -> bool:
    """True for 1, 2, ...; False for 0, negatives, floats and ``True`` (a bool is not a size)."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def positive_int(name: str, value) -> int:
    """``value`` if it is a positive int, else a ValueError naming ``name``."""
    if not is_positive_int(value):
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def check_image_size(image_size: Sequence[int]) -> tuple[int, int]:
    """Validate an ``(H, W)`` pair of positive ints and return it as a tuple."""
    if not isinstance(image_size, (tuple, list, torch.Size)) or len(image_size) != 2:
        raise ValueError(f"image_size must be a pair (H, W), got {image_size!r}")
    if not all(is_positive_int(v) for v in image_size):
        raise ValueError(f"image_size must be two positive ints (H, W), got {tuple(image_size)!r}")
    return int(image_size[0]), int(image_size[1])


def patch_grid(image_size: Sequence[int], patch_size: int) -> tuple[int, int]:
    """``(H, W)`` -> ``(nh, nw) = (H / p, W / p)``; sizes that are not multiples of p are an error."""
    H, W = check_image_size(image_size)
    if H % patch_size or W % patch_size:
        fix = (H // patch_size * patch_size, W // patch_size * patch_size)
        raise ValueError(f"image size (H, W)={(H, W)} must be a multiple of the patch size {patch_size} "
                         f"on both sides; crop or resize to e.g. {fix}")
    return H // patch_size, W // patch_size


def tokens_to_grid(tokens: torch.Tensor, nh: int, nw: int) -> torch.Tensor:
    """``(B, N, C)`` -> ``(B, C, nh, nw)`` with ``N = nh * nw`` tokens in row-major order."""
    if tokens.ndim != 3:
        raise ValueError(f"tokens must be (B, N, C), got a {tokens.ndim}-d tensor {tuple(tokens.shape)}")
    if tokens.shape[1] != nh * nw:
        raise ValueError(f"a {nh}x{nw} patch grid needs N = {nh * nw} tokens, got tokens of shape "
                         f"{tuple(tokens.shape)} (N = {tokens.shape[1]})")
    return rearrange(tokens, "b (nh nw) c -> b c nh nw", nh=nh, nw=nw)  # (B, C, nh, nw)


def grid_to_tokens(grid: torch.Tensor) -> torch.Tensor:
    """``(B, C, nh, nw)`` -> ``(B, nh * nw, C)``, the inverse of ``tokens_to_grid``."""
    if grid.ndim != 4:
        raise ValueError(f"grid must be (B, C, nh, nw), got a {grid.ndim}-d tensor {tuple(grid.shape)}")
    return rearrange(grid, "b c nh nw -> b (nh nw) c")  # (B, N, C)
