"""The course's figures (dptlearn.viz): each shows what the package computes and labels its shapes."""
import math
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from einops import rearrange  # noqa: E402

from dptlearn.grid import tokens_to_grid  # noqa: E402
from dptlearn.postprocess import conf_activation  # noqa: E402
from dptlearn.viz.flow import plot_trace  # noqa: E402
from dptlearn.viz.fusion import plot_align_corners, plot_odd_grid_crop, upsample_positions  # noqa: E402
from dptlearn.viz.images import numbered_patches, show_feature_maps, show_images  # noqa: E402
from dptlearn.viz.overview import plot_dust3r_overview  # noqa: E402
from dptlearn.viz.postprocess import plot_postprocess_curves  # noqa: E402
from dptlearn.viz.shapes import fmt_shape  # noqa: E402
from dptlearn.viz.stages import plot_stage_bars  # noqa: E402
from dptlearn.viz.tokens import plot_token_list  # noqa: E402


def test_numbered_patches_shape_range_and_distinct_patches():
    img = numbered_patches(3, 5, 16)
    assert img.shape == (3, 48, 80) and img.dtype == torch.float32
    assert 0.0 <= img.min() and img.max() <= 1.0
    patches = rearrange(img, "c (nh p1) (nw p2) -> (nh nw) (c p1 p2)", p1=16, p2=16)  # (15, 768)
    # every patch differs from every other one (colour and digits), so a moved patch is visible
    assert torch.cdist(patches, patches).add(torch.eye(15) * 1e3).min() > 0.5
    # digits are drawn in black ink inside each patch
    assert (patches == 0).any(dim=1).all()


def test_numbered_patches_round_trip_through_token_grid():
    img = numbered_patches(4, 6, 16)
    tokens = rearrange(img, "c (nh p1) (nw p2) -> 1 (nh nw) (p1 p2 c)", p1=16, p2=16)  # (1, 24, 768)
    grid = tokens_to_grid(tokens, 4, 6)                                               # (1, 768, 4, 6)
    back = rearrange(grid, "1 (p1 p2 c) nh nw -> c (nh p1) (nw p2)", p1=16, p2=16)
    assert torch.equal(back, img)


def test_numbered_patches_rejects_small_patches():
    with pytest.raises(ValueError, match="patch_size >= 16"):
        numbered_patches(2, 2, 8)


def test_show_images_titles_end_with_shapes():
    a, b = numbered_patches(2, 3), torch.rand(32, 48)
    fig = show_images([a, b], ["numbered", "noise"], patch_size=16)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["numbered\n(3, 32, 48)", "noise\n(32, 48)"]
    plt.close(fig)
    with pytest.raises(ValueError, match="2 images but 1 titles"):
        show_images([a, b], ["only one"])


def test_token_list_labels_every_shape_and_names_the_hooks():
    tokens = [torch.zeros(1, 6, 8)] + [torch.zeros(1, 6, 4) for _ in range(10)]
    fig = plot_token_list(tokens, [0, 5, 7, 10])
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts.count("(1,\n6, 8)") == 1 and texts.count("(1,\n6, 4)") == 10
    assert "[0, 5, 7, 10]" in fig.axes[0].get_title()
    plt.close(fig)


def test_dust3r_overview_labels_come_from_the_tensors():
    H, W = 32, 48
    img = torch.zeros(3, H, W)
    tokens = [torch.zeros(1, 6, 16)] + [torch.zeros(1, 6, 8) for _ in range(10)]
    out = {"pts3d": torch.zeros(1, H, W, 3), "conf": torch.ones(1, H, W) * 1.5}
    pts = torch.rand(H, W, 3)
    fig = plot_dust3r_overview(img, img, tokens, out, out, pts, pts)
    text = "\n".join([ax.get_title() for ax in fig.axes] + [t.get_text() for ax in fig.axes for t in ax.texts])
    for expected in ("(3, 32, 48)", "(1, 32, 48, 3)", "(1, 32, 48)", "tokens[0] (1, 6, 16)",
                     "tokens[1..10] (1, 6, 8)", "16x16 patches", "read 11 tensors"):
        assert expected in text, expected
    plt.close(fig)


