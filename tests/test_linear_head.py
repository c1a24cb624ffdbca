"""DUSt3R's linear head (dptlearn/linear_head.py) against hand-computed shapes and closed forms.

The layout rule checked here is the one in DUSt3R's facts (shared/reference, section 9): the Linear's
output feature k*p*p + i*p + j of the token at grid cell (h, w) becomes channel k of pixel (h*p + i, w*p + j),
which is what torch's pixel_shuffle(p) does to the (B, K*p*p, nh, nw) map.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dptlearn.linear_head import LinearHead, dust3r_linear_head

INF = math.inf
LINEAR = ("linear", -INF, INF)


def test_dust3r_size_has_the_recorded_keys_shapes_and_parameter_count():
    head = dust3r_linear_head(device="cpu")
    shapes = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    assert shapes == {"proj.weight": (1024, 768), "proj.bias": (1024,)}       # (3 + 1) * 16 * 16 = 1024
    assert sum(p.numel() for p in head.parameters()) == 768 * 1024 + 1024 == 787_456


def test_output_shapes_at_512x384_and_for_a_small_head():
    head = dust3r_linear_head(device="cpu")
    out = head([torch.zeros(2, 24 * 32, 768)], (384, 512))                   # 384/16 x 512/16 = 24 x 32 tokens
    assert out["pts3d"].shape == (2, 384, 512, 3) and out["conf"].shape == (2, 384, 512)
    small = LinearHead(64, patch_size=8, has_conf=False)
    assert small.proj.out_features == 3 * 8 * 8
    assert small.raw(torch.zeros(1, 8 * 12, 64), (64, 96)).shape == (1, 3, 64, 96)
    assert set(small(torch.zeros(1, 96, 64), (64, 96))) == {"pts3d"}


def test_each_output_feature_lands_on_the_pixel_the_layout_rule_gives():
    p, K, nh, nw = 2, 4, 3, 5
    head = LinearHead(K * p * p, patch_size=p, depth_mode=LINEAR)
    with torch.no_grad():                                   # identity projection: raw = the token's own values
        head.proj.weight.copy_(torch.eye(K * p * p))
        head.proj.bias.zero_()
    tokens = torch.arange(2 * nh * nw * K * p * p, dtype=torch.float32).view(2, nh * nw, K * p * p)
    raw = head.raw(tokens, (nh * p, nw * p))                # (2, K, 6, 10)
    for b in range(2):
        for k in range(K):
            for r in range(nh * p):
                for c in range(nw * p):
                    want = tokens[b, (r // p) * nw + c // p, k * p * p + (r % p) * p + c % p]
                    assert raw[b, k, r, c] == want, (b, k, r, c)


def test_raw_map_equals_dust3rs_transpose_view_pixel_shuffle():
    torch.manual_seed(0)
    p, nh, nw, C = 4, 3, 2, 16
    head = LinearHead(C, patch_size=p)
    x = torch.randn(2, nh * nw, C)
    y = head.proj(x).transpose(1, 2).reshape(2, 4 * p * p, nh, nw)             # (B, K*p*p, nh, nw)
    assert torch.equal(head.raw(x, (nh * p, nw * p)), F.pixel_shuffle(y, p))  # same values moved, no arithmetic


def test_bias_only_head_paints_every_patch_alike_and_activates_in_closed_form():
    p = 2
    head = LinearHead(8, patch_size=p)                       # exp depth, exp confidence (DUSt3R's modes)
    bias = torch.tensor([3.0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0.5, 1.0, 0.0, -1.0])  # (K*p*p,) = x, y, z, conf planes
    with torch.no_grad():
        head.proj.weight.zero_()
        head.proj.bias.copy_(bias)
    out = head(torch.randn(1, 6, 8), (4, 6))                 # 2x3 tokens, any values: the weight is zero
    pts, conf = out["pts3d"][0], out["conf"][0]               # (4, 6, 3), (4, 6)
    # pixel (0, 0) of a patch: raw xyz (3, 0, 0), length 3 -> point (e^3 - 1, 0, 0); conf 1 + e^0.5
    # pixel (0, 1): raw (0, 4, 0) -> (0, e^4 - 1, 0); conf 1 + e^1.  pixel (1, *): raw 0 -> point 0
    for r in range(4):
        for c in range(6):
            i, j = r % p, c % p
            want = {(0, 0): [math.expm1(3), 0.0, 0.0], (0, 1): [0.0, math.expm1(4), 0.0]}.get((i, j), [0.0, 0.0, 0.0])
            assert torch.allclose(pts[r, c], torch.tensor(want), rtol=4 * 2 ** -23, atol=0)  # a few float32 roundings
            assert math.isclose(conf[r, c].item(), 1 + math.exp(bias[12 + i * p + j].item()), rel_tol=4 * 2 ** -23)


def test_a_token_changes_only_its_own_patch():
    torch.manual_seed(0)
    p, nh, nw = 4, 3, 4
    head = LinearHead(8, patch_size=p)
    x = torch.randn(1, nh * nw, 8)
    y = x.clone()
    y[0, 6] += 1.0                                            # token 6 = grid cell (1, 2)
    changed = (head.raw(x, (nh * p, nw * p)) != head.raw(y, (nh * p, nw * p))).any(1)[0]   # (12, 16)
    want = torch.zeros(nh * p, nw * p, dtype=torch.bool)
    want[p:2 * p, 2 * p:3 * p] = True
    assert torch.equal(changed, want)


def test_reads_only_the_last_layer_of_a_token_list():
    torch.manual_seed(0)
    head = LinearHead(8, patch_size=2)
    last = torch.randn(1, 6, 8)
    a = head.raw([torch.randn(1, 6, 8), torch.randn(1, 6, 3), last], (4, 6))
    assert torch.equal(a, head.raw(last, (4, 6)))


def test_bad_inputs_name_what_was_expected():
    head = LinearHead(8, patch_size=2)
    with pytest.raises(ValueError, match=r"expected tokens \(B, N, C\) = \(B, 6, 8\).*got \(1, 5, 8\)"):
        head.raw(torch.zeros(1, 5, 8), (4, 6))
    with pytest.raises(ValueError, match=r"got \(1, 6, 7\)"):
        head.raw(torch.zeros(1, 6, 7), (4, 6))
    with pytest.raises(ValueError, match="multiple of the patch size 2"):
        head.raw(torch.zeros(1, 6, 8), (5, 6))
    with pytest.raises(ValueError, match="patch_size must be a positive int"):
        LinearHead(8, patch_size=0)


def test_layers_reads_the_named_layers_concatenated_in_that_order():
    torch.manual_seed(0)
    head = LinearHead(8 + 3, patch_size=2, layers=(0, 2))        # DINOv2's "lin. 4" layout, with two layers
    t0, t1, t2 = torch.randn(1, 6, 8), torch.randn(1, 6, 5), torch.randn(1, 6, 3)
    plain = LinearHead(8 + 3, patch_size=2)
    plain.load_state_dict(head.state_dict())                       # the same keys: proj.weight (16, 11), proj.bias
    want = plain.raw(torch.cat([t0, t2], dim=-1), (4, 6))          # the concatenation, passed as one (B, N, C)
    assert torch.equal(head.raw([t0, t1, t2], (4, 6)), want)      # the same computation repeated
    flipped = LinearHead(3 + 8, patch_size=2, layers=(2, 0))
    with pytest.raises(ValueError, match=r"= \(B, 6, 11\).*got \(1, 6, 10\)"):
        head.raw([t0, t1, t1[..., :2]], (4, 6))                    # layer 2 of width 2, not 3
    with pytest.raises(ValueError, match=r"expected a token list with entries \(2, 0\), got a list of 2"):
        flipped.raw([t0, t1], (4, 6))
    with pytest.raises(ValueError, match="expected a token list with entries .*got Tensor"):
        head.raw(t0, (4, 6))
    with pytest.raises(ValueError, match="non-empty sequence of token-list indices, got \\(\\)"):
        LinearHead(8, patch_size=2, layers=())
    assert sum(p.numel() for p in LinearHead(4 * 64, 8, layers=(0, 5, 7, 10)).parameters()) == 256 * 256 + 256
