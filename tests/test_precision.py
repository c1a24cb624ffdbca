"""bfloat16: a converted head and CPU autocast, against float32, on seeded inputs (no timing here).

Bound: bfloat16 keeps 8 significant bits, so one rounding is off by at most u = 2^-8 = 3.9e-3
relative. The head rounds its outputs once and accumulates a few more roundings on the way
(measured: 0.6-0.9e-2 for pts3d, 0.2-0.4e-2 for conf on these heads); the tests allow
BOUND = 2e-2 (about 5u) for ``max |bf16 - f32| / max |f32|``. Autocast and the converted head
round the same operations, so they must agree to one rounding (u). Each test runs the plain head
and, where it applies, the head from ``fast.optimize_for_inference`` (fused bfloat16 kernels).
"""
import copy
import math

import pytest
import torch

from dptlearn import fast
from dptlearn.dust3r import dust3r_dpt_head
from dptlearn.export import example_tokens
from dptlearn.postprocess import postprocess
from _helpers import rel_err

SMALL = dict(enc_embed_dim=48, dec_embed_dim=32, feature_dim=16, last_dim=8, layer_dims=(8, 8, 16, 16), device="cpu")
U = 2.0 ** -8
BOUND = 2e-2
SIZES = [(64, 96), (48, 80)]          # 4x6 and 3x5 patches (the odd grid exercises the crop)


def tokens(heads, hw, dtype=torch.float32):
    """``example_tokens`` of the float32 head (batch 2, seed 0) cast to ``dtype``: the same numbers for both heads."""
    return [t.to(dtype) for t in example_tokens(heads[0], hw, batch=2)]


@pytest.fixture
def heads():
    torch.manual_seed(0)
    f32 = dust3r_dpt_head(**SMALL)
    return f32, copy.deepcopy(f32).to(torch.bfloat16)


def pick(heads, path):
    """The float32 and bfloat16 heads of ``path``: the plain ones, or optimize_for_inference's."""
    f32, bf16 = heads
    if path == "plain":
        return f32, bf16
    return fast.optimize_for_inference(f32), fast.optimize_for_inference(f32, torch.bfloat16)


@pytest.mark.parametrize("path", ["fast", "plain"])
@pytest.mark.parametrize("hw", SIZES)
def test_bfloat16_head_is_within_bound_of_float32(heads, hw, path):
    f32, bf16 = heads[0], pick(heads, path)[1]
    with torch.inference_mode():
        ref = f32(tokens(heads, hw), hw)
        out = bf16(tokens(heads, hw, dtype=torch.bfloat16), hw)
    for k in ("pts3d", "conf"):
        assert out[k].dtype == torch.bfloat16 and out[k].shape == ref[k].shape
        err = rel_err(out[k], ref[k])
        assert 0 < err < BOUND, (k, err)      # > 0: it really ran in bfloat16


@pytest.mark.parametrize("path", ["fast", "plain"])
def test_raw_map_of_a_bfloat16_head_is_bfloat16(heads, path):
    _, bf16 = pick(heads, path)
    with torch.inference_mode():
        raw = bf16.dpt(tokens(heads, (64, 96), dtype=torch.bfloat16), (64, 96))
    assert raw.dtype == torch.bfloat16 and raw.shape == (2, 4, 64, 96)


@pytest.mark.skipif(torch.bfloat16 not in fast.FUSED_DTYPES, reason="oneDNN has no bfloat16 kernels on this CPU")
@pytest.mark.parametrize("mode", ["converted", "autocast"])
def test_bfloat16_takes_the_fused_kernels(heads, monkeypatch, mode):
    f32, bf16 = pick(heads, "fast")
    seen = []
    kernel = fast._POINTWISE

    def counting(x, *args):
        seen.append(x.dtype)
        return kernel(x, *args)

    monkeypatch.setattr(fast, "_POINTWISE", counting)
    with torch.inference_mode():
        if mode == "converted":
            bf16(tokens(heads, (64, 96), dtype=torch.bfloat16), (64, 96))
        else:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                f32(tokens(heads, (64, 96)), (64, 96))
    # 7 residual units x (conv+ReLU, conv+add) + the head's refine conv+ReLU
    assert seen == [torch.bfloat16] * 15


