"""Probing a frozen encoder: train a head on fixed tokens, then ask where its depth is wrong.

The protocol of DINOv2's depth evaluation, at toy size: the shipped pretrained tiny DUSt3R's backbone is
frozen, its view-1 token lists are computed once, and only a new head (random weights) learns, with
DUSt3R's confidence-aware loss on view 1's point map. `make probe-bench` (scripts/probe_bench.py) and
lecture 11 compare DUSt3R's two heads this way:

    frozen_tokens   backbone(img1, img2) -> view 1's dec_depth + 1 tensors (S, N, C), no gradient
    train_head      AdamW, warm-up + cosine, the conf loss over view 1 only; tokens never change
    predict_head    the head's pts3d / conf / depth on held-out tokens
    point_errors    the loss taken apart (3D error, the confidence's share, x/y against z) beside AbsRel

and measures the error where the two heads differ:

    edge_distance     pixels to the nearest depth edge (a 4-neighbour pair whose depths differ by more
                      than `jump` of the smaller one, or a valid pixel next to an invalid one), chessboard metric
    absrel_by_distance  pixel-pooled AbsRel (after per-image median alignment) in bins of that distance
    patch_seams       how much larger the depth steps across the p x p patch borders are than inside patches

`make probe-bench` also writes the two heads it trained (`save_probe_heads`): weights/probe_heads.pt, read by
`load_probe_heads` (SHA-256 checked, weights_only), so lecture 11 can show heads trained at full length.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..dust3r import dust3r_dpt_head
from ..linear_head import LinearHead
from .loop import ProgressBar, depth_metrics, lr_factor
from .losses import conf_regression_loss, normalize_pointmaps
from .pretrained import check_state_dict, expected_sha256, sha256_file

PROBE_WEIGHTS = Path(__file__).parent / "weights" / "probe_heads.pt"

NEAR_EDGE = 2          # "near a depth edge": at most this many pixels away (fixed before any run was made)
BINS = ((0, 0), (1, 1), (2, 3), (4, 7), (8, None))   # distance bins for the by-distance table, pixels


@torch.no_grad()
def frozen_tokens(model, data: dict[str, torch.Tensor], batch_size: int = 32) -> list[torch.Tensor]:
    """View 1's token list for every scene, from the frozen two-view backbone: dec_depth + 1 tensors (S, N, C)."""
    model.eval()
    parts = []
    for i in range(0, data["img1"].shape[0], batch_size):
        tok1, _ = model.backbone(data["img1"][i:i + batch_size], data["img2"][i:i + batch_size])  # lists of (b, N, C)
        parts.append(tok1)
    return [torch.cat(layer) for layer in zip(*parts)]  # each (S, N, C)


