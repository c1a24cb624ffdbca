"""Closed-form checks of each stage, against values worked out by hand."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dptlearn.fusion import FusionBlock, ResidualConvUnit, Upsample, crop_to, fuse_pyramid
from dptlearn.grid import grid_to_tokens, patch_grid, tokens_to_grid
from dptlearn.head import RegressionHead
from dptlearn.postprocess import conf_activation, depth_activation, postprocess
from dptlearn.reassemble import Reassemble, ReassembleBranch
from dptlearn.tokens import DPT_VIT_B_HOOKS, Readout, capture_block_outputs, dust3r_hook_indices, select_hooked_tokens

INF = math.inf


def identity_conv_(conv: nn.Conv2d):
    """Make a square conv the identity map (centre tap 1 on the diagonal, zero bias)."""
    with torch.no_grad():
        conv.weight.zero_()
        k = conv.kernel_size[0] // 2
        for c in range(conv.out_channels):
            conv.weight[c, c, k, k] = 1.0
        if conv.bias is not None:
            conv.bias.zero_()
    return conv


# ---------------------------------------------------------------- hooks, readout, grid

@pytest.mark.parametrize("depth, hooks", [(12, [0, 6, 9, 12]), (10, [0, 5, 7, 10]), (16, [0, 8, 12, 16]),
                                          (13, [0, 6, 9, 13])])
def test_dust3r_hooks(depth, hooks):
    assert dust3r_hook_indices(depth) == hooks


def test_dust3r_rejects_the_walkthroughs_eight_block_decoder():
    with pytest.raises(ValueError, match="deeper than 9 blocks.*dec_depth=8"):
        dust3r_hook_indices(8)   # [0, 4, 6, 8] is CroCo's 8-block decoder, which DUSt3R rejects
    assert DPT_VIT_B_HOOKS == (2, 5, 8, 11)


def test_select_hooked_tokens_picks_by_index():
    layers = [torch.full((1, 2, 3), float(i)) for i in range(13)]
    picked = select_hooked_tokens(layers, [0, 6, 9, 12])
    assert [t[0, 0, 0].item() for t in picked] == [0, 6, 9, 12]


def test_readout_modes_closed_form():
    x = torch.tensor([[[10.0, 20.0], [1.0, 2.0], [3.0, 4.0]]])       # (1, 1 + 2, 2): CLS first
    assert torch.equal(Readout("ignore", 2)(x), x[:, 1:])
    assert torch.equal(Readout("add", 2)(x), torch.tensor([[[11.0, 22.0], [13.0, 24.0]]]))
    proj = Readout("project", 2)
    with torch.no_grad():
        proj.project[0].weight.copy_(torch.tensor([[1.0, 0, 1, 0], [0, 1, 0, 1]]))  # patch + readout
        proj.project[0].bias.zero_()
    want = torch.nn.functional.gelu(torch.tensor([[[11.0, 22.0], [13.0, 24.0]]]))
    torch.testing.assert_close(proj(x), want)
    two = torch.tensor([[[2.0, 0.0], [4.0, 2.0], [1.0, 1.0]]])          # 2 prefix tokens: mean (3, 1)
    assert torch.equal(Readout("add", 2, n_prefix=2)(two), torch.tensor([[[4.0, 2.0]]]))


def test_tokens_are_row_major_on_the_grid():
    nh, nw = 3, 5
    tokens = torch.arange(nh * nw, dtype=torch.float32).view(1, nh * nw, 1).repeat(2, 1, 4)  # (2, 15, 4)
    grid = tokens_to_grid(tokens, nh, nw)
    assert grid.shape == (2, 4, 3, 5)
    for r in range(nh):
        for c in range(nw):
            assert grid[1, 3, r, c].item() == r * nw + c    # token r*nw + c sits at row r, column c
    assert torch.equal(grid_to_tokens(grid), tokens)


def test_patch_grid():
    assert patch_grid((384, 512), 16) == (24, 32)
    assert patch_grid((336, 512), 16) == (21, 32)
    assert patch_grid((224, 224), 14) == (16, 16)


def test_capture_block_outputs_removes_its_hooks_even_on_error():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    with capture_block_outputs(model, ["0", "2"]) as out:
        model(torch.ones(5, 3))
    assert out["0"].shape == (5, 4) and out["2"].shape == (5, 2)
    with pytest.raises(RuntimeError):
        with capture_block_outputs(model, ["1"]):
            model(torch.ones(5, 7))                 # wrong width: fails inside the block
    assert all(not m._forward_hooks for m in model.modules())


# ---------------------------------------------------------------- reassemble

@pytest.mark.parametrize("factor, nh, nw, want", [(4, 3, 5, (12, 20)), (2, 3, 5, (6, 10)), (1, 3, 5, (3, 5)),
                                                  (0.5, 24, 32, (12, 16)), (0.5, 21, 32, (11, 16)),
                                                  (0.5, 7, 7, (4, 4))])
def test_reassemble_output_sizes(factor, nh, nw, want):
    branch = ReassembleBranch(8, 6, factor)
    out = branch(torch.zeros(2, 8, nh, nw))
    assert out.shape == (2, 6, *want)           # x1/2: floor((n + 2 - 3) / 2) + 1 = ceil(n / 2)
    assert len(branch) == (1 if factor == 1 else 2)


def test_transposed_conv_x4_paints_each_token_into_a_4x4_block():
    branch = ReassembleBranch(1, 1, 4)
    with torch.no_grad():
        branch[0].weight.fill_(1.0), branch[0].bias.zero_()
        branch[1].weight.fill_(1.0), branch[1].bias.zero_()
    grid = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])              # (1, 1, 2, 2)
    out = branch(grid)                                             # (1, 1, 8, 8)
    want = grid.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)
    assert torch.equal(out, want)


def test_unknown_reassemble_factor():
    with pytest.raises(ValueError, match=r"one of \(4, 2, 1, 0.5\), got 3"):
        ReassembleBranch(4, 4, 3)


# ---------------------------------------------------------------- fusion

def test_zero_residual_unit_is_identity():
    rcu = ResidualConvUnit(4)
    with torch.no_grad():
        rcu.conv2.weight.zero_(), rcu.conv2.bias.zero_()
    x = torch.randn(2, 4, 5, 6)
    assert torch.equal(rcu(x), x)


def test_residual_unit_is_pre_activation_and_keeps_its_input():
    rcu = ResidualConvUnit(3)
    identity_conv_(rcu.conv1), identity_conv_(rcu.conv2)
    x = torch.tensor([-2.0, -0.5, 0.0, 1.5]).view(1, 1, 2, 2).repeat(1, 3, 1, 1)
    x_before = x.clone()
    out = rcu(x)
    assert torch.equal(out, x_before + x_before.clamp(min=0))   # x + relu(relu(x)); post-act would differ
    assert torch.equal(x, x_before)                              # not modified in place


def test_upsample_align_corners_true_closed_form():
    x = torch.tensor([[[[0.0, 3.0], [6.0, 9.0]]]])               # (1, 1, 2, 2)
    out = Upsample()(x)                                          # (1, 1, 4, 4): samples at 0, 1/3, 2/3, 1
    want = torch.tensor([[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7], [6, 7, 8, 9]], dtype=torch.float32)
    torch.testing.assert_close(out[0, 0], want)
    assert out.shape == (1, 1, 4, 4)
    torch.testing.assert_close(F.interpolate(x, size=(4, 4), mode="bilinear", align_corners=True), out)


def test_fusion_block_with_identity_units_is_upsampled_sum():
    block = FusionBlock(2)
    for unit in (block.skip_unit, block.unit):
        with torch.no_grad():
            unit.conv2.weight.zero_(), unit.conv2.bias.zero_()
    identity_conv_(block.out_conv)
    x, skip = torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4)
    want = Upsample()(x + skip)
    torch.testing.assert_close(block(x, skip), want)
    with torch.inference_mode():                   # the same reference order in every mode
        torch.testing.assert_close(block.eval()(x, skip), want)
    assert block(x, skip).shape == (1, 2, 6, 8)


@pytest.mark.parametrize("mode", ["train", "eval + no_grad", "eval + inference_mode"])
def test_fusion_block_hooks_see_the_reference_order_in_every_mode(mode):
    """upsample x2 first, then the 1x1 conv at the doubled size: what lecture 04 draws."""
    block = FusionBlock(8)
    seen = {}
    handles = [getattr(block, n).register_forward_hook(lambda m, a, o, n=n: seen.__setitem__(n, (a[0].shape, o.shape)))
               for n in ("unit", "upsample", "out_conv")]
    x, skip = torch.randn(1, 8, 5, 7), torch.randn(1, 8, 5, 7)
    grad = torch.inference_mode() if "inference" in mode else torch.no_grad() if "no_grad" in mode else torch.enable_grad()
    with grad:
        (block.train() if mode == "train" else block.eval())(x, skip)
    for h in handles:
        h.remove()
    assert seen == {"unit": ((1, 8, 5, 7), (1, 8, 5, 7)), "upsample": ((1, 8, 5, 7), (1, 8, 10, 14)),
                    "out_conv": ((1, 8, 10, 14), (1, 8, 10, 14))}


def test_fusion_block_size_is_a_keyword_only_call_argument():
    block = FusionBlock(4, with_skip=False)
    x = torch.randn(1, 4, 3, 5)
    assert block(x, size=(5, 9)).shape == (1, 4, 5, 9)          # ceil(5/2) = 3 rows -> 5, not 6
    with torch.no_grad():
        want = block.out_conv(F.interpolate(block.unit(x), size=(5, 9), mode="bilinear", align_corners=True))
    torch.testing.assert_close(block(x, size=(5, 9)), want)
    assert block(x).shape == (1, 4, 6, 10)                       # the next call is x2 again: no state kept
    with pytest.raises(TypeError):
        block(x, None, (5, 9))                                   # not positional
    assert not hasattr(block.upsample, "size")


def test_coarsest_block_takes_no_skip_and_crop_keeps_top_left():
    block = FusionBlock(4, with_skip=False)
    assert block.skip_unit is None
    with pytest.raises(ValueError, match="expects no skip input"):
        block(torch.zeros(1, 4, 2, 2), torch.zeros(1, 4, 2, 2))
    x = torch.arange(22 * 3, dtype=torch.float32).view(1, 1, 22, 3)
    assert torch.equal(crop_to(x, (21, 3)), x[:, :, :21])


# ---------------------------------------------------------------- head and post-processing

def test_regression_head_shapes_and_sizes():
    head = RegressionHead(32, 16, 4)
    assert head.reduce.out_channels == 16 and head.refine.in_channels == 16 and head.predict.in_channels == 16
    assert head(torch.zeros(2, 32, 12, 16)).shape == (2, 4, 24, 32)
    assert RegressionHead(32, 16, 4, scale=14 / 8)(torch.zeros(1, 32, 8, 8)).shape == (1, 4, 14, 14)  # patch 14


def test_upsample_by_1_75_samples_like_an_explicit_size():
    # align_corners=True: output pixel j of 14 reads input position j * (8 - 1) / (14 - 1).
    x = torch.arange(8, dtype=torch.float64).view(1, 1, 1, 8).expand(1, 1, 8, 8)
    got = Upsample(14 / 8)(x)
    assert got.shape == (1, 1, 14, 14)
    torch.testing.assert_close(got[0, 0, 0], torch.arange(14, dtype=torch.float64) * 7 / 13)


# ---------------------------------------------------------------- the stage modules the head is built from

class Recorder(nn.Module):
    """A stand-in fusion block: records its inputs' shapes, returns a nearest x2 of (x + skip) + its index."""

    def __init__(self, k, calls):
        super().__init__()
        self.k, self.calls = k, calls

    def forward(self, x, skip=None):
        self.calls.append((self.k, tuple(x.shape), None if skip is None else tuple(skip.shape)))
        y = x if skip is None else x + skip
        return y.repeat_interleave(2, -2).repeat_interleave(2, -1) + self.k


