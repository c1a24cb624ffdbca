"""The device switch, seeded determinism, and the fast path's equivalence to the reference order."""
import pytest
import torch

from dptlearn import get_device
from dptlearn.device import ENV_VAR
from dptlearn.dust3r import dust3r_dpt_head

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
def test_fast_path_matches_reference_order_to_1e5_relative(device, hw):
    torch.manual_seed(0)
    head = dust3r_dpt_head(**SMALL, device=device)
    x = tokens(hw, device)
    with torch.inference_mode():
        fast = head(x, hw)
        head.dpt.fast_inference = False
        slow = head(x, hw)
    for k in ("pts3d", "conf"):
        err = ((fast[k] - slow[k]).abs().max() / slow[k].abs().max()).item()
        assert err < 1e-5, (k, err)


def test_training_mode_and_autograd_take_the_reference_path():
    head = dust3r_dpt_head(**SMALL, device="cpu")
    assert head.dpt.use_fast_path() is False                  # grad enabled
    with torch.no_grad():
        assert head.dpt.use_fast_path() is True               # eval + no grad
        head.train()
        assert head.dpt.use_fast_path() is False              # training mode
    x = tokens((64, 96), "cpu")
    head.train()
    out = head(x, (64, 96))
    out["pts3d"].sum().backward()
    assert head.dpt.head.predict.weight.grad is not None
    assert head.dpt.fusion[0].skip_unit.conv1.weight.grad.abs().sum() > 0


def test_hooks_see_every_conv_call_on_the_fast_path():
    """Fused kernels bypass a conv's module call, so a conv with a hook must not be fused."""
    torch.manual_seed(0)
    head = dust3r_dpt_head(**SMALL, device="cpu")
    conv = head.dpt.fusion[0].unit.conv1
    seen = []
    handle = conv.register_forward_hook(lambda m, args, out: seen.append((args[0].clone(), out.clone())))
    try:
        with torch.inference_mode():
            head(tokens((64, 96), "cpu"), (64, 96))
    finally:
        handle.remove()
    assert len(seen) == 1
    x, out = seen[0]
    with torch.no_grad():
        torch.testing.assert_close(out, torch.nn.functional.conv2d(x, conv.weight, conv.bias, padding=1))