def train_head(head, tokens: list[torch.Tensor], data: dict[str, torch.Tensor], image_size, steps: int,
               batch_size: int = 16, lr: float = 2e-3, weight_decay: float = 0.05, warmup: int = 20,
               alpha: float = 0.2, seed: int = 0, log_every: int = 10, progress: bool = True, on_log=None) -> dict:
    """Train `head(tokens, image_size) -> {'pts3d', 'conf'}` on frozen `tokens` with DUSt3R's loss on view 1.

    Batches are drawn with a generator seeded by `seed` (the same draws for any head); the learning rate
    warms up over `warmup` steps and decays to 0 on a cosine. Returns {'step': [...], 'loss': [...], 'regr': [...]}
    (per `log_every` steps: the mean loss, and the mean 3D error alone, without the confidence) and 'seconds'.
    `on_log(step, head) -> dict`, if given, runs at every logged step (head in eval mode, no gradient, not
    timed); each of its items is appended to history[key]."""
    if steps < 1 or batch_size < 1:
        raise ValueError(f"expected steps >= 1 and batch_size >= 1, got {steps} and {batch_size}")
    n = tokens[0].shape[0]
    if data["pts1"].shape[0] != n:
        raise ValueError(f"expected labels for the {n} scenes of the tokens, got {data['pts1'].shape[0]}")
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.95), fused=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, steps, warmup))
    history, running, regr, t0 = {"step": [], "loss": [], "regr": []}, [], [], time.perf_counter()
    bar = ProgressBar(steps) if progress else None
    head.train()
    for step in range(1, steps + 1):
        idx = torch.randint(0, n, (batch_size,), generator=gen)  # (B,)
        out = head([t[idx] for t in tokens], image_size)       # pts3d (B, H, W, 3), conf (B, H, W)
        loss, info = conf_regression_loss([out], [data["pts1"][idx]], [data["mask1"][idx]], alpha)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(head.parameters(), 1.0)
        opt.step()
        sched.step()
        running.append(loss.item())
        regr.append(info["regr"])
        if not math.isfinite(running[-1]):
            raise FloatingPointError(f"expected a finite loss, got {running[-1]} at step {step} of {steps}")
        if step % log_every == 0 or step == steps:
            history["step"].append(step)
            history["loss"].append(sum(running) / len(running))
            history["regr"].append(sum(regr) / len(regr))
            running, regr = [], []
            if bar:
                bar.update(step, loss=history["loss"][-1])
            if on_log is not None:
                paused = time.perf_counter()
                head.eval()
                with torch.no_grad():
                    for k, v in on_log(step, head).items():
                        history.setdefault(k, []).append(v)
                head.train()
                t0 += time.perf_counter() - paused
    head.eval()
    history["seconds"] = time.perf_counter() - t0
    return history


@torch.no_grad()
def predict_head(head, tokens: list[torch.Tensor], image_size, batch_size: int = 32) -> dict[str, torch.Tensor]:
    """{'pts3d': (S, H, W, 3), 'conf': (S, H, W), 'depth': (S, H, W)} of `head` on every scene's tokens."""
    head.eval()
    outs = [head([t[i:i + batch_size] for t in tokens], image_size) for i in range(0, tokens[0].shape[0], batch_size)]
    pts = torch.cat([o["pts3d"] for o in outs])  # (S, H, W, 3)
    return {"pts3d": pts, "conf": torch.cat([o["conf"] for o in outs]), "depth": pts[..., 2]}


@torch.no_grad()
def point_errors(pred: dict[str, torch.Tensor], data: dict[str, torch.Tensor], alpha: float = 0.2) -> dict:
    """What DUSt3R's loss on view 1 is made of, next to the depth metric: {'loss', 'regr', 'conf_term', 'xy',
    'z', 'absrel'}. loss = regr-weighted-by-C - alpha * mean log C (`conf_regression_loss`); regr: mean 3D error
    ||X - X*|| after the loss's scale normalisation; conf_term = loss - regr (what the confidence adds); xy and z:
    the mean error of the (x, y) part and of z alone, same normalisation; absrel: depth AbsRel after per-image
    median alignment (`depth_metrics`)."""
    mask = data["mask1"]
    loss, info = conf_regression_loss([pred], [data["pts1"]], [mask], alpha)
    (pn,), _ = normalize_pointmaps([pred["pts3d"]], [mask])              # (S, H, W, 3)
    (gn,), _ = normalize_pointmaps([data["pts1"]], [mask])               # (S, H, W, 3)
    diff = pn - gn                                                       # (S, H, W, 3)
    absrel = depth_metrics(pred["pts3d"][..., 2], data["depth1"], mask, "median")["absrel"]
    return {"loss": loss.item(), "regr": info["regr"], "conf_term": loss.item() - info["regr"],
            "xy": diff[..., :2].norm(dim=-1)[mask].mean().item(), "z": diff[..., 2].abs()[mask].mean().item(),
            "absrel": absrel}