def test_fuse_pyramid_runs_coarse_to_fine_and_crops_the_last_row_on_an_odd_grid():
    nh, nw = 3, 5                                           # odd grid: 1/32 level is ceil -> 2 x 3
    sizes = [(4 * nh, 4 * nw), (2 * nh, 2 * nw), (nh, nw), (2, 3)]
    levels = [torch.zeros(1, 1, *s) for s in sizes]
    calls = []
    out = fuse_pyramid(levels, [Recorder(k, calls) for k in range(4)])
    assert [c[0] for c in calls] == [3, 2, 1, 0]
    assert calls[0][1:] == ((1, 1, 2, 3), None)
    assert calls[1][1:] == ((1, 1, 3, 5), (1, 1, 3, 5))     # 4 x 6 cropped to 3 x 5 (top-left kept)
    assert out.shape == (1, 1, 8 * nh, 8 * nw)
    # By hand: 3 -> +2 -> +1 -> +0, each after a nearest x2: every pixel is 3 + 2 + 1 + 0 = 6.
    assert torch.equal(out, torch.full_like(out, 6.0))
    levels[3] = torch.arange(6.0).view(1, 1, 2, 3)          # the crop keeps rows 0..2, not 1..3
    out = fuse_pyramid(levels, [Recorder(k, []) for k in range(4)])
    assert out[0, 0, 0, 0] == 0 + 6 and out[0, 0, -1, 0] == 3 + 6   # input row 1 lands at the bottom


