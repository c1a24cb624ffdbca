"""The shape tracer against tables worked out by hand from first principles."""
import math

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

from dptlearn.dust3r import dust3r_dpt_head   # noqa: E402
from dptlearn.viz.trace import summary, trace_head   # noqa: E402

# DUSt3R at W=512, H=384: grid 384/16 x 512/16 = 24 x 32, N = 768. Reassemble x4, x2, x1, x1/2 give
# 96x128, 48x64, 24x32, 12x16 with 96/192/384/768 channels; 3x3 projections to 256; fusion doubles
# 12x16 -> 24x32 (crop: nothing to do on an even grid) -> 48x64 -> 96x128 -> 192x256; head x2 -> 384x512.
DUST3R_512x384 = """\
stage                  layer                  input                                  output
---------------------  ---------------------  -------------------------------------  -----------------------------------------
tokens[0]              hooked layer           -                                      (1, 768, 1024)
tokens[6]              hooked layer           -                                      (1, 768, 768)
tokens[9]              hooked layer           -                                      (1, 768, 768)
tokens[12]             hooked layer           -                                      (1, 768, 768)
to_grid.0              TokensToGrid           (1, 768, 1024)                         (1, 1024, 24, 32)
to_grid.1              TokensToGrid           (1, 768, 768)                          (1, 768, 24, 32)
to_grid.2              TokensToGrid           (1, 768, 768)                          (1, 768, 24, 32)
to_grid.3              TokensToGrid           (1, 768, 768)                          (1, 768, 24, 32)
reassemble.branches.0  ReassembleBranch x4    (1, 1024, 24, 32)                      (1, 96, 96, 128)
reassemble.project.0   Conv2d 3x3 nobias      (1, 96, 96, 128)                       (1, 256, 96, 128)
reassemble.branches.1  ReassembleBranch x2    (1, 768, 24, 32)                       (1, 192, 48, 64)
reassemble.project.1   Conv2d 3x3 nobias      (1, 192, 48, 64)                       (1, 256, 48, 64)
reassemble.branches.2  ReassembleBranch x1    (1, 768, 24, 32)                       (1, 384, 24, 32)
reassemble.project.2   Conv2d 3x3 nobias      (1, 384, 24, 32)                       (1, 256, 24, 32)
reassemble.branches.3  ReassembleBranch x0.5  (1, 768, 24, 32)                       (1, 768, 12, 16)
reassemble.project.3   Conv2d 3x3 nobias      (1, 768, 12, 16)                       (1, 256, 12, 16)
fusion.3               FusionBlock            (1, 256, 12, 16)                       (1, 256, 24, 32)
crop                   crop_to (top-left)     (1, 256, 24, 32)                       (1, 256, 24, 32)
fusion.2               FusionBlock            (1, 256, 24, 32) + (1, 256, 24, 32)    (1, 256, 48, 64)
fusion.1               FusionBlock            (1, 256, 48, 64) + (1, 256, 48, 64)    (1, 256, 96, 128)
fusion.0               FusionBlock            (1, 256, 96, 128) + (1, 256, 96, 128)  (1, 256, 192, 256)
head                   RegressionHead         (1, 256, 192, 256)                     (1, 4, 384, 512)
postprocess            DUSt3R postprocess     (1, 4, 384, 512)                       pts3d (1, 384, 512, 3) conf (1, 384, 512)"""