@pytest.mark.parametrize("path", ["fast", "plain"])
@pytest.mark.parametrize("hw", SIZES)
def test_autocast_gives_the_converted_heads_numbers(heads, hw, path):
    f32, bf16 = pick(heads, path)
    with torch.inference_mode():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            auto = f32(tokens(heads, hw), hw)
        conv = bf16(tokens(heads, hw, dtype=torch.bfloat16), hw)
        ref = f32(tokens(heads, hw), hw)
    for k in ("pts3d", "conf"):
        assert auto[k].dtype == torch.bfloat16
        assert rel_err(auto[k], conv[k]) <= U, k
        assert rel_err(auto[k], ref[k]) < BOUND, k
    assert all(p.dtype == torch.float32 for p in f32.parameters())   # autocast left the weights alone


def test_bfloat16_raw_map_is_activated_in_float32_and_rounded_once():
    """exp amplifies errors in d, so postprocess must not round in between (documented upcast)."""
    g = torch.Generator().manual_seed(3)
    raw = (torch.randn(2, 4, 8, 12, generator=g) * 2).to(torch.bfloat16)   # |v| up to ~10: exp matters
    modes = (("exp", -math.inf, math.inf), ("exp", 1, math.inf))
    out = postprocess(raw, *modes)
    want = postprocess(raw.float(), *modes)
    for k in ("pts3d", "conf"):
        assert out[k].dtype == torch.bfloat16
        assert torch.equal(out[k], want[k].to(torch.bfloat16)), k
    # activating in bfloat16 instead would be measurably worse
    fmap = raw.permute(0, 2, 3, 1)[..., :3]
    d = fmap.norm(dim=-1, keepdim=True)
    in_bf16 = fmap / d * torch.expm1(d)
    assert rel_err(in_bf16, want["pts3d"]) > rel_err(out["pts3d"], want["pts3d"])


def test_float64_postprocess_stays_float64():
    raw = torch.randn(1, 4, 2, 3, dtype=torch.float64)
    out = postprocess(raw, ("exp", -math.inf, math.inf), ("exp", 1, math.inf))
    assert out["pts3d"].dtype == out["conf"].dtype == torch.float64


@pytest.mark.parametrize("head_dtype, token_dtype", [(torch.float32, torch.bfloat16), (torch.bfloat16, torch.float32)],
                         ids=["bf16 tokens, f32 head", "f32 tokens, bf16 head"])
def test_dtype_mismatch_is_a_clear_error(heads, head_dtype, token_dtype):
    head = heads[0] if head_dtype == torch.float32 else heads[1]
    with torch.inference_mode(), pytest.raises(TypeError) as e:
        head(tokens(heads, (64, 96), dtype=token_dtype), (64, 96))
    msg = str(e.value)
    assert "tokens[0]" in msg and str(token_dtype) in msg and str(head_dtype) in msg, msg


def test_one_bfloat16_layer_among_float32_is_named(heads):
    x = tokens(heads, (64, 96))
    x[12] = x[12].to(torch.bfloat16)
    with pytest.raises(TypeError, match=r"tokens\[12\] has dtype torch.bfloat16.*torch.float32"):
        heads[0](x, (64, 96))


def test_autocast_does_not_excuse_bfloat16_tokens_for_a_float32_head(heads):
    """Autocast casts inside ops; tokens that are already bfloat16 are still the caller's choice."""
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16), \
            pytest.raises(TypeError, match=r"torch.bfloat16.*torch.float32"):
        heads[0](tokens(heads, (64, 96), dtype=torch.bfloat16), (64, 96))


def test_hooked_convs_are_not_fused_in_bfloat16_either(heads):
    """A conv with a hook must see its call in bfloat16 too (the fused kernels bypass the module)."""
    _, bf16 = pick(heads, "fast")
    conv = bf16.dpt.fusion[0].unit.conv1
    seen = []
    handle = conv.register_forward_hook(lambda m, args, out: seen.append((args[0].clone(), out.clone())))
    try:
        with torch.inference_mode():
            bf16(tokens(heads, (64, 96), dtype=torch.bfloat16), (64, 96))
    finally:
        handle.remove()
    assert len(seen) == 1
    x, out = seen[0]
    assert x.dtype == out.dtype == torch.bfloat16
    with torch.no_grad():
        want = torch.nn.functional.conv2d(x.float(), conv.weight.float(), conv.bias.float(), padding=1)
    assert rel_err(out, want) < 2 * U