def test_reassemble_is_four_branches_then_four_projections_finest_first():
    torch.manual_seed(0)
    r = Reassemble((8, 4, 4, 4), (2, 3, 5, 6), 7)
    assert [b.factor for b in r.branches] == [4, 2, 1, 0.5]
    assert [p.weight.shape for p in r.project] == [(7, d, 3, 3) for d in (2, 3, 5, 6)]
    assert all(p.bias is None for p in r.project)
    grids = [torch.randn(1, c, 3, 5) for c in (8, 4, 4, 4)]
    levels = r(grids)
    assert [tuple(x.shape) for x in levels] == [(1, 7, 12, 20), (1, 7, 6, 10), (1, 7, 3, 5), (1, 7, 2, 3)]
    torch.testing.assert_close(levels[2], F.conv2d(r.branches[2](grids[2]), r.project[2].weight, padding=1))
    with pytest.raises(ValueError, match="4 grids"):
        r(grids[:3])


def test_depth_modes_closed_form():
    v = torch.tensor([[3.0, 4.0, 0.0]], dtype=torch.float64)               # |v| = 5
    e5 = math.exp(5) - 1
    torch.testing.assert_close(depth_activation(v, ("exp", -INF, INF)),
                               torch.tensor([[0.6 * e5, 0.8 * e5, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(depth_activation(v, ("square", -INF, INF)),
                               torch.tensor([[15.0, 20.0, 0.0]], dtype=torch.float64))
    assert torch.equal(depth_activation(v, ("linear", -INF, INF)), v)


def test_depth_at_zero_and_tiny_norms_stays_finite():
    zero = torch.zeros(1, 3)
    assert torch.equal(depth_activation(zero, ("exp", -INF, INF)), zero)   # expm1(0) = 0: the camera centre
    tiny = torch.tensor([[1e-6, 0.0, 0.0]], dtype=torch.float64)
    out = depth_activation(tiny, ("exp", -INF, INF))                        # expm1(d)/d -> 1 as d -> 0
    torch.testing.assert_close(out, tiny, rtol=1e-6, atol=0)
    small = torch.tensor([[1e-9, 0.0, 0.0]], dtype=torch.float64)          # below eps=1e-8: d/eps scaling
    torch.testing.assert_close(depth_activation(small, ("exp", -INF, INF)),
                               small / 1e-8 * math.expm1(1e-9), rtol=1e-9, atol=0)
    assert torch.isfinite(depth_activation(torch.zeros(2, 3), ("square", -INF, INF))).all()


def test_conf_modes_closed_form():
    x = torch.tensor([0.0, 1.0, 5.0], dtype=torch.float64)
    torch.testing.assert_close(conf_activation(x, ("exp", 1, INF)),
                               1 + torch.tensor([1.0, math.e, math.exp(5)], dtype=torch.float64))
    torch.testing.assert_close(conf_activation(x, ("exp", 1, 3)),
                               torch.tensor([2.0, 3.0, 3.0], dtype=torch.float64))    # 1 + min(e^x, 2)
    torch.testing.assert_close(conf_activation(torch.zeros(1, dtype=torch.float64), ("sigmoid", 0, 2)),
                               torch.ones(1, dtype=torch.float64))


def test_postprocess_is_channels_last_with_xyz_then_conf():
    raw = torch.zeros(1, 4, 2, 3)
    raw[0, 0, 1, 2], raw[0, 1, 1, 2], raw[0, 3, 1, 2] = 3.0, 4.0, 0.0
    out = postprocess(raw, ("square", -INF, INF), ("exp", 1, INF))
    assert out["pts3d"].shape == (1, 2, 3, 3) and out["conf"].shape == (1, 2, 3)
    torch.testing.assert_close(out["pts3d"][0, 1, 2], torch.tensor([15.0, 20.0, 0.0]))
    assert out["pts3d"][0, 0, 0].tolist() == [0.0, 0.0, 0.0]
    assert out["conf"][0, 1, 2].item() == 2.0
    assert set(postprocess(raw[:, :3], ("linear", -INF, INF), None)) == {"pts3d"}
