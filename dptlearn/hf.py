"""transformers -> dptlearn: a head holding the weights of a Hugging Face depth model.

``from_hf(model)`` reads a ``DPTForDepthEstimation`` (readout ``ignore``, ``add`` or ``project``;
a ViT of its own or a DINOv2-style backbone) or a ``DepthAnythingForDepthEstimation`` and returns
a ``DepthHead`` built from dptlearn's stages with the same weights::

    tokens = hf_neck_tokens(model, pixel_values)      # 4 x (B, 1 + N, C): what the neck receives
    depth = from_hf(model)(tokens, (H, W))           # == model(pixel_values).predicted_depth

Nothing here imports transformers: the model is read through its class name, its ``config`` and
its ``state_dict()``. The key map (transformers -> dptlearn, under ``dpt.``):

    neck.reassemble_stage.readout_projects.{i}.0   readout.{i}.project.0     (readout 'project')
    neck.reassemble_stage.layers.{i}.projection    reassemble.branches.{i}.0
    neck.reassemble_stage.layers.{i}.resize        reassemble.branches.{i}.1 (not for factor 1)
    neck.convs.{i}                                 reassemble.project.{i}
    neck.fusion_stage.layers.{k}.projection        fusion.{3-k}.out_conv     (k = 0 is the coarsest)
    neck.fusion_stage.layers.{k}.residual_layer1   fusion.{3-k}.skip_unit    (k = 0: never used, dropped)
    neck.fusion_stage.layers.{k}.residual_layer2   fusion.{3-k}.unit
    head.head.{0,2,4} (DPT) | head.conv{1,2,3} (DA) head.reduce / head.refine / head.predict
"""
from __future__ import annotations

import re
from typing import Any, Sequence

import torch
from torch import nn

from .depth_anything import depth_anything_v2_head
from .depth_head import DepthHead
from .dpt_large import dpt_large_head

SUPPORTED = ("DPTForDepthEstimation", "DepthAnythingForDepthEstimation")
NECK_TOKENS = "the 4 hidden states transformers' neck receives, each (B, 1 + N, C)"


def _need(ok: bool, what: str) -> None:
    if not ok:
        raise ValueError(f"from_hf: this model's {what}; dptlearn's head does not reproduce that")


def _common_checks(cfg: Any) -> None:
    _need(list(cfg.reassemble_factors) == [4, 2, 1, 0.5],
          f"reassemble_factors are {list(cfg.reassemble_factors)}, not [4, 2, 1, 0.5]")
    _need(len(cfg.neck_hidden_sizes) == 4, f"neck has {len(cfg.neck_hidden_sizes)} levels, not 4")
    _need(cfg.head_in_index == -1, f"head reads fused level {cfg.head_in_index}, not the finest (-1)")
    backbone = getattr(cfg, "backbone_config", None)
    _need(backbone is None or not getattr(backbone, "reshape_hidden_states", False),
          "backbone hands the neck feature maps (reshape_hidden_states=True), not tokens")


def _dpt(cfg: Any) -> DepthHead:
    _need(not cfg.is_hybrid, "backbone is DPT-Hybrid (a ResNet feeds two levels)")
    backbone = cfg.backbone_config
    _need(backbone is None or backbone.model_type != "swinv2", "backbone is hierarchical (Swin v2): no reassemble")
    _need(not cfg.use_batch_norm_in_fusion_residual, "fusion residual units use batch norm")
    _need(cfg.use_bias_in_fusion_residual in (None, True), "fusion residual units have no bias")
    _need(not cfg.add_projection, "head has an extra projection (add_projection=True)")
    _need(cfg.readout_type != "project" or cfg.hidden_act == "gelu",
          f"readout projection uses {cfg.hidden_act!r}, not 'gelu'")
    _common_checks(cfg)
    hidden = getattr(backbone, "hidden_size", None) or cfg.hidden_size
    patch = backbone.patch_size if backbone is not None else cfg.patch_size
    return dpt_large_head(hidden_size=hidden, hooks=(0, 1, 2, 3), num_layers=4, patch_size=patch,
                          readout=cfg.readout_type, layer_dims=tuple(cfg.neck_hidden_sizes),
                          feature_dim=cfg.fusion_hidden_size, last_dim=32, odd_grid="resize_skip", device="cpu")


def _depth_anything(cfg: Any) -> DepthHead:
    _common_checks(cfg)
    _need(cfg.depth_estimation_type in ("relative", "metric"),
          f"depth_estimation_type is {cfg.depth_estimation_type!r}")
    head = depth_anything_v2_head(depth_type=cfg.depth_estimation_type, max_depth=cfg.max_depth,
                                  hidden_size=cfg.reassemble_hidden_size, hooks=(0, 1, 2, 3), num_layers=4,
                                  feature_dim=cfg.fusion_hidden_size, layer_dims=tuple(cfg.neck_hidden_sizes),
                                  last_dim=cfg.head_hidden_size, patch_size=cfg.patch_size, device="cpu")
    return head