def zero_tokens(hw, enc, dec, p=16, depth=12):
    n = (hw[0] // p) * (hw[1] // p)
    return [torch.zeros(1, n, enc if i == 0 else dec) for i in range(depth + 1)]


def test_dust3r_512x384_table_equals_the_hand_written_one():
    head = dust3r_dpt_head(device="cpu")
    trace = trace_head(head, zero_tokens((384, 512), 1024, 768), (384, 512))
    assert trace.table() == DUST3R_512x384


def expected_stages(H, W, p, enc, dec, dims, D, last, ch=4):
    """Every stage's output shape from first principles, for any size and patch size."""
    nh, nw = H // p, W // p
    half = (math.ceil(nh / 2), math.ceil(nw / 2))                      # stride-2 3x3 conv, padding 1
    sizes = [(4 * nh, 4 * nw), (2 * nh, 2 * nw), (nh, nw), half]
    out = {f"to_grid.{i}": (1, c, nh, nw) for i, c in enumerate([enc, dec, dec, dec])}
    out.update({f"reassemble.branches.{i}": (1, d, *s) for i, (d, s) in enumerate(zip(dims, sizes))})
    out.update({f"reassemble.project.{i}": (1, D, *s) for i, s in enumerate(sizes)})
    out["fusion.3"] = (1, D, 2 * half[0], 2 * half[1])
    out["crop"] = (1, D, nh, nw)
    out.update({"fusion.2": (1, D, 2 * nh, 2 * nw), "fusion.1": (1, D, 4 * nh, 4 * nw),
                "fusion.0": (1, D, 8 * nh, 8 * nw), "head": (1, ch, H, W)})
    return out


CASES = [  # (H, W), patch, enc, dec, layer_dims, feature_dim, last_dim
    ((224, 224), 16, 1024, 768, (96, 192, 384, 768), 256, 128),
    ((336, 512), 16, 64, 32, (16, 32, 64, 128), 32, 16),       # odd grid: 21 rows -> 11 -> 22 -> crop 21
    ((224, 224), 14, 64, 32, (16, 32, 64, 128), 32, 16),       # patch 14: 16 x 16 grid, head x1.75
    ((518, 392), 14, 64, 32, (16, 32, 64, 128), 32, 16),       # patch 14, odd grid 37 x 28
    ((160, 512), 16, 64, 32, (16, 32, 64, 128), 32, 16),
]


@pytest.mark.parametrize("hw, p, enc, dec, dims, D, last", CASES, ids=lambda v: str(v))
def test_stage_shapes_match_first_principles(hw, p, enc, dec, dims, D, last):
    head = dust3r_dpt_head(enc_embed_dim=enc, dec_embed_dim=dec, patch_size=p, layer_dims=dims,
                           feature_dim=D, last_dim=last, device="cpu")
    trace = trace_head(head, zero_tokens(hw, enc, dec, p), hw)
    for stage, shape in expected_stages(*hw, p, enc, dec, dims, D, last).items():
        assert trace.stage(stage).output == shape, stage
    assert trace.stage("postprocess").output == {"pts3d": (1, *hw, 3), "conf": (1, *hw)}


def test_crop_only_acts_on_odd_grids():
    head = dust3r_dpt_head(enc_embed_dim=64, dec_embed_dim=32, layer_dims=(16, 32, 64, 128), feature_dim=32,
                           last_dim=16, device="cpu")
    odd = trace_head(head, zero_tokens((336, 512), 64, 32), (336, 512)).stage("crop")
    assert odd.inputs == [(1, 32, 22, 32)] and odd.output == (1, 32, 21, 32)


def test_layer_rows_macs_and_hooks_removed():
    head = dust3r_dpt_head(device="cpu")
    trace = trace_head(head, zero_tokens((384, 512), 1024, 768), (384, 512))
    rows = {r.name: r for r in trace.rows}
    assert rows["reassemble.branches.0.1"].kind == "ConvT 4x4 s4" and rows["reassemble.branches.3.1"].kind == "Conv2d 3x3 s2"
    # head.refine: 3x3 conv 128 -> 128 at 384 x 512: 128 * 128 * 9 * 384 * 512 MACs, by hand
    assert rows["head.refine"].macs == 128 * 128 * 9 * 384 * 512
    # ConvT 4x4 s4 96 -> 96 on a 24 x 32 grid: every input pixel touches 96 * 16 outputs
    assert rows["reassemble.branches.0.1"].macs == 96 * 96 * 16 * 24 * 32
    assert trace.table(depth=1).count("fusion.2.skip_unit") == 1
    assert "fusion.3.skip_unit" not in trace.table(depth=1)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in head.modules())
    assert 90e9 < trace.total_macs() < 95e9


def test_figure_labels_come_from_the_trace():
    head = dust3r_dpt_head(enc_embed_dim=64, dec_embed_dim=32, layer_dims=(16, 32, 64, 128), feature_dim=32,
                           last_dim=16, device="cpu")
    fig = trace_head(head, zero_tokens((336, 512), 64, 32), (336, 512)).figure()
    texts = " ".join(t.get_text() for t in fig.axes[0].texts)
    for label in ("(1, 672, 64)", "(1, 16, 84, 128)", "(1, 32, 11, 16)", "crop -> (1, 32, 21, 32)",
                  "(1, 4, 336, 512)", "pts3d (1, 336, 512, 3)"):
        assert label in texts
    assert "(336, 512)" in fig.axes[0].get_title()


def test_torchinfo_summary_counts_parameters():
    head = dust3r_dpt_head(enc_embed_dim=64, dec_embed_dim=32, layer_dims=(16, 32, 64, 128), feature_dim=32,
                           last_dim=16, device="cpu")
    text = summary(head, zero_tokens((64, 96), 64, 32), (64, 96))
    n = sum(p.numel() for p in head.parameters())
    assert f"Total params: {n:,}" in text
    assert "[1, 4, 64, 96]" in text
