"""DUSt3R compatibility: the factory with DUSt3R's defaults and the checkpoint loader.

Every quirk of DUSt3R's state-dict layout lives here, so the modules above stay clean.
A DUSt3R head's ``state_dict()`` has 68 keys under ``dpt.`` (prefixed ``downstream_head1.``
or ``downstream_head2.`` inside a full model checkpoint). Three of its features exist only
for compatibility with code DUSt3R inherited:

1. **Aliases.** ``scratch.layerN_rn`` and ``scratch.layer_rn.{N-1}`` are one conv registered
   under two names, so the checkpoint stores the same 3x3 projection twice (4 keys).
   We load ``layer_rn`` and, when the alias is present, check that it is identical.
2. **A unit that never runs.** The coarsest fusion block ``refinenet4`` is built with a
   skip unit (``resConfUnit1``) but only ever receives one input, so its 4 tensors are
   trained never and read never. We check their shapes and drop them.
3. **Deleted duplicates.** Upstream, ``act_1..4_postprocess`` were also aliases of
   ``act_postprocess.0..3``; DUSt3R deleted those names, so they are not in checkpoints.

Key map (DUSt3R -> dptlearn), all under ``dpt.``:

    act_postprocess.{i}.{0,1}          reassemble.branches.{i}.{0,1}
    scratch.layer_rn.{i}               reassemble.project.{i}   (alias: scratch.layer{i+1}_rn)
    scratch.refinenet{k}.resConfUnit1  fusion.{k-1}.skip_unit   (k = 4: unused, dropped)
    scratch.refinenet{k}.resConfUnit2  fusion.{k-1}.unit
    scratch.refinenet{k}.out_conv      fusion.{k-1}.out_conv
    head.0 / head.2 / head.4           head.reduce / head.refine / head.predict
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Mapping, NamedTuple, Sequence

import torch
from torch import nn

from .device import get_device
from .dpt import DPTHead
from .grid import positive_int
from .postprocess import check_conf_mode, check_depth_mode, postprocess
from .tokens import dust3r_hook_indices

INF = math.inf


class DUSt3RHead(nn.Module):
    """A DPT head plus DUSt3R's post-processing: ``head(tokens, (H, W)) -> {'pts3d', 'conf'}``."""

    def __init__(self, dpt: DPTHead, depth_mode=("exp", -INF, INF), conf_mode=("exp", 1, INF)):
        super().__init__()
        self.depth_mode = check_depth_mode(depth_mode)
        self.conf_mode = check_conf_mode(conf_mode) if conf_mode is not None else None
        want = 3 + (self.conf_mode is not None)
        if dpt.num_channels != want:
            raise ValueError(f"the DPT head predicts {dpt.num_channels} channels, but "
                             f"{'x, y, z, conf' if want == 4 else 'x, y, z'} needs {want}")
        self.dpt = dpt

    @property
    def has_conf(self) -> bool:
        return self.conf_mode is not None

    def forward(self, tokens: Sequence[torch.Tensor], image_size: Sequence[int]) -> dict[str, torch.Tensor]:
        """``tokens``: ``dec_depth + 1`` tensors (B, N, C); ``image_size``: (H, W), not (W, H).

        Returns ``pts3d`` (B, H, W, 3) and, with confidence, ``conf`` (B, H, W).
        Tokens must be (B, N, C); see ``DPTHead.forward`` on why (B, C, N) can slip through at 512x384.
        """
        raw = self.dpt(tokens, image_size)                       # (B, 3 [+1], H, W)
        return postprocess(raw, self.depth_mode, self.conf_mode)


def dust3r_dpt_head(enc_embed_dim: int = 1024, dec_embed_dim: int = 768, dec_depth: int = 12,
                    patch_size: int = 16, has_conf: bool = True,
                    depth_mode=("exp", -INF, INF), conf_mode=("exp", 1, INF),
                    feature_dim: int = 256, last_dim: int = 128,
                    layer_dims: Sequence[int] = (96, 192, 384, 768),
                    device: str | torch.device | None = None) -> DUSt3RHead:
    """Build a head with DUSt3R's layout. Defaults are DUSt3R_ViTLarge_BaseDecoder_512_dpt's.

    Hooks ``[0, 2L//4, 3L//4, L]`` over ``[encoder_out, dec_1, ..., dec_L]``; token widths
    ``[enc_embed_dim, dec, dec, dec]``. Smaller ``feature_dim``/``last_dim``/``layer_dims``
    give course-sized heads (DUSt3R itself always uses 256 / 128 / (96, 192, 384, 768)).
    The head is returned in eval mode on ``device`` (default: ``dptlearn.get_device()``).
    """
    for name in ("enc_embed_dim", "dec_embed_dim", "patch_size", "feature_dim", "last_dim"):
        positive_int(name, locals()[name])
    if len(layer_dims) != 4:
        raise ValueError(f"layer_dims needs 4 widths (fine to coarse), got {list(layer_dims)}")
    for d in layer_dims:
        positive_int("each of layer_dims", d)
    hooks = dust3r_hook_indices(dec_depth)
    conf = conf_mode if has_conf else None
    if has_conf and conf_mode is None:
        raise ValueError("has_conf=True needs a conf_mode such as ('exp', 1, inf)")
    dpt = DPTHead(dim_tokens=(enc_embed_dim, dec_embed_dim, dec_embed_dim, dec_embed_dim), hooks=hooks,
                  patch_size=patch_size, layer_dims=layer_dims, feature_dim=feature_dim, last_dim=last_dim,
                  num_channels=3 + bool(has_conf), num_layers=dec_depth + 1)
    head = DUSt3RHead(dpt, depth_mode=depth_mode, conf_mode=conf)
    return head.to(get_device(device)).eval()


