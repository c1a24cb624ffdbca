"""Recorded reference numbers for the capstone: DUSt3R-layout weights and the outputs they must give.

The weights are regenerated from a seed (the file would otherwise be 76 MB): every key of
DUSt3R_ViTLarge_BaseDecoder_512_dpt's head, in DUSt3R's layout and shapes as recorded in
``tests/data/dust3r_dpt_head_keys.json``, drawn from ``torch.Generator().manual_seed(seed)`` in
float64 and scaled by 1/sqrt(fan-in); the aliased ``scratch.layerN_rn`` keys equal their twins.
The outputs in ``tests/data/dust3r_reference_outputs.pt`` were computed from those weights by
``tests/dust3r_reference.py``, a plain ``torch.nn.functional`` re-statement of DUSt3R's head
written from the architecture facts, which shares no code with dptlearn's head
(``scripts/make_reference_outputs.py`` rebuilds the file; ``tests/test_reference_data.py``
checks that dptlearn's head reproduces it).

    sd = dust3r_weights()                      # {'dpt.act_postprocess.0.0.weight': ..., ...}
    case = reference_case("odd")               # tokens (13 tensors), image size, expected outputs
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

DATA = Path(__file__).resolve().parents[2] / "tests" / "data"
KEYS_FILE = DATA / "dust3r_dpt_head_keys.json"
OUTPUTS_FILE = DATA / "dust3r_reference_outputs.pt"
MODEL = "DUSt3R_ViTLarge_BaseDecoder_512_dpt"
WEIGHT_SEED, TOKEN_SEED = 2024, 7
SIZES = {"odd": (48, 80), "even": (64, 96)}      # 3x5 patches (odd: the crop acts) and 4x6


def recorded_keys() -> dict:
    """The recorded key list as a dict (``{"configs": [{"name", "config", "keys", ...}, ...]}``).

    Found through the package, so a notebook reads it from any folder it was copied to.
    """
    return json.loads(KEYS_FILE.read_text(encoding="utf-8"))


def dust3r_keys(model: str = MODEL) -> tuple[dict, list[tuple[str, tuple[int, ...]]]]:
    """The recorded configuration and ``[(key, shape), ...]`` of one DUSt3R head, in DUSt3R's order."""
    configs = {c["name"]: c for c in recorded_keys()["configs"]}
    if model not in configs:
        raise KeyError(f"no recorded DUSt3R head {model!r}; recorded: {sorted(configs)}")
    c = configs[model]
    return c["config"], [(k, tuple(s)) for k, s in c["keys"]]


def dust3r_weights(seed: int = WEIGHT_SEED, model: str = MODEL,
                   dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    """Seeded weights for every key of the recorded head (see the module docstring)."""
    _, keys = dust3r_keys(model)
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for key, shape in keys:
        if "_rn.weight" in key and "layer_rn" not in key:           # alias: filled from its twin below
            continue
        fan_in = 1
        for s in (shape[1:] if len(shape) > 1 else shape):
            fan_in *= s
        sd[key] = torch.randn(shape, generator=g, dtype=torch.float64) * fan_in ** -0.5
    for i in range(4):
        sd[f"dpt.scratch.layer{i + 1}_rn.weight"] = sd[f"dpt.scratch.layer_rn.{i}.weight"].clone()
    return {k: sd[k].to(dtype) for k, _ in keys}                   # DUSt3R's key order


def reference_tokens(image_size: tuple[int, int], seed: int = TOKEN_SEED, model: str = MODEL,
                     dtype: torch.dtype = torch.float64) -> list[torch.Tensor]:
    """``dec_depth + 1`` seeded token tensors ``(1, N, C)`` for ``image_size``: encoder width first."""
    config, _ = dust3r_keys(model)
    p, depth = config["patch_size"], config["dec_depth"]
    n = (image_size[0] // p) * (image_size[1] // p)
    g = torch.Generator().manual_seed(seed)
    widths = [config["enc_embed_dim"]] + [config["dec_embed_dim"]] * depth
    return [torch.randn(1, n, c, generator=g, dtype=torch.float64).to(dtype) for c in widths]


def reference_case(name: str) -> dict:
    """``{'image_size', 'tokens', 'pts3d', 'conf'}`` for ``name`` in ``SIZES`` (float64)."""
    if name not in SIZES:
        raise KeyError(f"no reference case {name!r}; cases: {sorted(SIZES)}")
    recorded = torch.load(OUTPUTS_FILE, weights_only=True)[name]
    return {"image_size": SIZES[name], "tokens": reference_tokens(SIZES[name]),
            "pts3d": recorded["pts3d"], "conf": recorded["conf"]}
