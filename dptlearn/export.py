"""ONNX export of a head: one token input per layer (dynamic batch), named outputs.

    to_onnx(dust3r_dpt_head(), "artifacts/dust3r_head.onnx", (384, 512))
    # inputs  tokens_0 .. tokens_12   (batch, N, C_i), N = (H/16) * (W/16); batch is dynamic
    # outputs pts3d (batch, H, W, 3), conf (batch, H, W)

The image size is fixed at export time (the token count N and every feature-map size follow
from it); only the batch is free. The export traces the plain head's reference order; a head from
``fast.optimize_for_inference`` is refused (its fused oneDNN kernels are CPU-only PyTorch ops with
no ONNX counterpart): export the head it was made from. ``head`` itself is left as it was.
Running the file needs onnxruntime (a test dependency); writing it needs onnx and onnxscript
(``torch.onnx.export``'s exporter).

``python -m dptlearn.export [--out PATH] [--size H W] [--checkpoint DUSt3R.pth]`` writes DUSt3R's
head (seeded random weights, or head 1 of a released checkpoint): ``make export``.
"""
from __future__ import annotations

import argparse
import copy
import logging
import warnings
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from .depth_head import DepthHead
from .dust3r import DUSt3RHead, dust3r_dpt_head
from .fast import is_optimized
from .grid import check_image_size, patch_grid
from .released import load_released_heads

MAX_BATCH = 1024


class _Exportable(nn.Module):
    """``forward(*tokens) -> tuple`` with the image size baked in: what the exporter traces."""

    def __init__(self, head: nn.Module, image_size: tuple[int, int], outputs: Sequence[str]):
        super().__init__()
        self.head, self.image_size, self.outputs = head, image_size, tuple(outputs)

    def forward(self, *tokens: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.head(list(tokens), self.image_size)
        return tuple(out[k] for k in self.outputs) if isinstance(out, dict) else (out,)


def output_names(head: nn.Module) -> list[str]:
    """``['pts3d', 'conf']`` for a DUSt3R head (``['pts3d']`` without confidence), ``['depth']`` for a depth head."""
    if isinstance(head, DUSt3RHead):
        return ["pts3d", "conf"] if head.has_conf else ["pts3d"]
    if isinstance(head, DepthHead):
        return ["depth"]
    raise TypeError(f"to_onnx exports a DUSt3RHead or a DepthHead, got {type(head).__name__}")


def example_tokens(head: nn.Module, image_size: Sequence[int], batch: int = 1, seed: int = 0) -> list[torch.Tensor]:
    """Seeded tokens of the right shapes for ``head`` at ``image_size``: one tensor per layer it reads."""
    dpt = head.dpt
    nh, nw = patch_grid(check_image_size(image_size), dpt.patch_size)
    n_layers = dpt.num_layers if dpt.num_layers is not None else max(dpt.hooks) + 1
    widths = {h: c for h, c in zip(dpt.hooks, dpt.dim_tokens)}
    g = torch.Generator().manual_seed(seed)
    param = next(dpt.parameters())
    return [torch.randn(batch, dpt.n_prefix + nh * nw, widths.get(i, min(dpt.dim_tokens)), generator=g)
            .to(param.device, param.dtype) for i in range(n_layers)]


def to_onnx(head: nn.Module, path: str | Path, image_size: Sequence[int]) -> Path:
    """Write ``head`` at ``image_size = (H, W)`` to ``path`` as one ONNX file; returns the path.

    Inputs ``tokens_0 .. tokens_{L-1}`` ``(batch, N, C_i)`` with a dynamic batch (1 .. 1024);
    outputs as named by ``output_names(head)``. ``H`` and ``W`` must be multiples of the patch size.
    """
    names = output_names(head)
    H, W = check_image_size(image_size)
    patch_grid((H, W), head.dpt.patch_size)      # a clear error before any tracing
    if is_optimized(head):
        raise ValueError("to_onnx: this head comes from fast.optimize_for_inference, whose fused kernels have no "
                         "ONNX counterpart; export the plain head it was made from")
    frozen = copy.deepcopy(head).cpu().float().eval()
    tokens = example_tokens(frozen, (H, W), batch=2)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    exporter_log = logging.getLogger("torch.onnx")     # it lists every optional op library it lacks
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(_Exportable(frozen, (H, W), names), tuple(tokens), str(path), dynamo=True,
                              input_names=[f"tokens_{i}" for i in range(len(tokens))], output_names=names,
                              dynamic_shapes=(tuple({0: batch} for _ in tokens),), external_data=False,
                              verbose=False)
    finally:
        exporter_log.setLevel(level)
    return path


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Write DUSt3R's DPT head as ONNX (13 token inputs, pts3d and conf).")
    p.add_argument("--out", default="artifacts/dust3r_head.onnx")
    p.add_argument("--size", nargs=2, type=int, default=(384, 512), metavar=("H", "W"))
    p.add_argument("--checkpoint", default=None, help="a released DUSt3R checkpoint (.pth): export its head 1")
    args = p.parse_args(argv)
    if args.checkpoint:
        head = load_released_heads(args.checkpoint, device="cpu").head1
    else:
        torch.manual_seed(0)
        head = dust3r_dpt_head(device="cpu")
    out = to_onnx(head, args.out, tuple(args.size))
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB): inputs tokens_0..tokens_{head.dpt.num_layers - 1}, "
          f"outputs {output_names(head)} at (H, W) = {tuple(args.size)}")


if __name__ == "__main__":
    main()
