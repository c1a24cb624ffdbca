"""Depth Anything V2 (Yang et al., 2024) built from dptlearn's stages.

What differs from DUSt3R's head (docs/API.md has the whole table):

- **Tokens.** A DINOv2 ViT with 14-pixel patches and a CLS token: ``(B, 1 + N, C)`` per layer,
  layer-normed by the backbone. ViT-S/B tap blocks ``[2, 5, 8, 11]``, ViT-L ``[4, 11, 17, 23]``.
- **Readout ``ignore``.** The CLS token is dropped.
- **Widths** per backbone size (``DA2_PRESETS``): fusion width 64 / 128 / 256.
- **Odd grids** (518 px -> 37 patches): the coarsest fusion block upsamples straight to the next
  level's size (``odd_grid='upsample_to_level'``) instead of x2 and a crop.
- **Head.** Its upsampling goes from the fused map at 8 * (H/14) to the patch grid x 14 = (H, W):
  x1.75 with ``align_corners=True``. Then -> 32, ReLU, -> 1 and ReLU (relative depth) or a sigmoid
  times ``max_depth`` (metric depth).
"""
from __future__ import annotations

import torch

from .depth_head import DepthHead
from .device import get_device
from .dpt import DPTHead

# size -> (token width, hooks, fusion width D, reassemble widths)
DA2_PRESETS = {
    "vits": (384, (2, 5, 8, 11), 64, (48, 96, 192, 384)),
    "vitb": (768, (2, 5, 8, 11), 128, (96, 192, 384, 768)),
    "vitl": (1024, (4, 11, 17, 23), 256, (256, 512, 1024, 1024)),
}
DEPTH_TYPES = {"relative": "relu", "metric": "sigmoid"}


def depth_anything_v2_head(size: str = "vits", depth_type: str = "relative", max_depth: float = 1.0,
                           hidden_size: int | None = None, hooks=None, num_layers: int | None = None,
                           feature_dim: int | None = None, layer_dims=None, last_dim: int = 32,
                           patch_size: int = 14, device: str | torch.device | None = None) -> DepthHead:
    """Depth Anything V2's head: ``head(tokens, (H, W)) -> depth (B, H, W)``, H and W multiples of 14.

    ``size`` picks the preset widths and hooks; each can be overridden (course-sized heads, or
    the four tensors transformers' neck receives: ``hooks=(0, 1, 2, 3)``). ``num_layers``
    defaults to the backbone depth the hooks imply (12 or 24 blocks).
    """
    if size not in DA2_PRESETS:
        raise ValueError(f"size must be one of {sorted(DA2_PRESETS)}, got {size!r}")
    if depth_type not in DEPTH_TYPES:
        raise ValueError(f"depth_type must be one of {sorted(DEPTH_TYPES)}, got {depth_type!r}")
    width, preset_hooks, dim, dims = DA2_PRESETS[size]
    hidden_size, hooks = hidden_size or width, tuple(hooks or preset_hooks)
    if num_layers is None and hooks == preset_hooks:
        num_layers = preset_hooks[-1] + 1
    dpt = DPTHead(dim_tokens=(hidden_size,) * 4, hooks=hooks, patch_size=patch_size,
                  layer_dims=layer_dims or dims, feature_dim=feature_dim or dim, last_dim=last_dim, num_channels=1,
                  num_layers=num_layers, readout="ignore", n_prefix=1, odd_grid="upsample_to_level",
                  head_activation=DEPTH_TYPES[depth_type])
    what = f"{num_layers} DINOv2 block outputs (B, 1 + N, {hidden_size})" if num_layers else "DINOv2 block outputs"
    head = DepthHead(dpt, max_depth=max_depth, layers=what)
    return head.to(get_device(device)).eval()
