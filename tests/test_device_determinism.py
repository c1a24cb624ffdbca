"""The device switch, seeded determinism, and optimize_for_inference's equivalence to the plain head on each device."""
import pytest
import torch

from dptlearn import get_device
from dptlearn.device import ENV_VAR
from dptlearn.dust3r import dust3r_dpt_head
from dptlearn.fast import optimize_for_inference

SMALL = dict(enc_embed_dim=48, dec_embed_dim=32, feature_dim=16, last_dim=8, layer_dims=(8, 8, 16, 16))


def test_device_switch_order(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert get_device() == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setenv(ENV_VAR, "cpu")
    assert get_device() == torch.device("cpu")
    assert get_device("cpu") == torch.device("cpu")           # the argument wins over the variable
    monkeypatch.setenv(ENV_VAR, "banana")
    with pytest.raises(ValueError, match=r"\$DPTLEARN_DEVICE.*'banana'"):
        get_device()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_asking_for_missing_cuda_is_an_error(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "cuda")
    with pytest.raises(ValueError, match="CUDA is not available"):
        get_device()


def tokens(hw, device, seed=0, batch=2):
    g = torch.Generator().manual_seed(seed)
    n = (hw[0] // 16) * (hw[1] // 16)
    return [torch.randn(batch, n, 48 if i == 0 else 32, generator=g).to(device) for i in range(13)]


def test_head_lands_on_the_requested_device(device):
    head = dust3r_dpt_head(**SMALL, device=device)
    assert all(p.device.type == device.type for p in head.parameters())
    with torch.inference_mode():
        out = head(tokens((64, 96), device), (64, 96))
    assert out["pts3d"].device.type == device.type and out["pts3d"].shape == (2, 64, 96, 3)


def test_seeded_builds_and_forwards_are_identical(device):
    torch.manual_seed(123)
    a = dust3r_dpt_head(**SMALL, device=device)
    torch.manual_seed(123)
    b = dust3r_dpt_head(**SMALL, device=device)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    x = tokens((336, 512), device)
    with torch.inference_mode():
        assert torch.equal(a(x, (336, 512))["pts3d"], a(x, (336, 512))["pts3d"])
        assert torch.equal(a(x, (336, 512))["conf"], b(x, (336, 512))["conf"])


@pytest.mark.parametrize("hw", [(64, 96), (336, 512)])
def test_optimised_head_matches_the_plain_head_to_1e5_relative_on_every_device(device, hw):
    torch.manual_seed(0)
    head = dust3r_dpt_head(**SMALL, device=device)
    opt = optimize_for_inference(head)
    x = tokens(hw, device)
    with torch.inference_mode():
        got, want = opt(x, hw), head(x, hw)
    for k in ("pts3d", "conf"):
        assert got[k].device.type == device.type
        err = ((got[k] - want[k]).abs().max() / want[k].abs().max()).item()
        assert err < 1e-5, (k, err)


def test_the_plain_head_trains_with_autograd():
    head = dust3r_dpt_head(**SMALL, device="cpu").train()
    out = head(tokens((64, 96), "cpu"), (64, 96))
    out["pts3d"].sum().backward()
    assert head.dpt.head.predict.weight.grad is not None
    assert head.dpt.fusion[0].skip_unit.conv1.weight.grad.abs().sum() > 0
