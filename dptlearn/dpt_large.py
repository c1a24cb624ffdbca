"""DPT-Large (Ranftl et al., 2021; Intel/dpt-large in transformers) built from dptlearn's stages.

What differs from DUSt3R's head (docs/API.md has the whole table):

- **Tokens.** One ViT-L/16: 24 blocks of width 1024, each ``(B, 1 + N, 1024)`` with a CLS token
  in front. The head taps blocks ``[5, 11, 17, 23]`` (0-based), one every sixth.
- **Readout ``project``.** The CLS token is concatenated to every patch token and a
  Linear(2048 -> 1024) + GELU mixes them back (``tokens.Readout``); DUSt3R has no CLS token.
- **Reassemble widths** ``(256, 512, 1024, 1024)`` instead of ``(96, 192, 384, 768)``.
- **Odd grids.** transformers resizes a finer level to the coarser path instead of cropping the
  path (``odd_grid='resize_skip'``); the original DPT avoided odd grids (inputs multiple of 32).
- **Head.** 256 -> 128, x2, -> 32, ReLU, -> 1, ReLU: one non-negative channel (relative inverse
  depth), no post-processing.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .depth_head import DepthHead
from .device import get_device
from .dpt import DPTHead

DPT_LARGE_HOOKS = (5, 11, 17, 23)          # 0-based ViT-L blocks
DPT_LARGE_LAYER_DIMS = (256, 512, 1024, 1024)


def dpt_large_head(hidden_size: int = 1024, hooks: Sequence[int] = DPT_LARGE_HOOKS, num_layers: int | None = 24,
                   patch_size: int = 16, readout: str = "project",
                   layer_dims: Sequence[int] = DPT_LARGE_LAYER_DIMS, feature_dim: int = 256, last_dim: int = 32,
                   odd_grid: str = "resize_skip", device: str | torch.device | None = None) -> DepthHead:
    """DPT-Large's head: ``head(tokens, (H, W)) -> depth (B, H, W)`` over ``num_layers`` block outputs.

    ``tokens`` is the list of the ViT's block outputs ``(B, 1 + N, hidden_size)``, CLS first.
    Smaller widths give course-sized heads; the defaults are DPT-Large's (384 x 384 images).
    The head is returned in eval mode on ``device`` (default: ``dptlearn.get_device()``).
    """
    dpt = DPTHead(dim_tokens=(hidden_size,) * 4, hooks=hooks, patch_size=patch_size, layer_dims=layer_dims,
                  feature_dim=feature_dim, last_dim=last_dim, num_channels=1, num_layers=num_layers,
                  readout=readout, n_prefix=1, odd_grid=odd_grid, head_scale=2.0, head_activation="relu")
    head = DepthHead(dpt, layers=f"{num_layers} ViT block outputs (B, 1 + N, {hidden_size})"
                     if num_layers else "ViT block outputs")
    return head.to(get_device(device)).eval()
