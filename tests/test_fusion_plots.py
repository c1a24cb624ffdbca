"""fusion_plots: the pictures show what the package computes, and label their shapes."""
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from dptlearn.fusion_plots import (plot_align_corners, plot_odd_grid_crop, plot_postprocess_curves,  # noqa: E402
                                   plot_stage_bars, upsample_positions)
from dptlearn.postprocess import conf_activation  # noqa: E402


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