def depth_edges(depth: torch.Tensor, mask: torch.Tensor, jump: float = 0.15) -> torch.Tensor:
    """(B, H, W) bool: both pixels of every 4-neighbour pair whose depths differ by more than `jump` times the
    smaller one, and every valid pixel with an invalid 4-neighbour (an object's outline against the sky)."""
    if depth.shape != mask.shape or depth.dim() != 3:
        raise ValueError(f"expected depth and mask of one shape (B, H, W), got {tuple(depth.shape)}, {tuple(mask.shape)}")
    edge = torch.zeros_like(mask)
    for dim in (1, 2):                                                   # rows, then columns
        a, b = depth.narrow(dim, 0, depth.shape[dim] - 1), depth.narrow(dim, 1, depth.shape[dim] - 1)
        ma, mb = mask.narrow(dim, 0, mask.shape[dim] - 1), mask.narrow(dim, 1, mask.shape[dim] - 1)
        both = ma & mb
        step = both & ((a - b).abs() > jump * torch.minimum(a, b))      # (B, H-1, W) or (B, H, W-1)
        border = ma ^ mb                                                 # exactly one of the pair is valid
        pair = step | border
        edge.narrow(dim, 0, pair.shape[dim]).logical_or_(pair & ma)
        edge.narrow(dim, 1, pair.shape[dim]).logical_or_(pair & mb)
    return edge


def edge_distance(depth: torch.Tensor, mask: torch.Tensor, jump: float = 0.15, max_distance: int = 16) -> torch.Tensor:
    """(B, H, W) long: chessboard distance in pixels to the nearest `depth_edges` pixel (0 on an edge), capped at
    `max_distance` (also where an image has no edge at all)."""
    edge = depth_edges(depth, mask, jump).float()[:, None]              # (B, 1, H, W)
    dist = torch.full(depth.shape, max_distance, dtype=torch.long)       # (B, H, W)
    reached = edge
    for d in range(max_distance):
        dist[(reached[:, 0] > 0) & (dist == max_distance)] = d
        reached = F.max_pool2d(reached, 3, stride=1, padding=1)          # grow by one pixel, 8-neighbourhood
    return dist


