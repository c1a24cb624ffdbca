"""Synthetic scenes: exact camera geometry, masks, relative pose, seeding, input checks."""
import math

import numpy as np
import pytest
import torch

from dptlearn.train.data import (Primitive, SyntheticScenes, augment, backproject, flip_views, intrinsics, render,
                                 rigid, rotation, swap_views, transform_points)

H, W = 24, 32
F = 30.0


def _plain(kind, center, size, R=None):
    return Primitive(kind, np.asarray(center, float), np.asarray(size, float), np.eye(3) if R is None else R,
                     np.array([[0.8, 0.2, 0.2], [0.2, 0.2, 0.8]]), 1.0)


def test_intrinsics_centre_and_focal():
    K = intrinsics((H, W), F)
    assert K.tolist() == [[F, 0, (W - 1) / 2], [0, F, (H - 1) / 2], [0, 0, 1]]


def test_fronto_parallel_wall_has_constant_depth_and_pinhole_points():
    wall = _plain("plane", [0, 0, 5.0], [0, 0, -1.0])
    v = render([wall], intrinsics((H, W), F), np.eye(4), (H, W))
    assert v["mask"].all()
    np.testing.assert_allclose(v["depth"], 5.0, rtol=1e-6)
    # Independent pinhole model: x = (u - cx) z / f with u = column index.
    u = np.arange(W)[None, :].repeat(H, 0)
    np.testing.assert_allclose(v["pts3d"][..., 0], (u - (W - 1) / 2) * 5.0 / F, atol=1e-5)
    rows = np.arange(H)[:, None].repeat(W, 1)
    np.testing.assert_allclose(v["pts3d"][..., 1], (rows - (H - 1) / 2) * 5.0 / F, atol=1e-5)


def test_floor_depth_closed_form_and_sky_mask():
    h, cy = 1.2, (H - 1) / 2
    floor = _plain("plane", [0, h, 0], [0, -1.0, 0])
    v = render([floor], intrinsics((H, W), F), np.eye(4), (H, W), max_depth=1e9)
    rows = np.arange(H)
    below = rows > cy  # rays pointing down hit the floor at z = h f / (v - cy); the rest see sky
    assert v["mask"][below].all() and not v["mask"][~below].any()
    expect = h * F / (rows[below] - cy)
    np.testing.assert_allclose(v["depth"][below], expect[:, None].repeat(W, 1), rtol=1e-6)
    assert (v["depth"][~below] == 0).all() and (v["pts3d"][~below] == 0).all()


def test_max_depth_masks_far_floor():
    floor = _plain("plane", [0, 1.0, 0], [0, -1.0, 0])
    v = render([floor], intrinsics((H, W), F), np.eye(4), (H, W), max_depth=10.0)
    # row r is valid iff 1.0 * F / (r - cy) <= 10  <=>  r - cy >= 3
    valid_rows = np.arange(H) - (H - 1) / 2 >= 3.0
    assert (v["mask"].all(axis=1) == valid_rows).all() and (v["mask"].any(axis=1) == valid_rows).all()


def test_sphere_and_box_centre_pixel_depth():
    Hc, Wc = 25, 33  # odd sizes so one pixel looks straight down the optical axis
    K = intrinsics((Hc, Wc), F)
    sphere = render([_plain("sphere", [0, 0, 4.0], [1.0])], K, np.eye(4), (Hc, Wc))
    assert sphere["depth"][12, 16] == pytest.approx(3.0, rel=1e-6)
    box = render([_plain("box", [0, 0, 5.0], [1.0, 1.0, 1.0], rotation(yaw=0.3))], K, np.eye(4), (Hc, Wc))
    # slab test by hand: along the optical axis the yawed cube is entered through the face whose slab
    # starts last: z slab from t = 5 - 1/cos(0.3), x slab already from t = 5 - 1/sin(0.3) < that
    assert box["depth"][12, 16] == pytest.approx(5.0 - 1.0 / math.cos(0.3), rel=1e-6)
    assert sphere["mask"].sum() < Hc * Wc and box["mask"].sum() < Hc * Wc  # the rest is sky