# ----------------------------------------------------------------------------- key mapping

def _key_map(dpt: DPTHead) -> "OrderedDict[str, str]":
    """DUSt3R key (under ``dpt.``) -> dptlearn key (under ``dpt.``), in DUSt3R's key order."""
    m: OrderedDict[str, str] = OrderedDict()
    for i in range(4):
        m[f"scratch.layer_rn.{i}.weight"] = f"reassemble.project.{i}.weight"
    for k in range(1, 5):
        f = f"fusion.{k - 1}"
        m[f"scratch.refinenet{k}.out_conv.weight"] = f"{f}.out_conv.weight"
        m[f"scratch.refinenet{k}.out_conv.bias"] = f"{f}.out_conv.bias"
        for unit, ours in (("resConfUnit1", "skip_unit"), ("resConfUnit2", "unit")):
            if k == 4 and unit == "resConfUnit1":
                continue
            for conv in ("conv1", "conv2"):
                for p in ("weight", "bias"):
                    m[f"scratch.refinenet{k}.{unit}.{conv}.{p}"] = f"{f}.{ours}.{conv}.{p}"
    for theirs, ours in (("0", "reduce"), ("2", "refine"), ("4", "predict")):
        for p in ("weight", "bias"):
            m[f"head.{theirs}.{p}"] = f"head.{ours}.{p}"
    for i, branch in enumerate(dpt.reassemble.branches):
        for j in range(len(branch)):
            for p in ("weight", "bias"):
                m[f"act_postprocess.{i}.{j}.{p}"] = f"reassemble.branches.{i}.{j}.{p}"
    return m


def _aliases() -> dict[str, str]:
    """Duplicate DUSt3R key -> the key it duplicates."""
    return {f"scratch.layer{i + 1}_rn.weight": f"scratch.layer_rn.{i}.weight" for i in range(4)}


def _unused(feature_dim: int) -> dict[str, tuple[int, ...]]:
    """The never-called skip unit of refinenet4: key -> shape."""
    d = feature_dim
    return {f"scratch.refinenet4.resConfUnit1.{c}.{p}": ((d, d, 3, 3) if p == "weight" else (d,))
            for c in ("conv1", "conv2") for p in ("weight", "bias")}


def expected_dust3r_keys(head: DUSt3RHead) -> "OrderedDict[str, tuple[int, ...]]":
    """Every key (``dpt.``-prefixed) and shape a DUSt3R checkpoint holds for a head like ``head``.

    Order as in DUSt3R's ``state_dict()``: aliases, layer_rn, refinenet1..4, head, act_postprocess.
    """
    dpt = head.dpt
    ours = dict(dpt.state_dict())
    mapping = _key_map(dpt)
    out: OrderedDict[str, tuple[int, ...]] = OrderedDict()
    for alias, target in _aliases().items():
        out["dpt." + alias] = tuple(ours[mapping[target]].shape)
    unused = _unused(dpt.feature_dim)
    for theirs, mine in mapping.items():
        if theirs.startswith("scratch.refinenet4.resConfUnit2.conv1.weight"):
            for k, shape in unused.items():  # DUSt3R lists resConfUnit1 before resConfUnit2
                out["dpt." + k] = shape
        out["dpt." + theirs] = tuple(ours[mine].shape)
    return out


class LoadReport(NamedTuple):
    loaded: int                 # tensors copied into the head
    aliases_checked: list[str]  # duplicate keys found and verified identical
    unused_dropped: list[str]   # keys DUSt3R stores but never uses


