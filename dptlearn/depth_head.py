"""A depth head: a DPT head with one output channel, read as a depth map ``(B, H, W)``.

DPT-Large and Depth Anything V2 predict one number per pixel (relative inverse depth, or
metric depth for Depth Anything's metric models) instead of DUSt3R's point map and
confidence. Their head ends in a ReLU (or a sigmoid) inside ``RegressionHead``; what is left
here is the scale (Depth Anything's ``max_depth``) and dropping the channel axis, as
transformers' ``predicted_depth`` does.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .dpt import DPTHead


class DepthHead(nn.Module):
    """``head(tokens, (H, W)) -> depth (B, H', W')``; ``H' = H`` except where the model's fusion grows
    the map (transformers' DPT on an odd patch grid, or its x2 head on 14-pixel patches).

    ``layers``: what the token list holds, for error messages (e.g. "ViT-L block outputs").
    """

    def __init__(self, dpt: DPTHead, max_depth: float = 1.0, layers: str = "hooked layers"):
        super().__init__()
        if dpt.num_channels != 1:
            raise ValueError(f"a depth head predicts 1 channel, the DPT head was built for {dpt.num_channels}")
        self.dpt, self.max_depth, self.layers = dpt, float(max_depth), layers

    def forward(self, tokens: Sequence[torch.Tensor], image_size: Sequence[int]) -> torch.Tensor:
        n = self.dpt.num_layers
        if n is not None and isinstance(tokens, (list, tuple)) and len(tokens) != n:
            raise ValueError(f"expected a list of {n} token tensors ({self.layers}), got {len(tokens)}")
        raw = self.dpt(tokens, image_size)               # (B, 1, H', W')
        return (raw * self.max_depth).squeeze(1)         # (B, H', W')

    def extra_repr(self) -> str:
        return f"max_depth={self.max_depth:g}, layers={self.layers!r}"