def test_upsample_positions_match_the_closed_forms():
    n = 5
    # align_corners=True: the corners coincide, step (n-1)/(2n-1)
    true = upsample_positions(n, True)
    assert torch.allclose(true, torch.arange(2 * n, dtype=torch.float64) * (n - 1) / (2 * n - 1))
    # align_corners=False: half-pixel centres, (i + 0.5)/2 - 0.5, clamped to the input range
    false = upsample_positions(n, False)
    expect = ((torch.arange(2 * n, dtype=torch.float64) + 0.5) / 2 - 0.5).clamp(0, n - 1)
    assert torch.allclose(false, expect)
    assert true[0] == 0 and true[-1] == n - 1 and not torch.allclose(true, false)


def test_align_corners_figure_plots_those_positions():
    fig = plot_align_corners(4)
    ax = fig.axes[0]
    dots = [c for c in ax.collections if len(c.get_offsets()) == 8]
    xs = sorted(tuple(np.round(c.get_offsets()[:, 0], 6)) for c in dots)
    want = sorted(tuple(np.round(upsample_positions(4, f).numpy(), 6)) for f in (True, False))
    assert xs == want
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("(8,)" in t for t in legend) and any("(4,)" in t for t in legend)
    plt.close(fig)


def test_crop_figure_labels_shapes_and_hatches_the_dropped_row():
    path, skip = torch.randn(1, 3, 22, 32), torch.randn(1, 3, 21, 32)
    fig = plot_odd_grid_crop(path, skip)
    titles = [ax.get_title() for ax in fig.axes]
    assert "(1, 3, 22, 32)" in titles[0] and "(1, 3, 21, 32)" in titles[1]
    (rect,) = fig.axes[0].patches
    assert rect.get_height() == 1 and rect.get_y() == pytest.approx(20.5)   # exactly row 21 is dropped
    plt.close(fig)


def test_postprocess_curves_are_the_package_functions():
    d, x = torch.linspace(0, 3, 31), torch.linspace(-4, 4, 17)
    fig = plot_postprocess_curves(d, x)
    ax0, ax1 = fig.axes
    curves = {line.get_label(): line.get_ydata() for line in ax0.get_lines()}
    assert np.allclose(curves["exp"], np.expm1(d.numpy()), atol=1e-5)
    assert np.allclose(curves["square"], d.numpy() ** 2, atol=1e-5)
    assert np.allclose(curves["linear"], d.numpy(), atol=1e-6)
    exp_line = next(line for line in ax1.get_lines() if line.get_label().startswith("exp"))
    assert np.allclose(exp_line.get_ydata(), conf_activation(x, ("exp", 1, math.inf)).numpy())
    assert "(31, 3)" in ax0.get_xlabel() and "(17,)" in ax1.get_xlabel()
    plt.close(fig)


