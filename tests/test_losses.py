"""Losses: closed-form values on hand-made inputs, scale invariance, gradient sanity, input checks."""
import math

import pytest
import torch

from dptlearn.train.losses import (confidence_weighted, conf_regression_loss, l1_depth_loss, normalize_pointmaps,
                                   pointmap_scale, regression_error)


def pts(*xyz):
    """One image, one row: pts(a, b, ...) -> (1, 1, n, 3)."""
    return torch.tensor([[list(xyz)]], dtype=torch.float32)


def mask(*bits):
    return torch.tensor([[list(bits)]])


def test_pointmap_scale_is_mean_valid_norm_over_views():
    p1, p2 = pts((3, 4, 0), (0, 0, 1)), pts((0, 2, 0), (9, 9, 9))
    assert pointmap_scale([p1], [mask(True, True)]).item() == pytest.approx(3.0)  # (5 + 1) / 2
    assert pointmap_scale([p1], [mask(True, False)]).item() == pytest.approx(5.0)
    s = pointmap_scale([p1, p2], [mask(True, True), mask(True, False)])
    assert s.item() == pytest.approx(8.0 / 3.0)  # (5 + 1 + 2) / 3, the (9, 9, 9) pixel is masked out


def test_normalize_pointmaps_divides_every_view_by_the_shared_scale():
    p1, p2 = pts((3, 4, 0)), pts((0, 0, 1))
    (n1, n2), s = normalize_pointmaps([p1, p2], [mask(True), mask(True)])
    assert s.item() == pytest.approx(3.0)
    torch.testing.assert_close(n1, p1 / 3.0)
    torch.testing.assert_close(n2, p2 / 3.0)


def test_regression_error_is_euclidean():
    e = regression_error(pts((1, 2, 2), (0, 0, 0)), pts((0, 0, 0), (0, 3, 4)))
    torch.testing.assert_close(e, torch.tensor([[[3.0, 5.0]]]))


def test_confidence_weighted_closed_form():
    err = torch.tensor([[[1.0, 2.0, 7.0]]])
    conf = torch.tensor([[[1.0, math.e, 5.0]]])
    m = mask(True, True, False)
    # pixel 1: 1*1 - 0.5*log 1 = 1; pixel 2: e*2 - 0.5*log e = 2e - 0.5; pixel 3 masked
    expect = (1.0 + 2 * math.e - 0.5) / 2
    assert confidence_weighted(err, conf, m, alpha=0.5).item() == pytest.approx(expect, rel=1e-6)


def test_conf_loss_hand_example():
    gt = pts((1, 0, 0), (0, 1, 0))  # scale 1
    pred = {"pts3d": pts((1, 0, 0), (0, 0, 1)), "conf": torch.ones(1, 1, 2)}  # scale 1, errors 0 and sqrt 2
    loss, logs = conf_regression_loss([pred], [gt], [mask(True, True)], alpha=0.2)
    assert loss.item() == pytest.approx(math.sqrt(2) / 2, rel=1e-6)  # conf 1: the log term vanishes
    assert logs["regr"] == pytest.approx(math.sqrt(2) / 2, rel=1e-6)


def test_conf_loss_is_scale_invariant_and_sums_views():
    gt1, gt2 = pts((1, 2, 3), (0, 1, 4)), pts((2, 0, 5), (1, 1, 1))
    conf = torch.full((1, 1, 2), 2.0)
    preds = [{"pts3d": 7.5 * gt1, "conf": conf}, {"pts3d": 7.5 * gt2, "conf": conf}]
    m = [mask(True, True), mask(True, True)]
    loss, logs = conf_regression_loss(preds, [gt1, gt2], m, alpha=0.2)
    assert logs["regr"] == pytest.approx(0.0, abs=1e-6)
    assert loss.item() == pytest.approx(2 * (-0.2 * math.log(2.0)), rel=1e-5)  # two views, error 0


def test_conf_loss_scales_pred_and_gt_separately():
    # pred is right in direction but the second view is twice too far relative to the first: not a pure rescale
    gt1, gt2 = pts((0, 0, 1)), pts((0, 0, 1))
    pred1, pred2 = pts((0, 0, 1)), pts((0, 0, 2))
    one = torch.ones(1, 1, 1)
    loss, _ = conf_regression_loss([{"pts3d": pred1, "conf": one}, {"pts3d": pred2, "conf": one}],
                                   [gt1, gt2], [mask(True), mask(True)])
    # pred scale 1.5 -> (0,0,2/3) and (0,0,4/3); gt scale 1 -> (0,0,1) twice: errors 1/3 each, summed over views
    assert loss.item() == pytest.approx(2 / 3, rel=1e-6)


def test_conf_gradient_vanishes_at_alpha_over_error():
    err = torch.tensor([[[0.5, 2.0]]])
    alpha = 0.2
    conf = (alpha / err).clone().requires_grad_()  # d/dC [C l - a log C] = l - a / C = 0 at C = a / l
    confidence_weighted(err, conf, mask(True, True), alpha).backward()
    torch.testing.assert_close(conf.grad, torch.zeros_like(conf), atol=1e-7, rtol=0)


def test_point_gradient_is_finite_and_skips_masked_pixels():
    gt = pts((1, 0, 2), (0, 1, 3), (5, 5, 5))
    p = pts((1.5, 0, 2), (0, 0.5, 3), (1, 1, 1)).requires_grad_()
    loss, _ = conf_regression_loss([{"pts3d": p, "conf": torch.full((1, 1, 3), 1.5)}], [gt],
                                   [mask(True, True, False)])
    loss.backward()
    assert torch.isfinite(p.grad).all()
    assert p.grad[0, 0, :2].abs().sum() > 0 and (p.grad[0, 0, 2] == 0).all()
    with torch.no_grad():  # a small step against the gradient lowers the loss
        p2 = p - 0.05 * p.grad
    loss2, _ = conf_regression_loss([{"pts3d": p2, "conf": torch.full((1, 1, 3), 1.5)}], [gt],
                                    [mask(True, True, False)])
    assert loss2 < loss


def test_l1_depth_loss_closed_form():
    pred = torch.tensor([[[1.0, 4.0, 10.0]]])
    gt = torch.tensor([[[2.0, 3.5, 0.0]]])
    assert l1_depth_loss(pred, gt, mask(True, True, False)).item() == pytest.approx(0.75)  # (1 + 0.5) / 2


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match=r"\(B, H, W, 3\)"):
        pointmap_scale([torch.ones(1, 2, 2)], [torch.ones(1, 2, dtype=torch.bool)])
    with pytest.raises(TypeError, match="bool mask"):
        pointmap_scale([pts((1, 1, 1))], [torch.ones(1, 1, 1)])
    with pytest.raises(ValueError, match="mask of shape"):
        pointmap_scale([pts((1, 1, 1))], [mask(True, True)])
    with pytest.raises(ValueError, match="alpha > 0"):
        confidence_weighted(torch.ones(1, 1, 1), torch.ones(1, 1, 1), mask(True), alpha=0.0)
    with pytest.raises(ValueError, match="same shape"):
        regression_error(pts((1, 1, 1)), pts((1, 1, 1), (2, 2, 2)))
    with pytest.raises(ValueError, match="as many"):
        conf_regression_loss([], [], [])
    with pytest.raises(ValueError, match="one shape"):
        l1_depth_loss(torch.ones(1, 1, 2), torch.ones(1, 1, 3), mask(True, True))
