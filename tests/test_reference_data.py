"""The recorded capstone numbers: re-derived from the functional reference, reproduced by dptlearn's head.

The recorded numbers were computed once, on one machine (scripts/make_reference_outputs.py). Re-computing
them on another CPU runs other convolution kernels (oneDNN/ATen pick AVX2, AVX-512 or AMX code with other
summation orders), so a float64 re-computation agrees to a few units of float64's resolution, not bit for
bit: measured 10-30 eps on an Intel Xeon with AMX (ATen's avx512, avx2 and default kernels alike) against
numbers recorded on an AMD EPYC.
"""
import pytest
import torch

EPS64 = torch.finfo(torch.float64).eps       # 2.2e-16
# Same functional maths, other kernels: each 3x3 conv sums up to 256*9 = 2304 products, whose reordering
# costs ~sqrt(2304) = 48 eps at worst-typical per layer, and the head's ~15 conv layers mostly do not add
# up in the same direction. 256 eps relative to the output's largest value is ~8x the largest error seen.
SAME_MATHS_OTHER_KERNELS = 256 * EPS64
# dptlearn's modules vs the functional reference: another code path as well (other op order, e.g.
# ConvTranspose vs conv_transpose2d, interpolate before/after add) on any CPU: 1e-12 = ~4500 eps.
OTHER_CODE_PATH = 1e-12

from dptlearn.course.reference_data import (MODEL, SIZES, dust3r_keys, dust3r_weights, reference_case,
                                            reference_tokens)
from dptlearn.dust3r import dust3r_dpt_head, load_dust3r_head_weights
from dust3r_reference import reference_output


def full_head(dtype=torch.float64):
    c, _ = dust3r_keys()
    head = dust3r_dpt_head(enc_embed_dim=c["enc_embed_dim"], dec_embed_dim=c["dec_embed_dim"],
                           dec_depth=c["dec_depth"], patch_size=c["patch_size"], feature_dim=c["feature_dim"],
                           last_dim=c["last_dim"], layer_dims=c["layer_dims"], device="cpu")
    return head.to(dtype)


def test_weights_have_every_recorded_key_and_shape_in_order():
    _, keys = dust3r_keys()
    sd = dust3r_weights()
    assert [(k, tuple(v.shape)) for k, v in sd.items()] == keys
    assert len(keys) == 68 and MODEL.endswith("512_dpt")
    for i in range(4):                                  # the aliases are the same tensor values
        assert torch.equal(sd[f"dpt.scratch.layer{i + 1}_rn.weight"], sd[f"dpt.scratch.layer_rn.{i}.weight"])


def test_weights_and_tokens_are_seeded():
    a, b = dust3r_weights(), dust3r_weights()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(dust3r_weights(seed=1)["dpt.head.4.weight"], a["dpt.head.4.weight"])
    assert torch.equal(reference_tokens((48, 80))[12], reference_tokens((48, 80))[12])


@pytest.mark.parametrize("name", sorted(SIZES))
def test_recorded_outputs_are_what_the_functional_reference_gives(name):
    case = reference_case(name)
    H, W = case["image_size"]
    assert case["pts3d"].shape == (1, H, W, 3) and case["conf"].shape == (1, H, W)
    assert (case["conf"] > 1).all()                     # conf_mode ('exp', 1, inf): 1 + e^c
    with torch.no_grad():
        again = reference_output(dust3r_weights(), case["tokens"], (H, W))
    for k in ("pts3d", "conf"):
        err = ((again[k] - case[k]).abs().max() / case[k].abs().max()).item()
        assert err <= SAME_MATHS_OTHER_KERNELS, (k, err / EPS64, "eps")


@pytest.mark.parametrize("name", sorted(SIZES))
def test_dptlearn_head_reproduces_the_recorded_numbers(name):
    case = reference_case(name)
    head = full_head()
    report = load_dust3r_head_weights(head, dust3r_weights())
    assert len(report.unused_dropped) == 4 and len(report.aliases_checked) == 4
    with torch.inference_mode():
        got = head(case["tokens"], case["image_size"])
    for k in ("pts3d", "conf"):
        err = ((got[k] - case[k]).abs().max() / case[k].abs().max()).item()
        assert err < OTHER_CODE_PATH, (k, err)
