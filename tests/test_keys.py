"""The DUSt3R key layout: every key and shape of the reference list, in order, both configs."""
import json
from pathlib import Path

import pytest
import torch

from dptlearn.dust3r import dust3r_dpt_head, dust3r_state_dict, expected_dust3r_keys, load_dust3r_head_weights

REFERENCE = json.loads((Path(__file__).parent / "data" / "dust3r_dpt_head_keys.json").read_text())
CONFIGS = {c["name"]: c for c in REFERENCE["configs"]}


def build(config):
    c = config["config"]
    return dust3r_dpt_head(enc_embed_dim=c["enc_embed_dim"], dec_embed_dim=c["dec_embed_dim"],
                           dec_depth=c["dec_depth"], patch_size=c["patch_size"], has_conf=c["has_conf"],
                           feature_dim=c["feature_dim"], last_dim=c["last_dim"], layer_dims=c["layer_dims"],
                           device="cpu")


@pytest.mark.parametrize("name", list(CONFIGS))
def test_expected_keys_equal_reference_list_in_order(name):
    config = CONFIGS[name]
    head = build(config)
    got = [(k, list(s)) for k, s in expected_dust3r_keys(head).items()]
    assert got == [(k, s) for k, s in config["keys"]]
    assert len(got) == config["n_keys"] == 68


@pytest.mark.parametrize("name", list(CONFIGS))
def test_exported_state_dict_matches_reference_keys_shapes_and_counts(name):
    config = CONFIGS[name]
    sd = dust3r_state_dict(build(config))
    assert [(k, list(v.shape)) for k, v in sd.items()] == [(k, s) for k, s in config["keys"]]
    assert sum(v.numel() for v in sd.values()) == config["n_values_in_state_dict_counting_aliases"]
    aliases = {a for a, _ in config["aliased_keys"]}
    assert sum(v.numel() for k, v in sd.items() if k not in aliases) == config["n_parameters_unique"]
    for key in config["keys_never_used_in_forward"]:
        assert torch.count_nonzero(sd[key]) == 0  # written as zeros: DUSt3R never reads them


@pytest.mark.parametrize("name", list(CONFIGS))
def test_clean_head_has_no_duplicates_and_no_dead_unit(name):
    config = CONFIGS[name]
    head = build(config)
    n_ours = sum(p.numel() for p in head.parameters())
    unused = sum(torch.Size(s).numel() for k, s in config["keys"] if k in config["keys_never_used_in_forward"])
    assert n_ours == config["n_parameters_unique"] - unused
    assert len(head.state_dict()) == config["n_keys"] - 4 - 4  # minus 4 aliases, minus the 4 dead tensors
    assert head.dpt.fusion[3].skip_unit is None


def test_loader_accepts_the_exact_reference_key_set_with_and_without_aliases():
    config = CONFIGS["small"]
    head = build(config)
    g = torch.Generator().manual_seed(0)
    sd = {k: torch.randn(s, generator=g) for k, s in config["keys"]}
    for alias, twin in config["aliased_keys"]:
        sd[alias] = sd[twin].clone()
    report = load_dust3r_head_weights(head, sd)
    assert sorted(report.aliases_checked) == sorted(a for a, _ in config["aliased_keys"])
    assert sorted(report.unused_dropped) == sorted(config["keys_never_used_in_forward"])
    assert torch.equal(head.dpt.reassemble.project[2].weight, sd["dpt.scratch.layer_rn.2.weight"])
    assert torch.equal(head.dpt.head.predict.bias, sd["dpt.head.4.bias"])
    assert torch.equal(head.dpt.reassemble.branches[3][1].weight, sd["dpt.act_postprocess.3.1.weight"])
    assert torch.equal(head.dpt.fusion[0].skip_unit.conv2.weight,
                      sd["dpt.scratch.refinenet1.resConfUnit1.conv2.weight"])
    without = {k: v for k, v in sd.items() if not any(k == a for a, _ in config["aliased_keys"])}
    assert load_dust3r_head_weights(build(config), without).aliases_checked == []
