"""Stage 6: DUSt3R's post-processing, raw channels ``(x, y, z, c)`` -> point map and confidence.

Depth modes keep the direction of the raw vector ``v`` and remap its length ``d = |v|``:

    linear  v                      (unchanged)
    square  v / d * d^2
    exp     v / d * (e^d - 1)      (expm1: a zero vector stays at the camera centre)

Confidence modes (``vmin``, ``vmax`` from the mode tuple):

    exp      vmin + min(e^c, vmax - vmin)    DUSt3R: ('exp', 1, inf) -> 1 + e^c > 1
    sigmoid  vmin + (vmax - vmin) * sigmoid(c)

Modes are tuples ``(name, vmin, vmax)`` as in DUSt3R; depth bounds must be (-inf, inf).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

DEPTH_MODES = ("linear", "square", "exp")
CONF_MODES = ("exp", "sigmoid")
EPS = 1e-8


def _unpack_mode(mode: Sequence, arg: str, label: str, names: tuple[str, ...], example: str) -> tuple:
    """``(name, vmin, vmax)`` with a known ``name``, or a ValueError naming ``arg``."""
    if not isinstance(mode, (tuple, list)) or len(mode) != 3:
        raise ValueError(f"{arg} must be a tuple (name, vmin, vmax) like {example}, got {mode!r}")
    if mode[0] not in names:
        raise ValueError(f"{label} mode must be one of {names}, got {mode[0]!r}")
    return tuple(mode)


def check_depth_mode(mode: Sequence) -> tuple[str, float, float]:
    """Validate ``(name, vmin, vmax)``; DUSt3R supports only unbounded depth modes."""
    name, vmin, vmax = _unpack_mode(mode, "depth_mode", "depth", DEPTH_MODES, "('exp', -inf, inf)")
    if not (vmin == -math.inf and vmax == math.inf):
        raise ValueError(f"depth mode bounds must be (-inf, inf) (DUSt3R rejects finite ones), got ({vmin}, {vmax})")
    return name, float(vmin), float(vmax)


def check_conf_mode(mode: Sequence) -> tuple[str, float, float]:
    """Validate ``(name, vmin, vmax)`` for the confidence channel."""
    name, vmin, vmax = _unpack_mode(mode, "conf_mode", "confidence", CONF_MODES, "('exp', 1, inf)")
    if not vmin < vmax or math.isinf(vmin):
        raise ValueError(f"confidence bounds need a finite vmin < vmax, got ({vmin}, {vmax})")
    if name == "sigmoid" and math.isinf(vmax):
        raise ValueError(f"sigmoid confidence needs a finite vmax, got ({vmin}, {vmax})")
    return name, float(vmin), float(vmax)


def depth_activation(xyz: torch.Tensor, mode: Sequence) -> torch.Tensor:
    """``(..., 3) -> (..., 3)``: remap each vector's length, keep its direction."""
    name, _, _ = check_depth_mode(mode)
    if xyz.shape[-1] != 3:
        raise ValueError(f"depth_activation expects (..., 3) vectors, got {tuple(xyz.shape)}")
    if name == "linear":
        return xyz
    d = xyz.norm(dim=-1, keepdim=True)            # (..., 1)
    direction = xyz / d.clamp(min=EPS)            # (..., 3)
    if name == "square":
        return direction * d.square()
    return direction * torch.expm1(d)


def conf_activation(x: torch.Tensor, mode: Sequence) -> torch.Tensor:
    """Map the raw confidence channel to ``[vmin, vmax]``."""
    name, vmin, vmax = check_conf_mode(mode)
    if name == "exp":
        return vmin + x.exp().clamp(max=vmax - vmin)
    return (vmax - vmin) * torch.sigmoid(x) + vmin


def postprocess(raw: torch.Tensor, depth_mode: Sequence, conf_mode: Sequence | None) -> dict[str, torch.Tensor]:
    """``(B, 3 [+1], H, W)`` -> ``{'pts3d': (B, H, W, 3), 'conf': (B, H, W)}`` (channels last).

    A bfloat16 or float16 map is activated in float32 and rounded back to its dtype once at the
    end: ``exp`` multiplies an error in ``d`` by about ``d``, so the activations must not add
    rounding errors of their own (in bfloat16 they would double the error of ``pts3d``).
    """
    want = 3 if conf_mode is None else 4
    if raw.ndim != 4 or raw.shape[1] != want:
        raise ValueError(f"postprocess expects a raw map (B, {want}, H, W), got {tuple(raw.shape)}")
    fmap = raw.permute(0, 2, 3, 1)                               # (B, H, W, C)
    fmap = fmap.to(torch.promote_types(fmap.dtype, torch.float32))
    out = {"pts3d": depth_activation(fmap[..., 0:3], depth_mode)}  # (B, H, W, 3)
    if conf_mode is not None:
        out["conf"] = conf_activation(fmap[..., 3], conf_mode)   # (B, H, W)
    return {k: v.to(raw.dtype) for k, v in out.items()}
