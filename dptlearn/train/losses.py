"""DUSt3R's confidence-aware 3D regression loss, its scale normalisation, and a plain L1 depth loss.

Point maps from two images are only defined up to scale, so DUSt3R compares them after dividing
each side by its own mean distance to the origin (over the valid pixels of both views):

    s = (sum_valid ||X_v||) / (number of valid pixels),   X_v <- X_v / s        (pred and gt separately)
    l(i) = || X_pred(i) / s_pred - X_gt(i) / s_gt ||_2                          (per-pixel 3D error)
    L_conf = mean_valid [ C(i) * l(i) - alpha * log C(i) ]                     (C > 1 from the head)

A pixel the network cannot get right may pay a small C (low weight on its error) but then loses
the -alpha log C reward; minimising over C gives C = alpha / l, so the confidence map learns to be
large where the error is small.
"""
from __future__ import annotations

import torch


def _check_pts(name: str, pts: torch.Tensor, mask: torch.Tensor) -> None:
    if not isinstance(pts, torch.Tensor) or not isinstance(mask, torch.Tensor):
        raise TypeError(f"expected tensors for {name} and its mask, got {type(pts).__name__} and {type(mask).__name__}")
    if pts.dim() != 4 or pts.shape[-1] != 3:
        raise ValueError(f"expected {name} of shape (B, H, W, 3), got {tuple(pts.shape)}")
    if mask.shape != pts.shape[:-1]:
        raise ValueError(f"expected mask of shape {tuple(pts.shape[:-1])} for {name}, got {tuple(mask.shape)}")
    if mask.dtype != torch.bool:
        raise TypeError(f"expected a bool mask for {name}, got {mask.dtype}")


def pointmap_scale(pts: list[torch.Tensor], masks: list[torch.Tensor], eps: float = 1e-8) -> torch.Tensor:
    """Mean distance to the origin over the valid pixels of all given views, per batch item: (B,)."""
    for i, (p, m) in enumerate(zip(pts, masks)):
        _check_pts(f"pts[{i}]", p, m)
    total = sum((p.norm(dim=-1) * m).flatten(1).sum(1) for p, m in zip(pts, masks))  # (B,)
    count = sum(m.flatten(1).sum(1) for m in masks)  # (B,)
    return (total / count.clamp(min=1)).clamp(min=eps)  # (B,)


def normalize_pointmaps(pts: list[torch.Tensor], masks: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Divide every view's point map by the shared scale of `pointmap_scale`. Returns (scaled maps, scale (B,))."""
    s = pointmap_scale(pts, masks)  # (B,)
    return [p / s[:, None, None, None] for p in pts], s  # (B, H, W, 3) each


def regression_error(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Per-pixel Euclidean distance: (B, H, W, 3) x 2 -> (B, H, W)."""
    if pred.shape != gt.shape:
        raise ValueError(f"expected pred and gt of the same shape, got {tuple(pred.shape)} and {tuple(gt.shape)}")
    return (pred - gt).norm(dim=-1)  # (B, H, W)


def confidence_weighted(err: torch.Tensor, conf: torch.Tensor, mask: torch.Tensor, alpha: float) -> torch.Tensor:
    """mean over valid pixels of conf * err - alpha * log(conf)  (scalar)."""
    if not (err.shape == conf.shape == mask.shape):
        raise ValueError(f"expected err, conf, mask of one shape, got {tuple(err.shape)}, {tuple(conf.shape)}, {tuple(mask.shape)}")
    if alpha <= 0:
        raise ValueError(f"expected alpha > 0, got {alpha}")
    per_pixel = conf * err - alpha * torch.log(conf)  # (B, H, W)
    return per_pixel[mask].sum() / mask.sum().clamp(min=1)


def conf_regression_loss(preds: list[dict], gts: list[torch.Tensor], masks: list[torch.Tensor],
                         alpha: float = 0.2) -> tuple[torch.Tensor, dict[str, float]]:
    """DUSt3R's loss over one or two views.

    preds: head outputs [{'pts3d': (B,H,W,3), 'conf': (B,H,W)}, ...]; gts: ground-truth point maps, all in the
    reference (view 1) camera frame; masks: validity (B,H,W) bool. Pred and gt are scale-normalised separately,
    over all views jointly. Returns (sum over views of the confidence-weighted loss, {'regr': mean 3D error}).
    """
    if not (len(preds) == len(gts) == len(masks)) or not preds:
        raise ValueError(f"expected as many preds, gts and masks (>= 1), got {len(preds)}, {len(gts)}, {len(masks)}")
    pred_n, _ = normalize_pointmaps([p["pts3d"] for p in preds], masks)  # (B, H, W, 3) each
    gt_n, _ = normalize_pointmaps(gts, masks)  # (B, H, W, 3) each
    loss, regr = 0.0, 0.0
    for p, pn, gn, m in zip(preds, pred_n, gt_n, masks):
        err = regression_error(pn, gn)  # (B, H, W)
        loss = loss + confidence_weighted(err, p["conf"], m, alpha)
        regr += (err[m].sum() / m.sum().clamp(min=1)).item()
    return loss, {"regr": regr / len(preds)}


def l1_depth_loss(pred_depth: torch.Tensor, gt_depth: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Plain metric L1 on depth, mean over valid pixels: (B, H, W) x 3 -> scalar."""
    if not (pred_depth.shape == gt_depth.shape == mask.shape):
        raise ValueError(f"expected pred, gt, mask of one shape, got {tuple(pred_depth.shape)}, "
                         f"{tuple(gt_depth.shape)}, {tuple(mask.shape)}")
    return (pred_depth - gt_depth).abs()[mask].sum() / mask.sum().clamp(min=1)