def test_stage_bars_heights_and_labels():
    values = {"project.0": 3.0, "fusion.0": 5.0, "head": 7.0}
    fig = plot_stage_bars(values, "MACs", "t", shapes={"head": (1, 4, 8, 8)})
    ax = fig.axes[0]
    assert [p.get_height() for p in ax.patches] == [3.0, 5.0, 7.0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels[0] == "project.0" and labels[2] == "head\n(1, 4, 8, 8)"
    plt.close(fig)


def test_fmt_shape():
    assert fmt_shape(torch.zeros(1, 768, 2, 3).shape) == "(1, 768, 2, 3)"
    assert fmt_shape((8,)) == "(8,)" and fmt_shape([np.int64(4), 5]) == "(4, 5)"


def test_feature_map_titles_carry_their_shapes():
    maps = [torch.zeros(1, 3, 8, 12), torch.zeros(1, 5, 4, 6)]
    fig = show_feature_maps(maps, ["a", "b"], channel=2)
    assert [ax.get_title() for ax in fig.axes] == ["a\n(1, 3, 8, 12)", "b\n(1, 5, 4, 6)"]
    plt.close(fig)


def fake_trace():
    """A hand-made trace of a 32x48 image, patch 16 (2x3 grid), D = 8: the row names the tracer writes."""
    def row(name, inputs, output, kind=""):
        return SimpleNamespace(name=name, kind=kind, inputs=inputs, output=output)

    rows = [row(f"tokens[{h}]", [], (1, 6, 16)) for h in (0, 5, 7, 10)]
    sizes = [(8, 12), (4, 6), (2, 3), (1, 2)]                              # 1/4 ... 1/32 of the image
    for i, (h, w) in enumerate(sizes):
        rows += [row(f"to_grid.{i}", [(1, 6, 16)], (1, 16, 2, 3)),
                 row(f"reassemble.branches.{i}", [(1, 16, 2, 3)], (1, 4 * 2 ** i, h, w), f"ReassembleBranch #{i}"),
                 row(f"reassemble.project.{i}", [(1, 4 * 2 ** i, h, w)], (1, 8, h, w))]
    rows += [row("fusion.3", [(1, 8, 1, 2)], (1, 8, 2, 4)), row("crop", [(1, 8, 2, 4)], (1, 8, 2, 3)),
             row("fusion.2", [(1, 8, 2, 3)], (1, 8, 4, 6)), row("fusion.1", [(1, 8, 4, 6)], (1, 8, 8, 12)),
             row("fusion.0", [(1, 8, 8, 12)], (1, 8, 16, 24)), row("head", [(1, 8, 16, 24)], (1, 4, 32, 48)),
             row("postprocess", [(1, 4, 32, 48)], {"pts3d": (1, 32, 48, 3), "conf": (1, 32, 48)})]
    by_name = {r.name: r for r in rows}
    return SimpleNamespace(rows=rows, stage=by_name.__getitem__, image_size=(32, 48))


def test_trace_figure_draws_any_trace_like_object_from_its_rows():
    fig = plot_trace(fake_trace())
    texts = [t.get_text() for t in fig.axes[0].texts]
    for i in range(4):
        assert f"reassemble.branches.{i}\nReassembleBranch #{i}" in texts
        assert f"reassemble.project.{i}\n3x3 conv -> D" in texts
    for label in ("(1, 6, 16)", "(1, 16, 2, 3)", "(1, 4, 8, 12)", "(1, 32, 1, 2)", "(1, 8, 16, 24)",
                  "(1, 8, 2, 4)\ncrop -> (1, 8, 2, 3)", "(1, 4, 32, 48)", "postprocess\npts3d (1, 32, 48, 3)\nconf (1, 32, 48)"):
        assert label in texts, label
    assert "(32, 48)" in fig.axes[0].get_title()
    plt.close(fig)


def test_trace_figure_module_does_not_import_the_tracer():
    import ast
    import dptlearn.viz.flow as flow
    tree = ast.parse(open(flow.__file__).read())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any(m and m.endswith("trace") for m in imported), imported


# ----------------------------------------------------------------------------- figures of a trained model


def _tiny_two_view():
    from dptlearn.train.backbone import TinyDUSt3R
    torch.manual_seed(0)
    return TinyDUSt3R(patch_size=8, enc_embed_dim=32, enc_depth=1, enc_num_heads=2, dec_embed_dim=32, dec_depth=10,
                      dec_num_heads=2, feature_dim=16, last_dim=8, layer_dims=(8, 16, 16, 32), device="cpu")


def test_capture_stages_keeps_reassemble_levels_and_fusion_outputs():
    from dptlearn.viz.trained import capture_stages
    model = _tiny_two_view()
    img = torch.randn(2, 3, 32, 48)
    stages = capture_stages(model.head1, lambda: model(img, img))
    shapes = {k: tuple(v.shape) for k, v in stages.items()}
    # 4x6 token grid -> levels at x4, x2, x1, x0.5; fusion.3 ends at the x1 level, each block doubles the size
    assert shapes == {"reassemble.0": (2, 16, 16, 24), "reassemble.1": (2, 16, 8, 12), "reassemble.2": (2, 16, 4, 6),
                      "reassemble.3": (2, 16, 2, 3), "fusion.3": (2, 16, 4, 6), "fusion.2": (2, 16, 8, 12),
                      "fusion.1": (2, 16, 16, 24), "fusion.0": (2, 16, 32, 48)}
    assert not any(v.requires_grad for v in stages.values())
    assert not model.head1.dpt.reassemble._forward_hooks  # hooks removed
    with pytest.raises(TypeError, match="DPTHead"):
        capture_stages(torch.nn.Linear(2, 2), lambda: None)


def test_feature_rgb_shows_the_dominant_direction():
    from dptlearn.viz.trained import feature_rgb
    x = torch.zeros(5, 4, 6)
    x[2, :, 3:] = 1.0  # right half differs along one channel: the first component separates the halves
    rgb = feature_rgb(x)
    assert rgb.shape == (4, 6, 3) and rgb.min() >= 0 and rgb.max() <= 1
    assert abs(rgb[:, :3, 0].mean() - rgb[:, 3:, 0].mean()) > 0.9
    with pytest.raises(ValueError, match=r"\(C, h, w\)"):
        feature_rgb(torch.zeros(2, 3))


def test_trained_vs_random_rows_and_shape_titles():
    from dptlearn.viz.trained import plot_trained_vs_random
    maps = {"reassemble.0": torch.randn(1, 8, 16, 24), "fusion.0": torch.randn(1, 8, 32, 48)}
    fig = plot_trained_vs_random(maps, maps, ["reassemble.0", "fusion.0"])
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["trained: reassemble.0\n(1, 8, 16, 24)", "trained: fusion.0\n(1, 8, 32, 48)",
                      "random: reassemble.0\n(1, 8, 16, 24)", "random: fusion.0\n(1, 8, 32, 48)"]
    plt.close(fig)
    with pytest.raises(KeyError, match="fusion.9"):
        plot_trained_vs_random(maps, maps, ["fusion.9"])


def test_confidence_and_error_bars_follow_the_ranking():
    from dptlearn.viz.trained import plot_confidence_and_error
    err = torch.arange(12.0).reshape(3, 4)
    mask = torch.ones(3, 4, dtype=torch.bool)
    mask[0, 0] = False
    fig = plot_confidence_and_error(torch.zeros(3, 3, 4), 1 + 1 / (1 + err), err, mask, bins=2)
    bar_ax = next(ax for ax in fig.axes if ax.get_title() == "error by confidence")
    bars = [p.get_height() for p in bar_ax.patches]
    # valid errors 1..11 sorted by falling confidence = rising error: least confident half [6..11], most [1..5]
    assert bars == pytest.approx([np.mean([6, 7, 8, 9, 10, 11]), np.mean([1, 2, 3, 4, 5])])
    assert "log confidence (3, 4)" in [ax.get_title() for ax in fig.axes]
    assert list(bar_ax.get_xticks()) == [1, 2]  # every group labelled
    plt.close(fig)
    with pytest.raises(ValueError, match="expected conf, err, mask of shape"):
        plot_confidence_and_error(torch.zeros(3, 3, 4), err, err[:2], mask)


def test_two_view_points_are_normalised_jointly_and_coloured_by_view():
    from dptlearn.viz.trained import plot_two_view_points
    true = [torch.rand(4, 6, 3) + 1, torch.rand(4, 6, 3) + 1]
    masks = [torch.ones(4, 6, dtype=torch.bool), torch.ones(4, 6, dtype=torch.bool)]
    masks[1][0] = False
    fig = plot_two_view_points([5 * t for t in true], true, masks, step=1)  # 5x the truth: same after scaling
    pred_ax, true_ax = [ax for ax in fig.axes if ax.name == "3d"]
    for a, b in zip(pred_ax.collections, true_ax.collections):
        np.testing.assert_allclose(np.array(a._offsets3d), np.array(b._offsets3d), rtol=1e-5)
    assert [len(c._offsets3d[0]) for c in true_ax.collections] == [24, 18]
    colors = [tuple(c.get_facecolor()[0]) for c in true_ax.collections]
    assert colors[0] != colors[1]
    assert "true point maps (4, 6, 3) x 2" in true_ax.get_title()
    # one scale on every axis: the box's sides are proportional to the ranges shown (x, z forward, -y up)
    ranges = np.array([np.ptp(true_ax.get_xlim()), np.ptp(true_ax.get_ylim()), np.ptp(true_ax.get_zlim())])
    box = np.array(true_ax.get_box_aspect())
    np.testing.assert_allclose(box / box.max(), ranges / ranges.max(), rtol=1e-6)
    plt.close(fig)
    with pytest.raises(ValueError, match="two views"):
        plot_two_view_points(true[:1], true, masks)
