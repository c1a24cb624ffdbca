"""A tiny two-view ViT (CroCo/DUSt3R layout) that produces the token list DUSt3R's DPT head reads.

    img1, img2 --(shared patch embed + ViT encoder)--> enc1, enc2          (B, N, enc_dim)
    enc --(decoder_embed: Linear enc_dim -> dec_dim)--> two decoder streams
    stream 1 block i: self-attention, cross-attention to stream 2's previous output, MLP
    stream 2 block i: the same with its own weights, cross-attending to stream 1

The head for view v gets [enc_v, blk_1, ..., blk_L] (L = dec_depth): index 0 is the layer-normed
encoder output, 1..L the decoder block outputs, only the last one layer-normed — exactly the
list DUSt3R hands to `downstream_head1/2`. Positions are fixed 2D sine-cosine embeddings, so any
image whose H and W are multiples of the patch size works without retraining a table.
"""
from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass, fields, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..device import get_device
from ..dust3r import dust3r_dpt_head


def sincos_pos_embed(nh: int, nw: int, dim: int) -> torch.Tensor:
    """Fixed 2D sine-cosine position embedding, half the channels for rows, half for columns."""
    if dim % 4 != 0:
        raise ValueError(f"expected an embedding dim divisible by 4, got {dim}")
    freqs = 1.0 / (100.0 ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4)))  # (C/4,)
    rows = torch.arange(nh, dtype=torch.float32)[:, None] * freqs  # (nh, C/4)
    cols = torch.arange(nw, dtype=torch.float32)[:, None] * freqs  # (nw, C/4)
    er = torch.cat([rows.sin(), rows.cos()], dim=1)  # (nh, C/2)
    ec = torch.cat([cols.sin(), cols.cos()], dim=1)  # (nw, C/2)
    pe = torch.cat([er[:, None, :].expand(nh, nw, -1), ec[None, :, :].expand(nh, nw, -1)], dim=-1)  # (nh, nw, C)
    return pe.reshape(nh * nw, dim)  # (N, C), row-major like the head's token grid


class PatchEmbed(nn.Module):
    """Non-overlapping p x p patches -> tokens (row-major)."""

    def __init__(self, patch_size: int, dim: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if img.dim() != 4 or img.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, H, W), got {tuple(img.shape)}")
        H, W = img.shape[-2:]
        if H % self.patch_size or W % self.patch_size:
            raise ValueError(f"expected H, W multiples of patch_size {self.patch_size}, got {(H, W)}")
        x = self.proj(img)  # (B, C, H/p, W/p)
        nh, nw = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)  # (B, N, C)
        return x + sincos_pos_embed(nh, nw, x.shape[-1]).to(x)  # (B, N, C)


