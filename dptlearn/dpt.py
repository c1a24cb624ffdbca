"""The assembled DPT head: hooked tokens -> grids -> pyramid -> fusion -> per-pixel map.

    tokens[h]  (B, N, C_i)            for the 4 hooks h
    grid       (B, C_i, nh, nw)       nh, nw = H/p, W/p
    reassemble (B, layer_dims[i], 4nh | 2nh | nh | ceil(nh/2), ...)
    project    (B, D, ...)            3x3 conv, no bias, D = feature_dim
    fusion     coarse to fine: 1/32 -> 1/16 -> 1/8 -> 1/4 -> 1/2 of the image (p = 16)
    head       (B, num_channels, H, W)   x2 from 1/2 of the image (p = 16; other patch sizes
                                         upsample to (H, W) directly, e.g. x1.75 for p = 14)

Every stage computes this reference order in every mode (training, eval,
``torch.no_grad()``, ``torch.inference_mode()``), so forward hooks see what the lectures draw.
The inference-only speed-ups (channels-last memory, each fusion block's 1x1 conv before its
upsample, fused conv + ReLU / conv + add kernels, bfloat16) are one opt-in transform that
returns a new head: ``dptlearn.fast.optimize_for_inference(head)``.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .fusion import ODD_GRIDS, FusionBlock, fuse_pyramid, fuse_pyramid_uncropped
from .grid import check_image_size, patch_grid, positive_int, tokens_to_grid
from .head import RegressionHead
from .reassemble import Reassemble
from .tokens import Readout, select_hooked_tokens


class TokensToGrid(nn.Module):
    """``(B, N, C) -> (B, C, nh, nw)`` as a module, so the shape tracer can see it."""

    def forward(self, tokens: torch.Tensor, nh: int, nw: int) -> torch.Tensor:
        return tokens_to_grid(tokens, nh, nw)


class DPTHead(nn.Module):
    """A DPT head over four hooked token layers.

    Args:
        dim_tokens: channel width of each hooked layer, e.g. (1024, 768, 768, 768).
        hooks: indices into the token list passed to ``forward``.
        patch_size: pixels per token side; H and W must be multiples of it.
        layer_dims: widths of the four reassembled levels (fine to coarse).
        feature_dim: common width of the fusion path (D).
        last_dim: width before the final 1x1 conv.
        num_channels: output channels (3 for xyz, +1 for confidence).
        num_layers: exact length of the token list, if fixed (DUSt3R: dec_depth + 1).
        readout: None (no prefix tokens), or a readout mode with ``n_prefix`` tokens.
        odd_grid: what fusion does when a side of the patch grid is odd: ``'crop'`` (DUSt3R),
            ``'resize_skip'`` (transformers' DPT) or ``'upsample_to_level'`` (Depth Anything V2);
            see ``fusion.fuse_pyramid_uncropped``.
        head_scale: the head's upsampling factor (default ``patch_size / 8``: back to (H, W)).
        head_activation: ``None`` (DUSt3R), ``'relu'`` or ``'sigmoid'`` after the head's last conv.
    """

    def __init__(self, dim_tokens: Sequence[int], hooks: Sequence[int], patch_size: int = 16,
                 layer_dims: Sequence[int] = (96, 192, 384, 768), feature_dim: int = 256,
                 last_dim: int = 128, num_channels: int = 4, num_layers: int | None = None,
                 readout: str | None = None, n_prefix: int = 0, odd_grid: str = "crop",
                 head_scale: float | None = None, head_activation: str | None = None):
        super().__init__()
        for name, seq in (("dim_tokens", dim_tokens), ("hooks", hooks), ("layer_dims", layer_dims)):
            if len(seq) != 4:
                raise ValueError(f"{name} needs 4 entries (one per hooked layer), got {list(seq)}")
        if any(h < 0 for h in hooks) or list(hooks) != sorted(hooks):
            raise ValueError(f"hooks must be increasing non-negative layer indices, got {list(hooks)}")
        if num_layers is not None and num_layers <= max(hooks):
            raise ValueError(f"num_layers={num_layers} is too short for hooks {list(hooks)}")
        positive_int("patch_size", patch_size)
        if readout is None and n_prefix:
            raise ValueError(f"n_prefix={n_prefix} prefix tokens need a readout mode ('ignore', 'add' or 'project')")
        if odd_grid not in ODD_GRIDS:
            raise ValueError(f"odd_grid must be one of {ODD_GRIDS}, got {odd_grid!r}")
        self.dim_tokens, self.hooks = tuple(dim_tokens), tuple(hooks)
        self.patch_size, self.num_layers, self.num_channels = patch_size, num_layers, num_channels
        self.feature_dim, self.odd_grid = feature_dim, odd_grid
        self.n_prefix = n_prefix if readout is not None else 0
        self.readout = (nn.ModuleList(Readout(readout, c, n_prefix) for c in dim_tokens)
                        if readout is not None else None)
        self.to_grid = TokensToGrid()
        self.reassemble = Reassemble(dim_tokens, layer_dims, feature_dim)
        self.fusion = nn.ModuleList(FusionBlock(feature_dim, with_skip=i < 3, resize_skip=odd_grid == "resize_skip")
                                    for i in range(4))
        self.head = RegressionHead(feature_dim, last_dim, num_channels, scale=head_scale or patch_size / 8,
                                   activation=head_activation)

    def check_tokens(self, tokens: Sequence[torch.Tensor], image_size: Sequence[int]
                     ) -> tuple[int, int, list[torch.Tensor]]:
        """Validate the token list against the image size; return the patch grid and the hooked layers."""
        H, W = check_image_size(image_size)
        nh, nw = patch_grid((H, W), self.patch_size)
        if self.num_layers is not None and isinstance(tokens, (list, tuple)) and len(tokens) != self.num_layers:
            raise ValueError(f"expected a list of {self.num_layers} token tensors (encoder output + "
                             f"{self.num_layers - 1} decoder blocks), got {len(tokens)}")
        hooked = select_hooked_tokens(tokens, self.hooks)
        param = self.reassemble.project[0].weight
        N = nh * nw + self.n_prefix
        B = None
        for h, t, C in zip(self.hooks, hooked, self.dim_tokens):
            where = f"tokens[{h}]"
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{where} must be a torch.Tensor (B, N, C), got {type(t).__name__}")
            if t.ndim != 3:
                raise ValueError(f"{where} must be (B, N, C) = (B, {N}, {C}), got a {t.ndim}-d tensor {tuple(t.shape)}")
            if t.device != param.device:
                raise ValueError(f"{where} is on {t.device} but the head is on {param.device}; "
                                 f"move one of them, e.g. head.to(tokens.device)")
            if t.dtype != param.dtype:
                raise TypeError(f"{where} has dtype {t.dtype} but the head's weights are {param.dtype}; "
                                f"cast with tokens.to({param.dtype})"
                                + (" (DUSt3R runs its head in float32)" if param.dtype == torch.float32
                                   else f", or convert the head with head.to({t.dtype})"))
            B = t.shape[0] if B is None else B
            if t.shape[0] != B:
                raise ValueError(f"{where} has batch size {t.shape[0]}, the first hooked layer has {B}")
            if tuple(t.shape[1:]) == (N, C):
                continue
            if tuple(t.shape[1:]) == (C, N):
                raise ValueError(f"{where} looks like (B, C, N) = {tuple(t.shape)}; the head expects (B, N, C) = "
                                 f"({B}, {N}, {C}): use tokens.transpose(1, 2)")
            if t.shape[2] != C:
                raise ValueError(f"{where} has {t.shape[2]} channels, the head was built for {C}: "
                                 f"expected (B, N, C) = ({B}, {N}, {C}), got {tuple(t.shape)}")
            raise ValueError(f"{where} has N = {t.shape[1]} tokens but image size {(H, W)} with patch size "
                             f"{self.patch_size} gives a {nh}x{nw} grid = {nh * nw} tokens"
                             + (f" + {self.n_prefix} prefix" if self.n_prefix else "")
                             + f": expected ({B}, {N}, {C}), got {tuple(t.shape)}")
        return nh, nw, hooked

    def forward(self, tokens: Sequence[torch.Tensor], image_size: Sequence[int]) -> torch.Tensor:
        """``tokens``: list of (B, N, C) layer outputs; ``image_size``: (H, W). Returns (B, num_channels, H, W).

        Note: a (B, C, N) tensor is caught only when C != N. At DUSt3R's 512x384, N = 24*32 = 768
        equals the decoder width, so transposed decoder tokens have the right shape and go
        through silently; only the layout you build them with can prevent that.
        """
        nh, nw, layers = self.check_tokens(tokens, image_size)           # 4 x (B, N, C_i)
        if self.readout is not None:
            layers = [r(t) for r, t in zip(self.readout, layers)]       # 4 x (B, nh*nw, C_i)
        grids = [self.to_grid(t, nh, nw) for t in layers]                # 4 x (B, C_i, nh, nw)
        levels = self.reassemble(grids)          # (B, D, 4nh, 4nw), (.., 2nh, 2nw), (.., nh, nw), (.., ceil(nh/2), ..)
        if self.odd_grid == "crop":
            path = fuse_pyramid(levels, self.fusion)                     # (B, D, 8nh, 8nw)
        else:
            path = fuse_pyramid_uncropped(levels, self.fusion, self.odd_grid)  # (B, D, 8nh | 16*ceil(nh/2), ..)
        return self.head(path)                   # (B, num_channels, H, W)
