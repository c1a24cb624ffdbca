"""DUSt3R's released checkpoint files -> both heads, ready to run.

A released file (e.g. ``DUSt3R_ViTLarge_BaseDecoder_512_dpt.pth``) is ``torch.save`` of a dict::

    {'args': Namespace(model="AsymmetricCroCo3DStereo(..., head_type='dpt', depth_mode=('exp', -inf, inf),
                                                    conf_mode=('exp', 1, inf), enc_embed_dim=1024,
                                                    dec_embed_dim=768, dec_depth=12, ...)", ...),
     'model': {'enc_blocks...': ..., 'downstream_head1.dpt.…': ..., 'downstream_head2.dpt.…': ...}}

``args.model`` is the Python source of the constructor call DUSt3R ``eval``s to build the
network. Here it is parsed with ``ast`` instead, keyword by keyword, as literals only (numbers,
strings, tuples, ``inf``): nothing in the file is executed, and the file itself is read with
``torch.load(weights_only=True)``. The head's own widths (fusion width, ``last_dim``, reassemble
widths) are not recorded in ``args`` (DUSt3R hard-codes them), so they are read off the weights.
"""
from __future__ import annotations

import argparse
import ast
import math
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import torch

from .device import get_device
from .dust3r import DUSt3RHead, LoadReport, dust3r_dpt_head, load_dust3r_head_weights

HEAD_PREFIXES = ("downstream_head1.", "downstream_head2.")
# AsymmetricCroCo3DStereo / CroCoNet defaults for what a call may leave out
DEFAULTS = dict(head_type="linear", output_mode="pts3d", depth_mode=("exp", -math.inf, math.inf),
                conf_mode=("exp", 1, math.inf), enc_embed_dim=768, dec_embed_dim=512, dec_depth=8, patch_size=16)
_NAMES = {"inf": math.inf, "nan": math.nan, "True": True, "False": False, "None": None}


class ReleasedHeads(NamedTuple):
    head1: DUSt3RHead           # view 1's head (decoder stream 1)
    head2: DUSt3RHead           # view 2's head (decoder stream 2)
    config: dict                # what the heads were built with, and where each value came from
    reports: tuple[LoadReport, LoadReport]


