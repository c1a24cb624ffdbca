"""fast.optimize_for_inference: a new, eval-only head with the plain head's numbers; the plain head untouched.

Tolerance: the optimised head rounds in another order (channels-last convs, the 1x1 conv before the
upsample, fused kernels), so it may differ from the plain head by float32 round-off: a few eps per
layer over ~25 layers. The issue's bound, 1e-5 relative (``max |a - b| / max |b|``, about 80 eps),
leaves room for that and fails on any real change (a missed ReLU or a wrong size is >= 1e-2).
"""
import copy

import pytest
import torch
import torch.nn.functional as F

from dptlearn import fast
from dptlearn.depth_anything import depth_anything_v2_head
from dptlearn.dpt_large import dpt_large_head
from dptlearn.dust3r import dust3r_dpt_head
from dptlearn.export import example_tokens, to_onnx
from dptlearn.fusion import FusionBlock
from _helpers import rel_err, seeded_

SMALL = dict(enc_embed_dim=48, dec_embed_dim=32, feature_dim=16, last_dim=8, layer_dims=(8, 8, 16, 16))
FAMILY = dict(feature_dim=16, layer_dims=(8, 16, 24, 32), hidden_size=32, last_dim=8)
BOUND = 1e-5


def outputs(out):
    return out if isinstance(out, dict) else {"depth": out}


