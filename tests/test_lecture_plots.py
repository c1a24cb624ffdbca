"""The lecture pictures: the test image is what it claims, and every figure labels its shapes."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from einops import rearrange  # noqa: E402

from dptlearn.grid import tokens_to_grid  # noqa: E402
from dptlearn.lecture_plots import (numbered_patches, plot_dust3r_overview, plot_token_list,  # noqa: E402
                                    show_images)


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