def _select_head_keys(state_dict: Mapping, which: int | None) -> dict[str, torch.Tensor]:
    """Accept a head state dict, with or without ``downstream_headN.``, or a whole checkpoint."""
    if "model" in state_dict and isinstance(state_dict["model"], Mapping):
        state_dict = state_dict["model"]  # a DUSt3R checkpoint file: {'args': ..., 'model': ...}
    heads = sorted({k.split(".", 1)[0] for k in state_dict if k.startswith("downstream_head")})
    if not heads:
        return dict(state_dict)
    if which is None:
        if len(heads) > 1:
            raise ValueError(f"the state dict holds several heads {heads}; pass which=1 or which=2")
        prefix = heads[0] + "."
    else:
        prefix = f"downstream_head{which}."
        if prefix[:-1] not in heads:
            raise KeyError(f"no keys under {prefix!r} in the state dict; found heads {heads}")
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def load_dust3r_head_weights(head: DUSt3RHead, state_dict: Mapping[str, torch.Tensor],
                             which: int | None = None) -> LoadReport:
    """Load a DUSt3R head's weights (DUSt3R key layout, unchanged values) into ``head``.

    ``state_dict`` may be the head's own (keys ``dpt.…``), the same keys prefixed with
    ``downstream_head1.`` / ``downstream_head2.`` (pick one with ``which`` if both are there),
    or a whole DUSt3R checkpoint dict with a ``'model'`` entry. The aliased
    ``scratch.layerN_rn`` keys may be present (then they must equal their
    ``scratch.layer_rn.{N-1}`` twins) or absent. Anything missing, unexpected or mis-shaped
    raises before a single weight is changed; the error lists every problem with the key,
    the expected and the got shape.
    """
    sd = _select_head_keys(state_dict, which)
    expected = expected_dust3r_keys(head)
    aliases = {"dpt." + a: "dpt." + t for a, t in _aliases().items()}
    problems: list[str] = []
    for key in sd:
        if key not in expected:
            hint = " (keys must start with 'dpt.', e.g. 'dpt.head.0.weight')" if not key.startswith("dpt.") else ""
            problems.append(f"unexpected key {key!r}{hint}")
    for key, shape in expected.items():
        if key not in sd:
            if key not in aliases:
                problems.append(f"missing key {key!r} (expected shape {list(shape)})")
            continue
        value = sd[key]
        if not isinstance(value, torch.Tensor):
            problems.append(f"key {key!r}: expected a tensor of shape {list(shape)}, got {type(value).__name__}")
        elif tuple(value.shape) != shape:
            problems.append(f"key {key!r}: expected shape {list(shape)}, got {list(value.shape)}")
    if problems:
        raise ValueError(f"state dict does not match this DUSt3R head ({len(problems)} problem"
                         f"{'s' if len(problems) > 1 else ''}):\n  " + "\n  ".join(problems))
    checked = []
    for alias, target in aliases.items():
        if alias in sd:
            if not torch.equal(sd[alias].cpu(), sd[target].cpu()):
                diff = (sd[alias].float() - sd[target].float()).abs().max().item()
                raise ValueError(f"aliased keys {alias!r} and {target!r} must hold the same tensor in a DUSt3R "
                                 f"checkpoint, but differ (max |diff| = {diff:.3g})")
            checked.append(alias)
    mapping = _key_map(head.dpt)
    params = dict(head.dpt.state_dict())
    with torch.no_grad():
        for theirs, ours in mapping.items():
            params[ours].copy_(sd["dpt." + theirs])
    unused = ["dpt." + k for k in _unused(head.dpt.feature_dim)]
    return LoadReport(loaded=len(mapping), aliases_checked=checked, unused_dropped=unused)


def dust3r_state_dict(head: DUSt3RHead, include_aliases: bool = True, prefix: str = "") -> "OrderedDict[str, torch.Tensor]":
    """Export ``head``'s weights in DUSt3R's key layout and order (the inverse of the loader).

    The unused ``refinenet4.resConfUnit1`` tensors are written as zeros (DUSt3R never reads them);
    with ``include_aliases`` the duplicate ``scratch.layerN_rn`` keys are written too.
    """
    params = dict(head.dpt.state_dict())
    mapping = _key_map(head.dpt)
    aliases = _aliases()
    unused = _unused(head.dpt.feature_dim)
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key in expected_dust3r_keys(head):
        k = key[len("dpt."):]
        if k in aliases:
            if include_aliases:
                out[prefix + key] = params[mapping[aliases[k]]].detach().clone()
        elif k in unused:
            out[prefix + key] = torch.zeros(unused[k], dtype=params["reassemble.project.0.weight"].dtype)
        else:
            out[prefix + key] = params[mapping[k]].detach().clone()
    return out
