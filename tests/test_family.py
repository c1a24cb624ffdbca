"""The DPT family built from dptlearn's stages: DPT-Large and Depth Anything V2 beside DUSt3R.

Each variant option of a stage is checked against a hand-written computation; the presets
against the layouts their papers and transformers give (hooks, readout, widths, head, output).
"""
import math

import pytest
import torch
import torch.nn.functional as F

from dptlearn.depth_anything import DA2_PRESETS, depth_anything_v2_head
from dptlearn.dpt import DPTHead
from dptlearn.dpt_large import DPT_LARGE_HOOKS, dpt_large_head
from dptlearn.dust3r import dust3r_dpt_head
from dptlearn.fusion import FusionBlock, fuse_pyramid, fuse_pyramid_uncropped
from dptlearn.head import RegressionHead
from _helpers import seeded_

SMALL = dict(layer_dims=(8, 16, 24, 32), feature_dim=16)
SCALE = 0.3        # the weights' scale here (seeded_'s default is 0.1)


def tokens(n_layers, n_patches, width, batch=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, n_patches, width, generator=g) for _ in range(n_layers)]


# ------------------------------------------------------------------ stage options

def test_fusion_block_resize_skip_is_bilinear_without_align_corners_then_the_usual_block():
    block = seeded_(FusionBlock(4, resize_skip=True), scale=SCALE).eval()
    x, skip = torch.randn(1, 4, 4, 6), torch.randn(1, 4, 3, 5)     # the path is one cell larger each way
    with torch.no_grad():
        resized = F.interpolate(skip, size=(4, 6), mode="bilinear", align_corners=False)
        out = block.unit(x + block.skip_unit(resized))
        want = block.out_conv(F.interpolate(out, scale_factor=2, mode="bilinear", align_corners=True))
        torch.testing.assert_close(block(x, skip), want)
    assert block(x, skip).shape == (1, 4, 8, 12)


def test_fusion_block_default_still_refuses_a_skip_of_another_size():
    with pytest.raises(ValueError, match="crop_to"):
        FusionBlock(4)(torch.randn(1, 4, 4, 6), torch.randn(1, 4, 3, 5))
    with pytest.raises(ValueError, match="same shape"):   # resizing fixes sizes, not channel counts
        FusionBlock(4, resize_skip=True)(torch.randn(1, 4, 4, 6), torch.randn(1, 3, 3, 5))


