"""dptlearn's DUSt3R head against an independent functional re-statement of the facts file."""
import json
from pathlib import Path

import pytest
import torch

from dptlearn.dust3r import dust3r_dpt_head, dust3r_state_dict, load_dust3r_head_weights
from _helpers import rel_err
from dust3r_reference import random_dust3r_state_dict, reference_output

CONFIGS = {c["name"]: c for c in json.loads(
    (Path(__file__).parent / "data" / "dust3r_dpt_head_keys.json").read_text())["configs"]}
SMALL = CONFIGS["small"]
SIZES = [(224, 224), (384, 512), (336, 512), (512, 384), (64, 96), (160, 512)]


def small_head(device="cpu", dtype=torch.float32):
    c = SMALL["config"]
    head = dust3r_dpt_head(enc_embed_dim=c["enc_embed_dim"], dec_embed_dim=c["dec_embed_dim"],
                           feature_dim=c["feature_dim"], last_dim=c["last_dim"], layer_dims=c["layer_dims"],
                           device=device)
    return head.to(dtype)


def random_tokens(size, enc=192, dec=128, batch=2, seed=1, dtype=torch.float64, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    n = (size[0] // 16) * (size[1] // 16)
    return [torch.randn(batch, n, enc if i == 0 else dec, generator=g, dtype=dtype).to(device) for i in range(13)]


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_float64_matches_reference_exactly_in_both_paths(size):
    sd = random_dust3r_state_dict(SMALL["keys"], seed=0)
    head = small_head(dtype=torch.float64)
    load_dust3r_head_weights(head, sd)
    batch = 2 if size[0] * size[1] <= 224 * 224 else 1
    tokens = random_tokens(size, batch=batch)
    want = reference_output(sd, tokens, size)
    got = head(tokens, size)                       # autograd on: reference order
    with torch.inference_mode():
        fast = head(tokens, size)                  # eval + inference mode: fast path
    assert got["pts3d"].shape == (batch, *size, 3) and got["conf"].shape == (batch, *size)
    for out in (got, fast):
        assert rel_err(out["pts3d"], want["pts3d"]) < 1e-12
        assert rel_err(out["conf"], want["conf"]) < 1e-12
    assert (got["conf"] > 1).all()


@pytest.mark.parametrize("size", [(384, 512), (336, 512)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_float32_matches_reference_to_round_off(size, device):
    sd = random_dust3r_state_dict(SMALL["keys"], seed=3)
    head = small_head(device=device)
    load_dust3r_head_weights(head, {k: v.float() for k, v in sd.items()})
    tokens = random_tokens(size, batch=1)
    want = reference_output(sd, tokens, size)      # float64 on the CPU
    with torch.inference_mode():
        got = head([t.float().to(device) for t in tokens], size)
    assert rel_err(got["pts3d"].double().cpu(), want["pts3d"]) < 1e-5
    assert rel_err(got["conf"].double().cpu(), want["conf"]) < 1e-5


def test_full_dust3r_config_matches_reference_at_224():
    full = CONFIGS["DUSt3R_ViTLarge_BaseDecoder_512_dpt"]
    sd = random_dust3r_state_dict(full["keys"], seed=5, dtype=torch.float32)
    head = dust3r_dpt_head(device="cpu")
    load_dust3r_head_weights(head, sd)
    tokens = random_tokens((224, 224), enc=1024, dec=768, batch=1, dtype=torch.float32)
    with torch.inference_mode():
        got = head(tokens, (224, 224))
        want = reference_output(sd, tokens, (224, 224))
    assert rel_err(got["pts3d"], want["pts3d"]) < 1e-4
    assert rel_err(got["conf"], want["conf"]) < 1e-4


def test_known_single_mistakes_move_the_output_far_beyond_round_off():
    """The comparison is sensitive: one wrong hook, one transposed grid are caught by a wide margin."""
    sd = random_dust3r_state_dict(SMALL["keys"], seed=0)
    head = small_head(dtype=torch.float64)
    load_dust3r_head_weights(head, sd)
    tokens = random_tokens((64, 96))
    want = reference_output(sd, tokens, (64, 96))["pts3d"]
    shifted = tokens[:11] + [tokens[12], tokens[11]]        # decoder block 11 where 12 belongs
    assert rel_err(head(shifted, (64, 96))["pts3d"], want) > 1e-3


def test_export_load_round_trip_with_prefixes_and_whole_checkpoints():
    torch.manual_seed(0)
    src = small_head()
    sd = dust3r_state_dict(src)
    tokens = [t.float() for t in random_tokens((64, 96))]
    want = src(tokens, (64, 96))["pts3d"]
    for state in (sd,
                  {"downstream_head1." + k: v for k, v in sd.items()},
                  {"model": {**{"downstream_head1." + k: v for k, v in sd.items()},
                             **{"downstream_head2." + k: v * 0 for k, v in sd.items()},
                             "enc_norm.weight": torch.ones(3)}}):
        dst = small_head()
        load_dust3r_head_weights(dst, state, which=1 if "model" in state else None)
        assert torch.equal(dst(tokens, (64, 96))["pts3d"], want)


def test_two_heads_need_which():
    sd = dust3r_state_dict(small_head())
    both = {**{"downstream_head1." + k: v for k, v in sd.items()}, **{"downstream_head2." + k: v for k, v in sd.items()}}
    with pytest.raises(ValueError, match="several heads.*which=1 or which=2"):
        load_dust3r_head_weights(small_head(), both)
    with pytest.raises(KeyError, match="downstream_head3"):
        load_dust3r_head_weights(small_head(), both, which=3)


def _snapshot(head):
    return {k: v.clone() for k, v in head.state_dict().items()}


@pytest.mark.parametrize("problem, expected", [
    ("missing", r"missing key 'dpt.head.4.bias' \(expected shape \[4\]\)"),
    ("unexpected", r"unexpected key 'dpt.head.6.weight'"),
    ("misshaped", r"key 'dpt.act_postprocess.0.1.weight': expected shape \[16, 16, 4, 4\], got \[16, 16, 2, 2\]"),
    ("alias", r"aliased keys 'dpt.scratch.layer2_rn.weight' and 'dpt.scratch.layer_rn.1.weight'.*differ"),
    ("nodpt", r"unexpected key 'head.0.weight' \(keys must start with 'dpt.'"),
])
def test_bad_state_dicts_name_the_key_and_change_nothing(problem, expected):
    sd = dust3r_state_dict(small_head())
    if problem == "missing":
        del sd["dpt.head.4.bias"]
    elif problem == "unexpected":
        sd["dpt.head.6.weight"] = torch.zeros(1)
    elif problem == "misshaped":
        sd["dpt.act_postprocess.0.1.weight"] = torch.zeros(16, 16, 2, 2)
    elif problem == "alias":
        sd["dpt.scratch.layer2_rn.weight"] = sd["dpt.scratch.layer2_rn.weight"] + 1
    elif problem == "nodpt":
        sd["head.0.weight"] = sd.pop("dpt.head.0.weight")
    head = small_head()
    before = _snapshot(head)
    with pytest.raises((ValueError, KeyError), match=expected):
        load_dust3r_head_weights(head, sd)
    after = head.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # nothing half-loaded
