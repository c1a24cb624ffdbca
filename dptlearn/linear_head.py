"""DUSt3R's linear head: one linear layer per token, its outputs laid out as the token's patch of pixels.

DUSt3R ships it beside the DPT head (its 224 and 512 *linear* checkpoints). It reads only the last
token layer and never mixes neighbouring tokens, so each token paints its own p x p patch alone:

    tokens[-1]  (B, N, C)              N = nh * nw, row-major like the DPT head's grid
    proj        (B, N, K*p*p)          one Linear(C, K*p*p), K = 3 (+1 with confidence)
    to pixels   (B, K, nh*p, nw*p)     feature k*p*p + i*p + j -> channel k, pixel (h*p + i, w*p + j)
                                       (the order of torch's pixel_shuffle(p) on (B, K*p*p, nh, nw))
    postprocess {'pts3d': (B, H, W, 3), 'conf': (B, H, W)}   DUSt3R's depth / confidence modes

At DUSt3R's size, Linear(768, 4 * 16 * 16) = Linear(768, 1024): 787,456 parameters (keys
``proj.weight`` (1024, 768) and ``proj.bias`` (1024,)), against 19,021,508 for the DPT head that runs
(20,201,668 in DUSt3R's checkpoint, which also stores a fusion unit that never runs).

``layers`` (not DUSt3R's; DINOv2's "lin. 4" probe) reads several token layers, concatenated along the
width, instead of the last one: ``LinearHead(sum of their widths, ..., layers=(0, 5, 7, 10))``; still one
Linear per token, so each token still paints only its own patch.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from einops import rearrange
from torch import nn

from .device import get_device
from .grid import patch_grid, positive_int
from .postprocess import check_conf_mode, check_depth_mode, postprocess

INF = math.inf


class LinearHead(nn.Module):
    """``head(tokens, (H, W)) -> {'pts3d', 'conf'}`` from the last token layer, one Linear per token."""

    def __init__(self, dim: int, patch_size: int = 16, has_conf: bool = True,
                 depth_mode=("exp", -INF, INF), conf_mode=("exp", 1, INF), layers: Sequence[int] | None = None):
        super().__init__()
        positive_int("dim", dim)
        self.layers = tuple(layers) if layers is not None else None
        if self.layers is not None and (not self.layers or not all(isinstance(i, int) for i in self.layers)):
            raise ValueError(f"expected layers as a non-empty sequence of token-list indices, got {layers!r}")
        self.patch_size = positive_int("patch_size", patch_size)
        self.depth_mode = check_depth_mode(depth_mode)
        self.conf_mode = check_conf_mode(conf_mode) if has_conf else None
        self.num_channels = 3 + bool(has_conf)
        self.proj = nn.Linear(dim, self.num_channels * patch_size ** 2)

    def raw(self, tokens: torch.Tensor | Sequence[torch.Tensor], image_size: Sequence[int]) -> torch.Tensor:
        """The raw map (B, K, H, W) before post-processing; ``tokens``: a list (its last entry is read, or the
        entries ``layers`` names, concatenated) or (B, N, C)."""
        if self.layers is not None:
            if not isinstance(tokens, (list, tuple)) or not all(-len(tokens) <= i < len(tokens) for i in self.layers):
                got = f"a list of {len(tokens)}" if isinstance(tokens, (list, tuple)) else type(tokens).__name__
                raise ValueError(f"expected a token list with entries {self.layers}, got {got}")
            x = torch.cat([tokens[i] for i in self.layers], dim=-1)      # (B, N, sum of the layers' C)
        else:
            x = tokens[-1] if isinstance(tokens, (list, tuple)) else tokens   # (B, N, C)
        nh, nw = patch_grid(image_size, self.patch_size)
        if not isinstance(x, torch.Tensor) or x.ndim != 3 or x.shape[1:] != (nh * nw, self.proj.in_features):
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"expected tokens (B, N, C) = (B, {nh * nw}, {self.proj.in_features}) for image size "
                             f"{tuple(image_size)} with {self.patch_size}-pixel patches, got {got}")
        p = self.patch_size
        x = self.proj(x)                                                   # (B, N, K*p*p)
        return rearrange(x, "b (nh nw) (k i j) -> b k (nh i) (nw j)", nh=nh, i=p, j=p)  # (B, K, nh*p, nw*p)

    def forward(self, tokens, image_size: Sequence[int]) -> dict[str, torch.Tensor]:
        return postprocess(self.raw(tokens, image_size), self.depth_mode, self.conf_mode)  # pts3d (B, H, W, 3), conf

    def extra_repr(self) -> str:
        layers = f", layers={self.layers}" if self.layers is not None else ""
        return f"patch_size={self.patch_size}, num_channels={self.num_channels}{layers}"


def dust3r_linear_head(dec_embed_dim: int = 768, patch_size: int = 16, has_conf: bool = True,
                       device: str | torch.device | None = None) -> LinearHead:
    """DUSt3R's ``LinearPts3d`` layout (defaults: the 512 linear checkpoint's), in eval mode on ``device``."""
    return LinearHead(dec_embed_dim, patch_size, has_conf).to(get_device(device)).eval()
