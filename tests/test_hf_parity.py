"""dptlearn's heads hold transformers' weights and return transformers' predicted_depth.

Random-weight models from small config objects (nothing downloaded): DPT with its own ViT
(readout ignore / add / project; square inputs, the only ones that path accepts), DPT on a
DINOv2 backbone (patch 14, non-square) and Depth Anything (relative and metric). Odd patch
grids are included: there transformers' DPT returns a map larger than the image, and so must we.
"""
import pytest
import torch

transformers = pytest.importorskip("transformers")

from dptlearn.hf import from_hf, hf_key, hf_neck_tokens  # noqa: E402
from _helpers import seeded_  # noqa: E402

RTOL = 1e-4


def randomized(model, seed=1):
    """Weights drawn at a larger scale than the init, so no layer is near zero or near identity."""
    seeded_(model, seed, scale=0.1)
    with torch.no_grad():
        last = model.head.head[4] if hasattr(model.head, "head") else model.head.conv3
        last.weight.abs_()       # positive weights on ReLU'd features: the final ReLU keeps (nearly) every pixel
    return model.eval()


def small_vit(**kw):
    return dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=37, **kw)


def dinov2(patch=14):
    return transformers.Dinov2Config(**small_vit(image_size=2 * patch, patch_size=patch), out_indices=[1, 2, 3, 4],
                                     reshape_hidden_states=False, apply_layernorm=True)


NECK = dict(neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16)


def dpt(readout="project", **kw):
    cfg = transformers.DPTConfig(**small_vit(image_size=32, patch_size=16), backbone_out_indices=[0, 1, 2, 3],
                                 readout_type=readout, **NECK, **kw)
    return randomized(transformers.DPTForDepthEstimation(cfg))


def dpt_on_dinov2(patch=14):
    cfg = transformers.DPTConfig(backbone_config=dinov2(patch), hidden_size=32, readout_type="project", **NECK)
    return randomized(transformers.DPTForDepthEstimation(cfg))


def depth_anything(depth_type="relative", patch=14):
    cfg = transformers.DepthAnythingConfig(backbone_config=dinov2(patch), reassemble_hidden_size=32, patch_size=patch,
                                           head_hidden_size=8, depth_estimation_type=depth_type,
                                           max_depth=20 if depth_type == "metric" else 1, **NECK)
    return randomized(transformers.DepthAnythingForDepthEstimation(cfg))


def assert_parity(model, image_size, seed=0):
    x = torch.randn(2, 3, *image_size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        want = model(pixel_values=x).predicted_depth
    tokens = hf_neck_tokens(model, x)
    head = from_hf(model)
    with torch.no_grad():
        got = head(tokens, image_size)
    assert got.shape == want.shape
    assert (want != 0).float().mean() > 0.5, "the final ReLU zeroed most pixels: a weak comparison"
    assert want.std() > 1e-3 * want.abs().max(), "a flat (saturated) map: a weak comparison"
    scale = want.abs().max()
    torch.testing.assert_close(got / scale, want / scale, rtol=0, atol=RTOL)
    return want.shape


@pytest.mark.parametrize("readout", ["ignore", "add", "project"])
@pytest.mark.parametrize("image_size, out", [((32, 32), (32, 32)), ((48, 48), (64, 64))])
def test_dpt_native_vit(readout, image_size, out):
    # 48 px = 3 patches: transformers keeps the coarse path's extra cell, so the map is 64 px
    assert assert_parity(dpt(readout), image_size)[-2:] == out


@pytest.mark.parametrize("image_size, out", [((42, 70), (64, 96)), ((56, 28), (64, 32))])
def test_dpt_on_a_patch14_backbone_non_square(image_size, out):
    # DPT's head doubles the fused map whatever the patch: 8 * 2 * ceil(n / 2) * 2 pixels per side
    assert assert_parity(dpt_on_dinov2(14), image_size)[-2:] == out


def test_dpt_on_a_patch16_backbone_non_square():
    assert assert_parity(dpt_on_dinov2(16), (64, 96))[-2:] == (64, 96)


@pytest.mark.parametrize("depth_type", ["relative", "metric"])
@pytest.mark.parametrize("image_size", [(42, 70), (56, 28), (56, 56)])
def test_depth_anything(depth_type, image_size):
    assert assert_parity(depth_anything(depth_type), image_size)[-2:] == image_size


def test_depth_anything_patch16():
    assert assert_parity(depth_anything(patch=16), (48, 80))[-2:] == (48, 80)


def test_key_map_names_the_coarsest_block_first_as_transformers_does():
    assert hf_key("fusion.3.out_conv.weight", "DPTForDepthEstimation") == "neck.fusion_stage.layers.0.projection.weight"
    assert hf_key("fusion.0.skip_unit.conv2.bias", "DPTForDepthEstimation") == \
        "neck.fusion_stage.layers.3.residual_layer1.convolution2.bias"
    assert hf_key("head.refine.weight", "DepthAnythingForDepthEstimation") == "head.conv2.weight"
    assert hf_key("head.predict.bias", "DPTForDepthEstimation") == "head.head.4.bias"


def test_the_comparison_sees_a_wrong_variant_and_a_wrong_weight():
    model = depth_anything()
    x = torch.randn(1, 3, 42, 70)                 # 3 x 5 patches: odd both ways
    tokens, want = hf_neck_tokens(model, x), model(pixel_values=x).predicted_depth.detach()
    head = from_hf(model)
    head.dpt.odd_grid = "crop"                    # DUSt3R's answer to the odd grid instead of DA's
    with torch.no_grad():
        assert not torch.allclose(head(tokens, (42, 70)), want, rtol=0, atol=RTOL * want.abs().max())
        head = from_hf(model)
        head.dpt.fusion[1].unit.conv1.weight[0, 0, 1, 1] += 0.05
        assert not torch.allclose(head(tokens, (42, 70)), want, rtol=0, atol=RTOL * want.abs().max())


# ------------------------------------------------------------------ bad input

def test_unsupported_model_type():
    seg = transformers.DPTForSemanticSegmentation(transformers.DPTConfig(**small_vit(image_size=32, patch_size=16),
                                                                         backbone_out_indices=[0, 1, 2, 3], **NECK))
    with pytest.raises(TypeError, match="DPTForDepthEstimation and DepthAnythingForDepthEstimation, "
                                        "got DPTForSemanticSegmentation"):
        from_hf(seg)
    with pytest.raises(TypeError, match="got Linear"):
        from_hf(torch.nn.Linear(2, 2))


def test_unsupported_configurations_are_named():
    with pytest.raises(ValueError, match="batch norm"):
        from_hf(dpt(use_batch_norm_in_fusion_residual=True))
    with pytest.raises(ValueError, match="add_projection"):
        from_hf(dpt(add_projection=True))


def test_token_lists_of_the_wrong_count_or_width():
    model = depth_anything()
    x = torch.randn(1, 3, 42, 70)
    tokens, head = hf_neck_tokens(model, x), from_hf(model)
    with pytest.raises(ValueError, match="list of 4 token tensors .*neck receives.*got 3"):
        head(tokens[:3], (42, 70))
    wide = [torch.cat([t, t], dim=-1) for t in tokens]
    with pytest.raises(ValueError, match="64 channels, the head was built for 32"):
        head(wide, (42, 70))
    with pytest.raises(ValueError, match=r"N = 16 tokens.*\(42, 84\).*3x6 grid"):
        head(tokens, (42, 84))
