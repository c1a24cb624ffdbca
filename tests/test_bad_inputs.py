"""Bad input gets a clear error naming what was expected and what was got."""
import math

import pytest
import torch

from dptlearn.dust3r import dust3r_dpt_head

INF = math.inf
SMALL = dict(enc_embed_dim=48, dec_embed_dim=32, feature_dim=16, last_dim=8, layer_dims=(8, 8, 16, 16), device="cpu")


@pytest.fixture(scope="module")
def head():
    return dust3r_dpt_head(**SMALL)


def tokens_for(hw, n_layers=13, enc=48, dec=32, batch=1, p=16, **overrides):
    n = (hw[0] // p) * (hw[1] // p)
    toks = [torch.zeros(batch, n, enc if i == 0 else dec) for i in range(n_layers)]
    for i, t in overrides.items():
        toks[int(i[1:])] = t
    return toks


OK = (64, 96)   # a 4 x 6 grid, N = 24

CALL_CASES = [
    # (case id, tokens, image_size, exception, message fragments that must all appear)
    ("size not a multiple of the patch", tokens_for(OK), (70, 96), ValueError,
     ["(70, 96)", "multiple of the patch size 16", "(64, 96)"]),
    ("token list too short", tokens_for(OK, n_layers=12), OK, ValueError,
     ["list of 13 token tensors", "got 12"]),
    ("token list too long", tokens_for(OK, n_layers=14), OK, ValueError, ["13 token tensors", "got 14"]),
    ("single tensor instead of a list", torch.zeros(1, 24, 32), OK, TypeError, ["list", "Tensor"]),
    ("wrong channel width", tokens_for(OK, t0=torch.zeros(1, 24, 32)), OK, ValueError,
     ["tokens[0]", "32 channels", "built for 48", "(1, 24, 48)"]),
    ("token count does not match (H, W)", tokens_for((64, 64)), OK, ValueError,
     ["N = 16 tokens", "(64, 96)", "4x6 grid = 24 tokens", "(1, 24, 48)"]),
    ("tokens given as (B, C, N)", [t.transpose(1, 2) for t in tokens_for(OK)], OK, ValueError,
     ["looks like (B, C, N) = (1, 48, 24)", "(1, 24, 48)", "transpose(1, 2)"]),
    ("2-d tokens", tokens_for(OK, t6=torch.zeros(24, 32)), OK, ValueError,
     ["tokens[6]", "(B, N, C) = (B, 24, 32)", "2-d tensor (24, 32)"]),
    ("batch sizes differ", tokens_for(OK, t9=torch.zeros(2, 24, 32)), OK, ValueError,
     ["tokens[9] has batch size 2", "has 1"]),
    ("dtype differs from the head", [t.double() for t in tokens_for(OK)], OK, TypeError,
     ["torch.float64", "torch.float32"]),
    ("mixed dtypes in the list", tokens_for(OK, t12=torch.zeros(1, 24, 32, dtype=torch.float16)), OK, TypeError,
     ["tokens[12]", "torch.float16", "torch.float32"]),
    ("tokens on another device", tokens_for(OK, t0=torch.zeros(1, 24, 48, device="meta")), OK, ValueError,
     ["tokens[0] is on meta", "head is on cpu"]),
    ("not a tensor in the list", tokens_for(OK, t0=[[0.0]]), OK, TypeError, ["tokens[0]", "torch.Tensor", "list"]),
    ("image size with one side", tokens_for(OK), (64,), ValueError, ["pair (H, W)", "(64,)"]),
    ("image size as floats", tokens_for(OK), (64.0, 96.0), ValueError, ["two positive ints", "(64.0, 96.0)"]),
    ("negative image size", tokens_for(OK), (-64, 96), ValueError, ["positive ints", "(-64, 96)"]),
    ("image size as a string", tokens_for(OK), "64x96", ValueError, ["pair (H, W)", "'64x96'"]),
]


@pytest.mark.parametrize("case, tokens, size, exc, fragments", CALL_CASES, ids=[c[0] for c in CALL_CASES])
def test_bad_calls(head, case, tokens, size, exc, fragments):
    with pytest.raises(exc) as info:
        head(tokens, size)
    for fragment in fragments:
        assert fragment in str(info.value), f"{case}: {fragment!r} not in {str(info.value)!r}"


BUILD_CASES = [
    ("decoder too shallow for DUSt3R's hooks", dict(dec_depth=8), ValueError, ["dec_depth > 9", "dec_depth=8"]),
    ("unknown depth mode", dict(depth_mode=("log", -INF, INF)), ValueError, ["depth mode must be one of", "'log'"]),
    ("finite depth bounds", dict(depth_mode=("exp", 0, 10)), ValueError, ["(-inf, inf)", "(0, 10)"]),
    ("unknown confidence mode", dict(conf_mode=("softplus", 1, INF)), ValueError,
     ["confidence mode must be one of", "'softplus'"]),
    ("malformed mode tuple", dict(conf_mode="exp"), ValueError, ["(name, vmin, vmax)", "'exp'"]),
    ("three layer dims", dict(layer_dims=(8, 16, 32)), ValueError, ["4 widths", "[8, 16, 32]"]),
    ("zero width", dict(enc_embed_dim=0), ValueError, ["enc_embed_dim must be a positive int", "0"]),
    ("odd feature dim", dict(feature_dim=15), ValueError, ["feature_dim must be even", "15"]),
    ("conf wanted without a mode", dict(conf_mode=None), ValueError, ["has_conf=True needs a conf_mode"]),
    ("unknown device", dict(device="tpu"), ValueError, ["'cpu', 'cuda'", "'tpu'"]),
]


@pytest.mark.parametrize("case, kwargs, exc, fragments", BUILD_CASES, ids=[c[0] for c in BUILD_CASES])
def test_bad_constructor_arguments(case, kwargs, exc, fragments):
    with pytest.raises(exc) as info:
        dust3r_dpt_head(**{**SMALL, **kwargs})
    for fragment in fragments:
        assert fragment in str(info.value), f"{case}: {fragment!r} not in {str(info.value)!r}"


def test_transposed_tokens_at_512x384_cannot_be_caught_by_shape():
    """N = 24 * 32 = 768 = the decoder width: (B, C, N) has the same shape as (B, N, C)."""
    head = dust3r_dpt_head(enc_embed_dim=768, dec_embed_dim=768, feature_dim=16, last_dim=8,
                           layer_dims=(8, 8, 16, 16), device="cpu")
    g = torch.Generator().manual_seed(0)
    tokens = [torch.randn(1, 768, 768, generator=g) for _ in range(13)]
    with torch.inference_mode():
        right = head(tokens, (384, 512))["pts3d"]
        wrong = head([t.transpose(1, 2) for t in tokens], (384, 512))["pts3d"]   # no error...
    assert wrong.shape == right.shape
    assert not torch.allclose(wrong, right)                                      # ...but wrong numbers