class Attention(nn.Module):
    """Multi-head attention; self-attention when `context` is None, else cross-attention to it."""

    def __init__(self, dim: int, n_heads: int):
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"expected dim divisible by n_heads, got dim={dim}, n_heads={n_heads}")
        self.n_heads = n_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        B, N, C = x.shape
        ctx = x if context is None else context  # (B, M, C)
        q = self.q(x).view(B, N, self.n_heads, C // self.n_heads).transpose(1, 2)  # (B, h, N, C/h)
        k, v = self.kv(ctx).view(B, ctx.shape[1], 2, self.n_heads, C // self.n_heads).permute(2, 0, 3, 1, 4)  # (B, h, M, C/h) each
        y = F.scaled_dot_product_attention(q, k, v)  # (B, h, N, C/h)
        y = y.transpose(1, 2).reshape(B, N, C)  # (B, N, C)
        return self.proj(y)


class MLP(nn.Module):
    def __init__(self, dim: int, ratio: int):
        super().__init__()
        self.fc = nn.Linear(dim, ratio * dim)
        self.out = nn.Linear(ratio * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.gelu(self.fc(x)))  # (B, N, C) -> (B, N, ratio*C) -> (B, N, C)


class EncoderBlock(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), x + mlp(ln(x))."""

    def __init__(self, dim: int, n_heads: int, mlp_ratio: int):
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(dim), Attention(dim, n_heads)
        self.ln2, self.mlp = nn.LayerNorm(dim), MLP(dim, mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class DecoderBlock(nn.Module):
    """Self-attention, cross-attention to the other view (skipped if `other` is None), MLP."""

    def __init__(self, dim: int, n_heads: int, mlp_ratio: int):
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(dim), Attention(dim, n_heads)
        self.ln2, self.ln_other, self.cross = nn.LayerNorm(dim), nn.LayerNorm(dim), Attention(dim, n_heads)
        self.ln3, self.mlp = nn.LayerNorm(dim), MLP(dim, mlp_ratio)

    def forward(self, x: torch.Tensor, other: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        if other is not None:
            x = x + self.cross(self.ln2(x), self.ln_other(other))
        return x + self.mlp(self.ln3(x))


class TinyTwoViewBackbone(nn.Module):
    """Siamese ViT encoder + two cross-attending decoder streams; returns the heads' token lists."""

    def __init__(self, patch_size: int = 8, enc_embed_dim: int = 64, enc_depth: int = 4, enc_num_heads: int = 4,
                 dec_embed_dim: int = 64, dec_depth: int = 10, dec_num_heads: int = 4, mlp_ratio: int = 2):
        super().__init__()
        self.patch_size, self.enc_embed_dim, self.dec_embed_dim, self.dec_depth = patch_size, enc_embed_dim, dec_embed_dim, dec_depth
        self.patch_embed = PatchEmbed(patch_size, enc_embed_dim)
        self.enc_blocks = nn.ModuleList([EncoderBlock(enc_embed_dim, enc_num_heads, mlp_ratio) for _ in range(enc_depth)])
        self.enc_norm = nn.LayerNorm(enc_embed_dim)
        self.decoder_embed = nn.Linear(enc_embed_dim, dec_embed_dim)
        self.dec_blocks = nn.ModuleList([DecoderBlock(dec_embed_dim, dec_num_heads, mlp_ratio) for _ in range(dec_depth)])
        self.dec_blocks2 = nn.ModuleList([DecoderBlock(dec_embed_dim, dec_num_heads, mlp_ratio) for _ in range(dec_depth)])
        self.dec_norm = nn.LayerNorm(dec_embed_dim)
        self.apply(_init_weights)

    def encode(self, img: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(img)  # (B, N, enc_dim)
        for blk in self.enc_blocks:
            x = blk(x)  # (B, N, enc_dim)
        return self.enc_norm(x)  # (B, N, enc_dim)

    def forward(self, img1: torch.Tensor, img2: torch.Tensor | None = None):
        """Two views -> (tokens1, tokens2); one view (img2=None) -> tokens1, decoded without cross-attention.

        Each token list has dec_depth + 1 entries: [(B, N, enc_dim)] + dec_depth x [(B, N, dec_dim)].
        """
        if img2 is not None and img1.shape != img2.shape:
            raise ValueError(f"expected both views with the same shape, got {tuple(img1.shape)} and {tuple(img2.shape)}")
        if img2 is None:
            e1 = self.encode(img1)  # (B, N, enc_dim)
            f1, out1 = self.decoder_embed(e1), [e1]  # (B, N, dec_dim)
            for blk in self.dec_blocks:
                f1 = blk(f1)  # (B, N, dec_dim)
                out1.append(f1)
            out1[-1] = self.dec_norm(out1[-1])
            return out1
        B = img1.shape[0]
        e1, e2 = self.encode(torch.cat([img1, img2])).split(B)  # (B, N, enc_dim) each, one shared encoder pass
        f1, f2 = self.decoder_embed(e1), self.decoder_embed(e2)  # (B, N, dec_dim)
        out1, out2 = [e1], [e2]
        for blk1, blk2 in zip(self.dec_blocks, self.dec_blocks2):
            f1, f2 = blk1(f1, f2), blk2(f2, f1)  # (B, N, dec_dim) each, both read the previous pair
            out1.append(f1)
            out2.append(f2)
        out1[-1], out2[-1] = self.dec_norm(out1[-1]), self.dec_norm(out2[-1])
        return out1, out2


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


@dataclass(frozen=True)
class TinyDUSt3RConfig:
    """Every setting of a `TinyDUSt3R`, written once: the model, its checkpoints and train-bench read it.

    Backbone widths and depths, the DPT heads' widths (`feature_dim`, `last_dim`, `layer_dims`, fine to
    coarse), and `two_heads` (False: view 1 only). A checkpoint stores it as a plain dict (`asdict`).
    """
    patch_size: int = 8
    enc_embed_dim: int = 64
    enc_depth: int = 4
    enc_num_heads: int = 4
    dec_embed_dim: int = 64
    dec_depth: int = 10
    dec_num_heads: int = 4
    mlp_ratio: int = 2
    feature_dim: int = 32
    last_dim: int = 16
    layer_dims: tuple[int, ...] = (16, 32, 64, 128)
    two_heads: bool = True

    def __post_init__(self):
        object.__setattr__(self, "layer_dims", tuple(self.layer_dims))
        if self.dec_depth < 10:
            raise ValueError(f"expected dec_depth >= 10 (DUSt3R's head asserts dec_depth > 9), got {self.dec_depth}")

    def args_for(self, build) -> dict:
        """The settings that `build` (a constructor or factory) takes, matched by parameter name."""
        wanted = inspect.signature(build).parameters
        return {k: v for k, v in asdict(self).items() if k in wanted}


class TinyDUSt3R(nn.Module):
    """Backbone + two independent DUSt3R DPT heads: (img1, img2) -> (res1, res2).

    res1 = {'pts3d': (B, H, W, 3) in camera 1's frame, 'conf': (B, H, W)}; res2 the same for view 2,
    its points also in camera 1's frame (DUSt3R calls it pts3d_in_other_view).
    `two_heads=False` trains a single-view model (view 1 only, res2 is None).

    Settings come from `config` (default `TinyDUSt3RConfig()`), with keyword overrides on top:
    `TinyDUSt3R(patch_size=16, two_heads=False)`.
    """

    def __init__(self, config: TinyDUSt3RConfig | None = None, *, device=None, **overrides):
        super().__init__()
        unknown = sorted(set(overrides) - {f.name for f in fields(TinyDUSt3RConfig)})
        if unknown:
            raise TypeError(f"expected TinyDUSt3RConfig fields {[f.name for f in fields(TinyDUSt3RConfig)]}, "
                            f"got unknown {unknown}")
        self.config = replace(config or TinyDUSt3RConfig(), **overrides)
        self.backbone = TinyTwoViewBackbone(**self.config.args_for(TinyTwoViewBackbone))
        head_args = self.config.args_for(dust3r_dpt_head)
        self.head1 = dust3r_dpt_head(**head_args)
        self.head2 = dust3r_dpt_head(**head_args) if self.config.two_heads else None
        self.to(get_device(device))

    def forward(self, img1: torch.Tensor, img2: torch.Tensor | None = None):
        H, W = img1.shape[-2:]
        if self.head2 is None:
            return self.head1(self.backbone(img1), (H, W)), None  # ({'pts3d': (B, H, W, 3), 'conf': (B, H, W)}, None)
        if img2 is None:
            raise ValueError("expected two views for a two-head model, got img2=None")
        tok1, tok2 = self.backbone(img1, img2)  # lists of dec_depth + 1 tensors (B, N, C)
        return self.head1(tok1, (H, W)), self.head2(tok2, (H, W))  # dicts: pts3d (B, H, W, 3), conf (B, H, W)