def _literal(node: ast.AST) -> Any:
    """A literal value from the args string: constants, tuples, lists, dicts, +/- numbers, inf."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.Tuple, ast.List)):
        items = [_literal(e) for e in node.elts]
        return tuple(items) if isinstance(node, ast.Tuple) else items
    if isinstance(node, ast.Dict):
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _literal(node.operand)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.Name) and node.id in _NAMES:
        return _NAMES[node.id]
    raise ValueError(f"not a literal: {ast.unparse(node)!r}")


def parse_model_call(text: str) -> tuple[str, dict[str, Any]]:
    """``"Cls(a=1, b=('exp', -inf, inf))"`` -> ``('Cls', {'a': 1, 'b': ('exp', -inf, inf)})``, without eval."""
    try:
        call = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as e:
        raise ValueError(f"the checkpoint's args.model is not a Python call: {text[:80]!r}") from e
    if not isinstance(call, ast.Call) or not isinstance(call.func, (ast.Name, ast.Attribute)):
        raise ValueError(f"the checkpoint's args.model should be a constructor call like "
                         f"AsymmetricCroCo3DStereo(...), got {text[:80]!r}")
    if call.args or any(kw.arg is None for kw in call.keywords):
        raise ValueError(f"the checkpoint's args.model passes positional or ** arguments; only keywords are read: "
                         f"{text[:80]!r}")
    kwargs = {}
    for kw in call.keywords:
        try:
            kwargs[kw.arg] = _literal(kw.value)
        except ValueError as e:
            raise ValueError(f"the checkpoint's args.model: {kw.arg}= is {e}; only literals are read") from None
    return ast.unparse(call.func), kwargs


def _model_string(args: Any) -> str | None:
    if isinstance(args, str):
        return args
    if isinstance(args, Mapping):
        return args.get("model")
    return getattr(args, "model", None)


def _head_widths(sd: Mapping[str, torch.Tensor], prefix: str) -> dict[str, Any]:
    """Widths DUSt3R hard-codes, read off the weights: token widths, reassemble widths, D, last_dim, channels."""
    def shape(key: str) -> tuple[int, ...]:
        return tuple(sd[prefix + "dpt." + key].shape)
    return dict(enc_embed_dim=shape("act_postprocess.0.0.weight")[1],
                dec_embed_dim=shape("act_postprocess.1.0.weight")[1],
                layer_dims=tuple(shape(f"act_postprocess.{i}.0.weight")[0] for i in range(4)),
                feature_dim=shape("scratch.layer_rn.0.weight")[0],
                last_dim=shape("head.2.weight")[0], channels=shape("head.4.weight")[0])


def load_released_heads(path: str | Path, device: str | torch.device | None = None) -> ReleasedHeads:
    """Both heads of a DUSt3R checkpoint file, weights loaded, in eval mode on ``device``
    (default: ``dptlearn.get_device()``).

    From ``args.model``: ``head_type`` (must be ``'dpt'``), ``depth_mode``, ``conf_mode``,
    ``dec_depth`` (the hooks), ``patch_size``, and the encoder/decoder widths (checked against the
    weights). Without ``args``, the token widths come from the weights and the rest from DUSt3R's
    512 model (``config['source']`` says which).
    """
    with torch.serialization.safe_globals([argparse.Namespace]):
        ckpt = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(ckpt, Mapping) or not isinstance(ckpt.get("model"), Mapping):
        got = sorted(ckpt)[:6] if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise ValueError(f"{path}: expected DUSt3R's checkpoint format, a dict with 'args' and 'model' "
                         f"(the state dict), got {got}")
    sd = ckpt["model"]
    missing = [p for p in HEAD_PREFIXES if not any(k.startswith(p + "dpt.") for k in sd)]
    if missing:
        found = sorted({k.split(".", 1)[0] for k in sd})[:8]
        raise ValueError(f"{path}: no DPT head weights under {missing} in the checkpoint's model "
                         f"(top-level names found: {found}); a DUSt3R DPT checkpoint holds both heads as "
                         f"downstream_head1.dpt.* and downstream_head2.dpt.*")
    text = _model_string(ckpt.get("args"))
    config = dict(DEFAULTS, head_type="dpt", dec_depth=12, source="weights + DUSt3R 512 defaults (no args.model)")
    if text is not None:
        cls, kwargs = parse_model_call(text)
        config = dict(DEFAULTS)
        config.update({k: v for k, v in kwargs.items() if k in DEFAULTS}, model=cls, source="args.model")
    if config["head_type"] != "dpt":
        raise ValueError(f"{path}: the checkpoint's head_type is {config['head_type']!r}; only DUSt3R's 'dpt' "
                         f"head is supported (the 224 and *_linear checkpoints use a linear head)")
    widths = _head_widths(sd, HEAD_PREFIXES[0])
    for name in ("enc_embed_dim", "dec_embed_dim"):
        if text is None:
            config[name] = widths[name]
        elif config[name] != widths[name]:
            raise ValueError(f"{path}: args.model says {name}={config[name]} but the head weights take "
                             f"{widths[name]}-wide tokens")
    config.update(layer_dims=widths["layer_dims"], feature_dim=widths["feature_dim"], last_dim=widths["last_dim"])
    has_conf = widths["channels"] == 4
    heads, reports = [], []
    for which in (1, 2):
        head = dust3r_dpt_head(enc_embed_dim=config["enc_embed_dim"], dec_embed_dim=config["dec_embed_dim"],
                               dec_depth=config["dec_depth"], patch_size=config["patch_size"], has_conf=has_conf,
                               depth_mode=config["depth_mode"], conf_mode=config["conf_mode"],
                               feature_dim=config["feature_dim"], last_dim=config["last_dim"],
                               layer_dims=config["layer_dims"], device="cpu")
        reports.append(load_dust3r_head_weights(head, sd, which=which))
        heads.append(head.to(get_device(device)).eval())
    return ReleasedHeads(heads[0], heads[1], config, tuple(reports))