def pyramid(nh, nw, D=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    sizes = [(4 * nh, 4 * nw), (2 * nh, 2 * nw), (nh, nw), (math.ceil(nh / 2), math.ceil(nw / 2))]
    return [torch.randn(1, D, *s, generator=g) for s in sizes]


def blocks(resize_skip=False):
    return [seeded_(FusionBlock(4, with_skip=i < 3, resize_skip=resize_skip), i, scale=SCALE).eval() for i in range(4)]


def test_upsample_to_level_sends_the_coarsest_block_straight_to_the_next_levels_size():
    levels, fusion = pyramid(3, 5), blocks()
    c = fusion[3]
    with torch.no_grad():
        first = c.out_conv(F.interpolate(c.unit(levels[3]), size=(3, 5), mode="bilinear", align_corners=True))
        want = first
        for i in (2, 1, 0):
            want = fusion[i](want, levels[i])
        got = fuse_pyramid_uncropped(levels, fusion, "upsample_to_level")
    torch.testing.assert_close(got, want)
    assert got.shape == (1, 4, 24, 40)
    assert fusion[3](levels[3]).shape == (1, 4, 4, 6)   # the size went in with that call only: x2 again


def test_resize_skip_keeps_the_extra_cell_and_grows_the_map():
    levels = pyramid(3, 5)
    with torch.no_grad():
        got = fuse_pyramid_uncropped(levels, blocks(resize_skip=True), "resize_skip")
    assert got.shape == (1, 4, 16 * 2, 16 * 3)   # 16 * ceil(n / 2), not 8n: nothing was cropped


def test_on_an_even_grid_the_three_odd_grid_answers_agree():
    levels = pyramid(4, 6)
    with torch.no_grad():
        crop = fuse_pyramid(levels, blocks())
        resize = fuse_pyramid_uncropped(levels, blocks(resize_skip=True), "resize_skip")
        to_level = fuse_pyramid_uncropped(levels, blocks(), "upsample_to_level")
    torch.testing.assert_close(resize, crop)
    torch.testing.assert_close(to_level, crop)


def test_on_an_odd_grid_they_differ():
    levels = pyramid(3, 5)
    with torch.no_grad():
        crop = fuse_pyramid(levels, blocks())
        to_level = fuse_pyramid_uncropped(levels, blocks(), "upsample_to_level")
    assert crop.shape == to_level.shape and not torch.allclose(crop, to_level, atol=1e-3)


@pytest.mark.parametrize("activation, fn", [("relu", F.relu), ("sigmoid", torch.sigmoid)])
def test_regression_head_output_activation(activation, fn):
    plain = seeded_(RegressionHead(8, 6, 1), scale=SCALE).eval()
    ended = RegressionHead(8, 6, 1, activation=activation).eval()
    ended.load_state_dict(plain.state_dict())        # the activation adds no weights
    x = torch.randn(2, 8, 5, 7)
    with torch.no_grad():
        torch.testing.assert_close(ended(x), fn(plain(x)))


def test_bad_stage_options_are_named():
    with pytest.raises(ValueError, match="activation must be one of.*'tanh'"):
        RegressionHead(8, 6, 1, activation="tanh")
    with pytest.raises(ValueError, match="odd_grid must be one of.*'pad'"):
        DPTHead((8,) * 4, (0, 1, 2, 3), odd_grid="pad")
    with pytest.raises(ValueError, match="'crop' is fuse_pyramid"):
        fuse_pyramid_uncropped(pyramid(2, 2), blocks(), "crop")


# ------------------------------------------------------------------ presets

def test_dpt_large_preset_layout():
    head = dpt_large_head(device="cpu")
    dpt = head.dpt
    assert dpt.hooks == DPT_LARGE_HOOKS == (5, 11, 17, 23) and dpt.num_layers == 24
    assert dpt.dim_tokens == (1024,) * 4 and dpt.n_prefix == 1 and dpt.odd_grid == "resize_skip"
    assert all(r.mode == "project" and r.project[0].in_features == 2048 for r in dpt.readout)
    assert [b[0].out_channels for b in dpt.reassemble.branches] == [256, 512, 1024, 1024]
    assert (dpt.head.refine.out_channels, dpt.head.predict.out_channels) == (32, 1)
    assert dpt.head.activation == "relu" and dpt.head.upsample.scale == 2
    assert sum(p.numel() for p in dpt.parameters()) > 30_000_000   # DPT-Large's head is big


def test_dpt_large_preset_runs_and_is_non_negative():
    head = seeded_(dpt_large_head(hidden_size=32, **SMALL, device="cpu"), scale=SCALE)
    with torch.no_grad():
        depth = head(tokens(24, 1 + 4 * 6, 32), (64, 96))
        grown = head(tokens(24, 1 + 3 * 5, 32), (48, 80))
    assert depth.shape == (2, 64, 96) and depth.min() >= 0
    assert grown.shape == (2, 64, 96)      # odd grid: transformers' DPT keeps the extra cell


@pytest.mark.parametrize("size", sorted(DA2_PRESETS))
def test_depth_anything_presets(size):
    width, hooks, dim, dims = DA2_PRESETS[size]
    dpt = depth_anything_v2_head(size, device="cpu").dpt
    assert dpt.patch_size == 14 and dpt.hooks == hooks and dpt.num_layers == hooks[-1] + 1
    assert dpt.feature_dim == dim and [b[0].out_channels for b in dpt.reassemble.branches] == list(dims)
    assert dpt.readout[0].mode == "ignore" and dpt.odd_grid == "upsample_to_level"
    assert dpt.head.upsample.scale == 14 / 8


@pytest.mark.parametrize("depth_type, max_depth", [("relative", 1.0), ("metric", 20.0)])
def test_depth_anything_head_output_is_the_image_size_on_odd_grids(depth_type, max_depth):
    head = seeded_(depth_anything_v2_head("vits", depth_type, max_depth, hidden_size=32, **SMALL, device="cpu"),
                   scale=SCALE)
    with torch.no_grad():
        depth = head(tokens(12, 1 + 37 * 5, 32, batch=1), (518, 70))   # 37 rows: odd, as at 518 px
    assert depth.shape == (1, 518, 70) and depth.min() >= 0
    if depth_type == "metric":
        assert depth.max() <= max_depth


def test_dust3r_default_is_unchanged():
    dpt = dust3r_dpt_head(device="cpu").dpt
    assert dpt.odd_grid == "crop" and dpt.head.activation is None and dpt.head.upsample.scale == 2
    assert not any(b.resize_skip for b in dpt.fusion)


def test_preset_bad_inputs():
    head = depth_anything_v2_head(hidden_size=32, **SMALL, device="cpu")
    with pytest.raises(ValueError, match="12 token tensors.*got 11"):
        head(tokens(11, 1 + 4, 32), (28, 28))
    with pytest.raises(ValueError, match="40 channels, the head was built for 32"):
        head(tokens(12, 1 + 4, 40), (28, 28))
    with pytest.raises(ValueError, match="multiple of the patch size 14"):
        head(tokens(12, 1 + 4, 32), (32, 32))
    with pytest.raises(ValueError, match="size must be one of.*'vitg'"):
        depth_anything_v2_head("vitg")
    with pytest.raises(ValueError, match="depth_type must be one of"):
        depth_anything_v2_head(depth_type="absolute")