def test_moved_camera_sees_wall_at_shifted_depth():
    wall = _plain("plane", [0, 0, 5.0], [0, 0, -1.0])
    v = render([wall], intrinsics((H, W), F), rigid(np.eye(3), np.array([0.3, 0.0, 1.0])), (H, W))
    np.testing.assert_allclose(v["depth"], 4.0, rtol=1e-6)


@pytest.fixture(scope="module")
def batch():
    return SyntheticScenes(6, (32, 48), seed=3).batch(range(6))


def test_batch_shapes_dtypes_and_ranges(batch):
    B = 6
    assert batch["img1"].shape == batch["img2"].shape == (B, 3, 32, 48)
    assert batch["depth1"].shape == batch["mask2"].shape == (B, 32, 48)
    assert batch["pts1"].shape == batch["pts2_in_1"].shape == (B, 32, 48, 3)
    assert batch["K"].shape == (B, 3, 3) and batch["pose_2to1"].shape == (B, 4, 4)
    assert batch["mask1"].dtype == torch.bool and batch["img1"].dtype == torch.float32
    assert batch["img1"].min() >= -1 and batch["img1"].max() <= 1
    assert 0.3 < batch["mask1"].float().mean() < 1.0  # some sky, mostly scene
    assert SyntheticScenes(1).image_size == (64, 96)  # non-square by default


def test_backprojected_depth_equals_point_map(batch):
    for v in ("1", "2"):
        X = backproject(batch["depth" + v], batch["K"])
        torch.testing.assert_close(X, batch["pts" + v], atol=1e-5, rtol=1e-5)
        m = batch["mask" + v]
        assert (batch["depth" + v][m] > 0).all() and (batch["depth" + v][~m] == 0).all()
        assert (batch["pts" + v][~m] == 0).all()


def test_pts2_in_1_is_pose_applied_to_pts2(batch):
    expect = transform_points(batch["pose_2to1"], batch["pts2"]) * batch["mask2"][..., None]
    torch.testing.assert_close(batch["pts2_in_1"], expect, atol=1e-5, rtol=1e-5)
    R = batch["pose_2to1"][:, :3, :3]
    torch.testing.assert_close(R @ R.transpose(1, 2), torch.eye(3).expand(6, 3, 3), atol=1e-6, rtol=0)
    assert (batch["pose_2to1"][:, :3, 3].norm(dim=1) > 0.1).all()  # a real baseline


def test_two_views_agree_on_a_shared_point(batch):
    # Project view 2's points into camera 1: where view 1 sees the same surface, depths agree.
    K = batch["K"][0]
    p = batch["pts2_in_1"][0][batch["mask2"][0]]  # (n, 3)
    uv = (p @ K.T)[:, :2] / p[:, 2:]
    u, v = uv[:, 0].round().long(), uv[:, 1].round().long()
    inside = (u >= 0) & (u < 48) & (v >= 0) & (v < 32) & (p[:, 2] > 0)
    d1 = batch["depth1"][0][v[inside], u[inside]]
    rel = ((d1 - p[inside, 2]).abs() / p[inside, 2])
    assert (rel < 0.05).float().mean() > 0.8  # most agree up to rounding to the pixel grid; the rest are occluded


