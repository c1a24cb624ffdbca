"""Stage 1: which transformer layers the head reads, and what to do with prefix tokens.

A ViT turns an image into a *sequence* of patch tokens, one per 16x16 patch, row by row.
A DPT head taps that sequence at four depths ("hooks"). DUSt3R hands the head the whole
list of layer outputs, ``[encoder_out, dec_block_1, ..., dec_block_L]``, and picks
``[0, 2L//4, 3L//4, L]`` from it; the original DPT on ViT-B/16 taps blocks ``[2, 5, 8, 11]``
and has a CLS ("readout") token in front of the patch tokens, which must be dropped or
folded in before the sequence can become an image grid (``Readout``).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
from torch import nn

DPT_VIT_B_HOOKS = (2, 5, 8, 11)  # the original DPT paper's hooks on a 12-block ViT-B
READOUT_MODES = ("ignore", "add", "project")


def dust3r_hook_indices(dec_depth: int) -> list[int]:
    """DUSt3R's hooks into ``[encoder_out, dec_1, ..., dec_L]``: ``[0, 2L//4, 3L//4, L]``.

    Index 0 is the encoder's final (normalised) output, not an early layer; the others are
    decoder blocks. DUSt3R requires ``L > 9``; L = 12 gives ``[0, 6, 9, 12]``.
    """
    if isinstance(dec_depth, bool) or not isinstance(dec_depth, int):
        raise TypeError(f"dec_depth must be an int, got {type(dec_depth).__name__}")
    if dec_depth <= 9:
        raise ValueError(f"DUSt3R's DPT head needs a decoder deeper than 9 blocks (it asserts "
                         f"dec_depth > 9), got dec_depth={dec_depth}; use 10 or more (DUSt3R uses 12)")
    return [0, dec_depth * 2 // 4, dec_depth * 3 // 4, dec_depth]


def select_hooked_tokens(tokens: Sequence[torch.Tensor], hooks: Sequence[int]) -> list[torch.Tensor]:
    """Pick ``tokens[h]`` for each hook ``h``, with a clear error when the list is too short."""
    if not isinstance(tokens, (list, tuple)):
        raise TypeError(f"tokens must be a list of per-layer tensors (B, N, C), got {type(tokens).__name__}; "
                        f"a single tensor is one layer, the head needs the whole list")
    need = max(hooks) + 1
    if len(tokens) < need:
        raise ValueError(f"hooks {list(hooks)} need a token list of at least {need} layers, "
                         f"got {len(tokens)}")
    return [tokens[h] for h in hooks]


class Readout(nn.Module):
    """Turn ``(B, n_prefix + N, C)`` into ``(B, N, C)``: the DPT paper's three readout options.

    - ``ignore``:  drop the prefix tokens.
    - ``add``:     add the (mean of the) prefix token(s) to every patch token.
    - ``project``: concatenate the readout token to every patch token, then Linear(2C -> C) + GELU.

    DUSt3R has no prefix tokens (``n_prefix=0``), so it needs none of this.
    """

    def __init__(self, mode: str, dim: int, n_prefix: int = 1):
        super().__init__()
        if mode not in READOUT_MODES:
            raise ValueError(f"readout mode must be one of {READOUT_MODES}, got {mode!r}")
        if n_prefix < 0 or (mode != "ignore" and n_prefix < 1):
            raise ValueError(f"readout {mode!r} needs at least one prefix token, got n_prefix={n_prefix}")
        self.mode, self.n_prefix = mode, n_prefix
        self.project = nn.Sequential(nn.Linear(2 * dim, dim), nn.GELU()) if mode == "project" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3 or x.shape[1] <= self.n_prefix:
            raise ValueError(f"Readout expects (B, n_prefix + N, C) with n_prefix={self.n_prefix} and N >= 1, "
                             f"got {tuple(x.shape)}")
        patches = x[:, self.n_prefix:]                                 # (B, N, C)
        if self.mode == "ignore":
            return patches
        readout = x[:, : self.n_prefix].mean(dim=1, keepdim=True)      # (B, 1, C)
        if self.mode == "add":
            return patches + readout
        readout = readout.expand_as(patches)                           # (B, N, C)
        return self.project(torch.cat([patches, readout], dim=-1))     # (B, N, 2C) -> (B, N, C)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, n_prefix={self.n_prefix}"


@contextmanager
def capture_block_outputs(model: nn.Module, module_names: Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Record the outputs of the named submodules during forward passes inside the block.

    >>> with capture_block_outputs(vit, ["blocks.2", "blocks.5"]) as out:
    ...     vit(images)
    >>> out["blocks.2"].shape   # (B, N, C)

    The forward hooks are removed when the block ends, even after an exception.
    """
    modules = dict(model.named_modules())
    unknown = [n for n in module_names if n not in modules]
    if unknown:
        some = ", ".join(list(modules)[1:8])
        raise KeyError(f"no submodule named {unknown} in {type(model).__name__}; names look like: {some}, ...")
    captured: dict[str, torch.Tensor] = {}
    handles = []
    for name in module_names:
        def hook(_module, _inputs, output, name=name):
            captured[name] = output
        handles.append(modules[name].register_forward_hook(hook))
    try:
        yield captured
    finally:
        for h in handles:
            h.remove()