CASES = {   # name -> (build, image sizes): even and odd patch grids for each answer to odd grids. Seeded
    # N(0, 0.1) weights for the narrow heads; DUSt3R's widths keep torch's init (N(0, 0.1) would overflow exp)
    "dust3r-small": (lambda: seeded_(dust3r_dpt_head(**SMALL, device="cpu")), [(64, 96), (336, 512)]),
    "dust3r-widths": (lambda: dust3r_dpt_head(device="cpu"), [(48, 80)]),
    "dpt-large": (lambda: seeded_(dpt_large_head(**FAMILY, device="cpu")), [(64, 96), (48, 80)]),  # resize_skip
    "depth-anything": (lambda: seeded_(depth_anything_v2_head("vits", **FAMILY, device="cpu")), [(56, 84), (70, 98)]),
    "depth-anything-metric": (lambda: seeded_(depth_anything_v2_head("vits", "metric", 20.0, **FAMILY, device="cpu")),
                              [(518, 70)]),                                             # 37 rows: odd, as at 518 px
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_optimised_head_matches_the_plain_head_to_1e5_relative(name):
    build, sizes = CASES[name]
    torch.manual_seed(0)
    head = build()
    opt = fast.optimize_for_inference(head)
    for hw in sizes:
        x = example_tokens(head, hw, batch=2)
        with torch.inference_mode():
            want, got = outputs(head(x, hw)), outputs(opt(x, hw))
        for k in want:
            assert got[k].shape == want[k].shape and got[k].dtype == torch.float32
            assert want[k].isfinite().all() and want[k].abs().max() > 0      # a comparison that can fail
            err = rel_err(got[k], want[k])
            assert err < BOUND, (name, hw, k, err)


def test_the_plain_head_is_not_changed_and_a_new_module_is_returned():
    torch.manual_seed(0)
    head = dust3r_dpt_head(**SMALL, device="cpu").train()
    before = copy.deepcopy(head.state_dict())
    opt = fast.optimize_for_inference(head, torch.bfloat16)
    assert opt is not head and opt.dpt is not head.dpt
    assert not any(p is q for p in head.parameters() for q in opt.parameters())
    assert head.training and all(p.requires_grad and p.dtype == torch.float32 for p in head.parameters())
    assert all(type(m) not in fast.SWAPS.values() for m in head.modules()) and not fast.is_optimized(head)
    assert all(p.is_contiguous() for p in head.parameters())
    after = head.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert opt.state_dict().keys() == after.keys()          # the same layout: a state dict loads into either


def test_what_the_transform_swaps_and_converts():
    opt = fast.optimize_for_inference(dust3r_dpt_head(**SMALL, device="cpu"))
    dpt = opt.dpt
    assert all(type(b) is fast.FastFusionBlock for b in dpt.fusion)
    assert type(dpt.fusion[0].unit) is fast.FastResidualConvUnit and type(dpt.head) is fast.FastRegressionHead
    convs = [m for m in opt.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs if m.weight.ndim == 4)
    assert not opt.training and not any(p.requires_grad for p in opt.parameters())


def test_bfloat16_where_asked():
    opt = fast.optimize_for_inference(dust3r_dpt_head(**SMALL, device="cpu"), dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in opt.parameters())
    x = [t.to(torch.bfloat16) for t in example_tokens(opt, (64, 96))]
    with torch.inference_mode():
        assert opt(x, (64, 96))["pts3d"].dtype == torch.bfloat16
    with pytest.raises(TypeError, match="floating torch.dtype"):
        fast.optimize_for_inference(dust3r_dpt_head(**SMALL, device="cpu"), dtype=torch.int8)


def test_the_optimised_head_is_eval_only():
    head = dust3r_dpt_head(**SMALL, device="cpu")
    opt = fast.optimize_for_inference(head)
    with pytest.raises(RuntimeError, match="eval-only: train the plain head"):
        opt.train()
    opt.eval()                                                       # back to a usable inference head
    assert not any(m.training for m in opt.modules())
    x = example_tokens(head, (64, 96))
    out = opt(x, (64, 96))                                           # autograd on, nothing to differentiate
    assert not out["pts3d"].requires_grad
    with pytest.raises(RuntimeError, match="computes no gradients"):
        opt([t.requires_grad_() for t in x], (64, 96))
    with pytest.raises(ValueError, match="already optimised"):
        fast.optimize_for_inference(opt)
    with pytest.raises(ValueError, match="optimize_for_inference.*export the plain head"):
        to_onnx(opt, "unused.onnx", (64, 96))


def test_plain_fusion_block_hooks_see_the_reference_order_under_inference_mode_and_eval():
    """The lectures' picture: x2 first, then the 1x1 conv at the doubled size, whatever the mode."""
    head = dust3r_dpt_head(**SMALL, device="cpu").eval()
    block = head.dpt.fusion[1]
    seen = {}
    handles = [getattr(block, n).register_forward_hook(lambda m, a, o, n=n: seen.__setitem__(n, (a[0].shape, o.shape)))
               for n in ("upsample", "out_conv")]
    with torch.inference_mode():
        head(example_tokens(head, (64, 96)), (64, 96))              # 4x6 patches: block 1 runs at 1/8 -> 1/4
    for h in handles:
        h.remove()
    D = SMALL["feature_dim"]
    assert seen == {"upsample": ((1, D, 8, 12), (1, D, 16, 24)), "out_conv": ((1, D, 16, 24), (1, D, 16, 24))}


def test_the_optimised_block_runs_the_commuted_order():
    block = seeded_(FusionBlock(8), scale=0.3)
    opt = fast.optimize_for_inference(block)
    seen = {}
    handle = opt.out_conv.register_forward_hook(lambda m, a, o: seen.__setitem__("out_conv", a[0].shape))
    x, skip = torch.randn(1, 8, 5, 7), torch.randn(1, 8, 5, 7)
    with torch.inference_mode():
        got = opt(x, skip)
        small = opt(x[:, :, :3], skip[:, :, :3], size=(5, 9))       # Depth Anything's keyword size
        want_small = block(x[:, :, :3], skip[:, :, :3], size=(5, 9))
    handle.remove()
    assert seen["out_conv"] == (1, 8, 3, 7)                          # before the upsample
    assert rel_err(got, block(x, skip).detach()) < BOUND and small.shape == (1, 8, 5, 9)
    assert rel_err(small, want_small) < BOUND


@pytest.mark.skipif(torch.float32 not in fast.FUSED_DTYPES, reason="oneDNN's fused kernels are missing here")
def test_float32_takes_the_fused_kernels(monkeypatch):
    opt = fast.optimize_for_inference(dust3r_dpt_head(**SMALL, device="cpu"))
    seen, kernel = [], fast._POINTWISE
    monkeypatch.setattr(fast, "_POINTWISE", lambda x, *a: seen.append(x.dtype) or kernel(x, *a))
    with torch.inference_mode():
        opt(example_tokens(opt, (64, 96)), (64, 96))
    assert seen == [torch.float32] * 15          # 7 residual units x (conv+ReLU, conv+add) + the head's refine


def test_a_hooked_conv_is_not_fused_and_its_hook_sees_the_call():
    opt = fast.optimize_for_inference(dust3r_dpt_head(**SMALL, device="cpu"))
    conv = opt.dpt.fusion[0].unit.conv1
    seen = []
    handle = conv.register_forward_hook(lambda m, args, out: seen.append((args[0].clone(), out.clone())))
    with torch.inference_mode():
        opt(example_tokens(opt, (64, 96)), (64, 96))
    handle.remove()
    assert len(seen) == 1
    x, out = seen[0]
    torch.testing.assert_close(out, F.conv2d(x, conv.weight, conv.bias, padding=1))