# dptlearn key (under dpt.) -> transformers key; {h} is filled with the head's own names
_KEY_RULES = [
    (r"readout\.(\d)\.project\.0\.(.+)", r"neck.reassemble_stage.readout_projects.\1.0.\2"),
    (r"reassemble\.branches\.(\d)\.0\.(.+)", r"neck.reassemble_stage.layers.\1.projection.\2"),
    (r"reassemble\.branches\.(\d)\.1\.(.+)", r"neck.reassemble_stage.layers.\1.resize.\2"),
    (r"reassemble\.project\.(\d)\.weight", r"neck.convs.\1.weight"),
    (r"fusion\.(\d)\.out_conv\.(.+)", "neck.fusion_stage.layers.{k}.projection.\\2"),
    (r"fusion\.(\d)\.skip_unit\.conv(\d)\.(.+)", "neck.fusion_stage.layers.{k}.residual_layer1.convolution\\2.\\3"),
    (r"fusion\.(\d)\.unit\.conv(\d)\.(.+)", "neck.fusion_stage.layers.{k}.residual_layer2.convolution\\2.\\3"),
    (r"head\.(reduce|refine|predict)\.(.+)", "head.{h}.\\2"),
]
_HEAD_NAMES = {"DPTForDepthEstimation": {"reduce": "head.0", "refine": "head.2", "predict": "head.4"},
               "DepthAnythingForDepthEstimation": {"reduce": "conv1", "refine": "conv2", "predict": "conv3"}}


def hf_key(ours: str, model_type: str) -> str:
    """The transformers key of one dptlearn key (without the ``dpt.`` prefix)."""
    for pattern, target in _KEY_RULES:
        m = re.fullmatch(pattern, ours)
        if m:
            k = 3 - int(m[1]) if ours.startswith("fusion.") else 0
            h = _HEAD_NAMES[model_type][m[1]] if ours.startswith("head.") else ""
            return m.expand(target.replace("{k}", str(k)).replace("{h}", h))
    raise KeyError(f"no transformers name for dptlearn key {ours!r}")


def from_hf(model: nn.Module) -> DepthHead:
    """A dptlearn ``DepthHead`` with the neck and head weights of a transformers depth model.

    ``head(tokens, (H, W))`` with ``tokens = hf_neck_tokens(model, pixel_values)`` returns the
    model's ``predicted_depth`` (B, H', W'). The head is float32, in eval mode, on the CPU.
    """
    name = type(model).__name__
    if name not in SUPPORTED:
        raise TypeError(f"from_hf supports transformers' {' and '.join(SUPPORTED)}, got {name}")
    head = _dpt(model.config) if name == SUPPORTED[0] else _depth_anything(model.config)
    head.layers = NECK_TOKENS
    theirs = {k: v for k, v in model.state_dict().items() if k.startswith(("neck.", "head."))}
    ours = head.dpt.state_dict()
    source = {key: hf_key(key, name) for key in ours}   # our key -> transformers' key
    used = set(source.values())
    problems = []
    for key, param in ours.items():
        src = source[key]
        if src not in theirs:
            problems.append(f"missing {src!r} (for dpt.{key}, shape {list(param.shape)})")
        elif theirs[src].shape != param.shape:
            problems.append(f"{src!r}: expected shape {list(param.shape)}, got {list(theirs[src].shape)}")
    unused = "neck.fusion_stage.layers.0.residual_layer1."   # built by transformers, never called
    extra = [k for k in theirs if k not in used and not k.startswith(unused)]
    problems += [f"unexpected {k!r}" for k in extra]
    if problems:
        raise ValueError(f"from_hf: the {name} weights do not fit the head built from its config:\n  "
                         + "\n  ".join(problems))
    with torch.no_grad():
        for key, param in ours.items():
            param.copy_(theirs[source[key]])
    return head


def hf_neck_tokens(model: nn.Module, pixel_values: torch.Tensor) -> list[torch.Tensor]:
    """Run ``model`` once and return the 4 token tensors its neck receives, ``(B, 1 + N, C)`` each."""
    if not hasattr(model, "neck"):
        raise TypeError(f"hf_neck_tokens needs a transformers model with a .neck, got {type(model).__name__}")
    seen: list[Sequence[torch.Tensor]] = []
    handle = model.neck.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    try:
        with torch.no_grad():
            model(pixel_values=pixel_values)
    finally:
        handle.remove()
    return [t.detach().clone() for t in seen[0]]