def aligned_relative_error(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, H, W): |d - d*| / d* after scaling each prediction by median(gt) / median(pred) over its valid
    pixels (as `depth_metrics` aligns); 0 at invalid pixels."""
    rel = torch.zeros_like(gt)
    for b in range(pred.shape[0]):
        m = mask[b]
        if m.any():
            p = pred[b].clamp(min=1e-6)
            p = p * (gt[b][m].median() / p[m].median())
            rel[b][m] = ((p - gt[b]).abs() / gt[b])[m]
    return rel


def absrel_by_distance(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, dist: torch.Tensor,
                       bins=BINS) -> list[dict]:
    """Pixel-pooled AbsRel per distance bin: [{'bin': (lo, hi), 'share': share of valid pixels, 'absrel'}]."""
    rel = aligned_relative_error(pred, gt, mask)
    rows = []
    for lo, hi in bins:
        sel = mask & (dist >= lo) & (dist <= (hi if hi is not None else dist.max()))
        rows.append({"bin": (lo, hi), "share": sel.sum().item() / max(1, mask.sum().item()),
                     "absrel": rel[sel].mean().item() if sel.any() else float("nan")})
    return rows


def near_edge_absrel(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, dist: torch.Tensor,
                     within: int = NEAR_EDGE) -> float:
    """Pixel-pooled AbsRel over the valid pixels at most `within` pixels from a depth edge."""
    sel = mask & (dist <= within)
    if not sel.any():
        raise ValueError(f"no valid pixel lies within {within} px of a depth edge")
    return aligned_relative_error(pred, gt, mask)[sel].mean().item()


def patch_seams(depth: torch.Tensor, mask: torch.Tensor, patch_size: int) -> float:
    """Mean |horizontal + vertical depth step| between neighbours on either side of a patch border, divided by
    the mean step between neighbours inside a patch (valid pairs only). A smooth map gives ~1, a map painted
    patch by patch (each patch on its own) much more."""
    p = patch_size
    if p < 2:
        raise ValueError(f"expected a patch size of at least 2, got {patch_size}")
    seam, inner = [], []
    for dim in (1, 2):
        n = depth.shape[dim]
        a, b = depth.narrow(dim, 0, n - 1), depth.narrow(dim, 1, n - 1)
        ok = mask.narrow(dim, 0, n - 1) & mask.narrow(dim, 1, n - 1)
        step = (a - b).abs()
        border = (torch.arange(n - 1) % p) == p - 1                        # pair (k, k+1) crosses a border
        shape = [1, 1, 1]
        shape[dim] = n - 1
        border = border.view(shape).expand_as(ok)
        seam.append(step[ok & border])
        inner.append(step[ok & ~border])
    return (torch.cat(seam).mean() / torch.cat(inner).mean().clamp(min=1e-12)).item()


def evaluate_head(pred: dict[str, torch.Tensor], data: dict[str, torch.Tensor], dist: torch.Tensor) -> dict:
    """Held-out numbers of one head: AbsRel, delta1, AbsRel of the most confident half (`depth_metrics`) and
    the near-edge AbsRel (`near_edge_absrel`)."""
    m = depth_metrics(pred["depth"], data["depth1"], data["mask1"], "median", conf=pred["conf"])
    m["edge_absrel"] = near_edge_absrel(pred["depth"], data["depth1"], data["mask1"], dist)
    return m


def probe_dpt_head(config, feature_dim: int = 16):
    """A DUSt3R DPT head for a TinyDUSt3RConfig's tokens, `feature_dim` wide (last_dim half of it, layer_dims
    0.5x, 1x, 2x, 4x of it), in eval mode on the CPU. The model's own head is feature_dim 32."""
    return dust3r_dpt_head(enc_embed_dim=config.enc_embed_dim, dec_embed_dim=config.dec_embed_dim,
                           dec_depth=config.dec_depth, patch_size=config.patch_size, feature_dim=feature_dim,
                           last_dim=feature_dim // 2, layer_dims=tuple(feature_dim * k // 2 for k in (1, 2, 4, 8)),
                           device="cpu")


def save_probe_heads(path, dpt, linear, meta: dict) -> str:
    """Both heads' float32 weights + meta (the recipe, the held-out numbers) to `path`, its SHA-256 to
    `path`.sha256. Returns the digest."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {name: {k: v.detach().cpu().float() for k, v in head.state_dict().items()}
             for name, head in (("dpt", dpt), ("linear", linear))}
    torch.save({"state_dict": state, "meta": meta}, path)
    digest = sha256_file(path)
    Path(f"{path}.sha256").write_text(f"{digest}  {path.name}\n")
    return digest


def load_probe_heads(config, path=None) -> tuple[dict, dict]:
    """({'dpt': head, 'linear': LinearHead}, meta) as `make probe-bench` trained them on `config`'s tokens
    (default: the shipped weights/probe_heads.pt, its SHA-256 checked first), in eval mode on the CPU."""
    path = Path(path) if path is not None else PROBE_WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(f"expected probe heads at {path}, not found (`make probe-bench` writes them with --save)")
    want, got = expected_sha256(path), sha256_file(path)
    if want != got:
        raise ValueError(f"checksum mismatch for {path}: expected sha256 {want}, got {got}")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or set(ckpt) != {"state_dict", "meta"} or set(ckpt["state_dict"]) != {"dpt", "linear"}:
        raise ValueError(f"expected {{'state_dict': {{'dpt', 'linear'}}, 'meta'}} in {path}")
    meta = ckpt["meta"]
    heads = {"dpt": probe_dpt_head(config, int(meta["feature_dim"])),
             "linear": LinearHead(config.dec_embed_dim, config.patch_size).eval()}
    for name, head in heads.items():
        check_state_dict(head.state_dict(), ckpt["state_dict"][name], f"{path} ({name})")
        head.load_state_dict(ckpt["state_dict"][name])
    return heads, meta