def test_seeds_reproduce_and_differ():
    a, b = SyntheticScenes(4, (32, 48), seed=7), SyntheticScenes(4, (32, 48), seed=7)
    x, y = a[2], b.batch([3, 2])
    for k in x:
        assert torch.equal(x[k], y[k][1]), k
    assert not torch.equal(SyntheticScenes(4, (32, 48), seed=8)[2]["depth1"], x["depth1"])
    assert not torch.equal(a[1]["depth1"], x["depth1"])


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="image_size"):
        SyntheticScenes(2, (64, 96.0))
    with pytest.raises(ValueError, match="n_scenes"):
        SyntheticScenes(0)
    with pytest.raises(ValueError, match="n_scenes"):      # a bool is not a count
        SyntheticScenes(True)
    with pytest.raises(ValueError, match="image_size"):
        SyntheticScenes(2, (True, 96))
    with pytest.raises(IndexError):
        SyntheticScenes(2)[2]
    with pytest.raises(TypeError, match="torch tensors"):
        backproject(np.ones((2, 2)), torch.eye(3))
    with pytest.raises(ValueError, match=r"\(\.\.\., 3, 3\)"):
        backproject(torch.ones(2, 2), torch.eye(4))


def test_swap_views_exchanges_cameras_and_inverts_the_pose(batch):
    s = swap_views(batch)
    for a, b in [("img1", "img2"), ("depth1", "depth2"), ("pts1", "pts2"), ("mask1", "mask2")]:
        assert torch.equal(s[a], batch[b]) and torch.equal(s[b], batch[a])
    # the new pose maps the new view 2 (old view 1) into the new camera 1 (old camera 2): T_new @ T_old = I
    torch.testing.assert_close(s["pose_2to1"] @ batch["pose_2to1"], torch.eye(4).expand(6, 4, 4), atol=1e-5, rtol=0)
    expect = transform_points(s["pose_2to1"], s["pts2"]) * s["mask2"][..., None]
    torch.testing.assert_close(s["pts2_in_1"], expect, atol=1e-5, rtol=1e-5)
    back = swap_views(s)
    torch.testing.assert_close(back["pts2_in_1"], batch["pts2_in_1"], atol=1e-5, rtol=1e-5)


def test_flip_views_mirrors_pixels_and_x(batch):
    f = flip_views(batch)
    assert torch.equal(f["img1"][..., 5], batch["img1"][..., 48 - 1 - 5])  # column j <- column W-1-j
    assert torch.equal(f["depth2"][:, :, 0], batch["depth2"][:, :, -1])
    torch.testing.assert_close(f["pts1"][:, :, 3, 0], -batch["pts1"][:, :, 48 - 1 - 3, 0])
    torch.testing.assert_close(f["pts1"][:, :, 3, 1:], batch["pts1"][:, :, 48 - 1 - 3, 1:])
    # still a consistent pinhole scene: depth back-projects to the point map, the pose maps view 2 into view 1
    torch.testing.assert_close(backproject(f["depth1"], f["K"]), f["pts1"], atol=1e-4, rtol=1e-5)
    expect = transform_points(f["pose_2to1"], f["pts2"]) * f["mask2"][..., None]
    torch.testing.assert_close(f["pts2_in_1"], expect, atol=1e-5, rtol=1e-5)
    R = f["pose_2to1"][:, :3, :3]
    assert torch.allclose(torch.linalg.det(R), torch.ones(6), atol=1e-5)  # still a rotation, not a reflection


def test_augment_is_seeded_and_mixes_per_scene(batch):
    a = augment(batch, torch.Generator().manual_seed(3))
    b = augment(batch, torch.Generator().manual_seed(3))
    assert all(torch.equal(a[k], b[k]) for k in batch)
    # every scene is one of the four variants of itself
    variants = [batch, swap_views(batch), flip_views(batch), flip_views(swap_views(batch))]
    kinds = []
    for i in range(6):
        hits = [j for j, v in enumerate(variants) if torch.equal(a["img1"][i], v["img1"][i])
                and torch.allclose(a["pts2_in_1"][i], v["pts2_in_1"][i], atol=1e-5)]
        assert hits, f"scene {i} is no variant of itself"
        kinds.append(hits[0])
    assert len(set(kinds)) > 1  # drawn per scene, not once per batch
