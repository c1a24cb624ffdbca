"""Train loop, depth metrics, a text progress bar, and checkpoints for the tiny DUSt3R.

`train` draws seeded mini-batches from an in-memory batch dict (see `SyntheticScenes.batch`) and
optimises either DUSt3R's confidence-aware point-map loss (`loss='conf'`) or a plain L1 loss on
view 1's depth (`loss='l1'`). Depth of view 1 is the z channel of its predicted point map.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict

import torch

from ..device import get_device
from .backbone import TinyDUSt3R, TinyDUSt3RConfig
from .data import augment as augment_batch
from .losses import conf_regression_loss, l1_depth_loss


class ProgressBar:
    """`[#####.....] 120/400 loss 0.1234 3.2s` on one line, redrawn with a carriage return."""

    def __init__(self, total: int, width: int = 30, file=None):
        self.total, self.width, self.file = total, width, file or sys.stdout
        self.t0 = time.perf_counter()

    def update(self, step: int, **values: float) -> None:
        done = int(self.width * step / self.total)
        extra = " ".join(f"{k} {v:.4f}" for k, v in values.items())
        print(f"\r[{'#' * done}{'.' * (self.width - done)}] {step}/{self.total} {extra} "
              f"{time.perf_counter() - self.t0:.1f}s", end="", file=self.file, flush=True)
        if step >= self.total:
            print(file=self.file, flush=True)


def depth_metrics(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, align: str = "median",
                  conf: torch.Tensor | None = None) -> dict[str, float]:
    """AbsRel = mean |d - d*| / d* and delta1 = share of max(d/d*, d*/d) < 1.25, over valid pixels,
    computed per image and averaged. align='median' first rescales each prediction by
    median(gt) / median(pred) (for up-to-scale predictions); align='none' compares as is.
    With `conf` (B, H, W) also 'absrel_conf50': AbsRel over the most confident half (ceil(n/2)) of each image's
    valid pixels, after the same alignment, averaged over images like AbsRel."""
    if not (pred.shape == gt.shape == mask.shape) or pred.dim() != 3:
        raise ValueError(f"expected pred, gt, mask of one shape (B, H, W), got {tuple(pred.shape)}, "
                         f"{tuple(gt.shape)}, {tuple(mask.shape)}")
    if conf is not None and conf.shape != pred.shape:
        raise ValueError(f"expected conf of shape {tuple(pred.shape)}, got {tuple(conf.shape)}")
    if align not in ("median", "none"):
        raise ValueError(f"expected align 'median' or 'none', got {align!r}")
    absrel, delta1, absrel_conf50 = [], [], []
    for b, (p, g, m) in enumerate(zip(pred, gt, mask)):
        p, g = p[m].clamp(min=1e-6), g[m]  # (n,) each
        if g.numel() == 0:
            continue
        if align == "median":
            p = p * (g.median() / p.median())
        rel = (p - g).abs() / g  # (n,)
        absrel.append(rel.mean())
        delta1.append((torch.maximum(p / g, g / p) < 1.25).float().mean())
        if conf is not None:
            top = conf[b][m].topk((rel.numel() + 1) // 2).indices  # (ceil(n/2),) most confident valid pixels
            absrel_conf50.append(rel[top].mean())
    out = {"absrel": torch.stack(absrel).mean().item(), "delta1": torch.stack(delta1).mean().item()}
    if conf is not None:
        out["absrel_conf50"] = torch.stack(absrel_conf50).mean().item()
    return out


def compute_loss(model: TinyDUSt3R, batch: dict[str, torch.Tensor], loss: str = "conf",
                 alpha: float = 0.2) -> tuple[torch.Tensor, dict[str, float]]:
    """Forward one batch and return (loss, logs). The conf loss covers both views when the model has two heads."""
    res1, res2 = model(batch["img1"], batch["img2"] if model.head2 is not None else None)
    if loss == "conf":
        preds, gts, masks = [res1], [batch["pts1"]], [batch["mask1"]]
        if res2 is not None:
            preds, gts, masks = preds + [res2], gts + [batch["pts2_in_1"]], masks + [batch["mask2"]]
        return conf_regression_loss(preds, gts, masks, alpha)
    if loss == "l1":
        value = l1_depth_loss(res1["pts3d"][..., 2], batch["depth1"], batch["mask1"])
        return value, {}
    raise ValueError(f"expected loss 'conf' or 'l1', got {loss!r}")


def lr_factor(step: int, steps: int, warmup: int = 20, final: float = 0.0, shape: str = "cosine",
              decay_steps: int | None = None) -> float:
    """Learning-rate multiplier at 0-based `step` of `steps`: linear warm-up (s + 1) / warmup for the first
    `warmup` steps, times a decay from 1 to `final` over the last `decay_steps` steps (default: all `steps`).
    With f = the fraction of the decay done, clamped to [0, 1] (f = s / steps by default): 'cosine':
    final + (1 - final) * (1 + cos(pi f)) / 2; 'linear': final + (1 - final) * (1 - f). final=0 with 'cosine'
    is `train`'s original schedule; decay_steps < steps holds the rate constant first, then cools it down
    ("warm-up, stable, decay"), so every step before the cool-down is the same whatever `steps` is."""
    if shape not in ("cosine", "linear"):
        raise ValueError(f"expected shape 'cosine' or 'linear', got {shape!r}")
    if not 0.0 <= final <= 1.0:
        raise ValueError(f"expected final in [0, 1], got {final}")
    decay_steps = steps if decay_steps is None else decay_steps
    if not 0 < decay_steps <= steps:
        raise ValueError(f"expected decay_steps in [1, steps={steps}], got {decay_steps}")
    frac = min(max(step - (steps - decay_steps), 0), decay_steps) / decay_steps
    decay = 0.5 * (1 + math.cos(math.pi * frac)) if shape == "cosine" else 1.0 - frac
    return min(1.0, (step + 1) / max(1, warmup)) * (final + (1.0 - final) * decay)


def train(model: TinyDUSt3R, data: dict[str, torch.Tensor], steps: int, batch_size: int = 16, lr: float = 2e-3,
          weight_decay: float = 0.05, warmup: int = 20, loss: str = "conf", alpha: float = 0.2, seed: int = 0,
          log_every: int = 10, progress: bool = True, final_lr: float = 0.0, schedule: str = "cosine",
          clip: float = 1.0, ema: float = 0.0, betas: tuple[float, float] = (0.9, 0.95),
          augment: bool = False, callback=None, decay_steps: int | None = None, resume: dict | None = None,
          on_state=None) -> dict[str, list[float]]:
    """AdamW with linear warm-up and cosine decay (see `lr_factor`; `final_lr` is the end multiplier, `schedule`
    'cosine' or 'linear', `decay_steps` how many final steps the decay takes, default all). `clip` > 0 clips the
    gradient norm; `ema` > 0 keeps an exponential moving average of the weights (decay `ema`, bias-corrected) and
    copies it into the model at the end. `augment` exchanges the views and mirrors each drawn scene with
    probability 1/2 each (`dptlearn.train.data.augment`). `callback(step, weights)`, if given, runs after every
    logged step with the current weights (the EMA average if `ema` > 0, else the parameters themselves), one
    tensor per trainable parameter in `model.parameters()` order.
    `on_state(step, state)`, if given, runs after it with the whole training state (weights, optimiser, schedule,
    EMA, batch generator, history; tensors shared with the live run: save or copy them in the call), and
    `resume=state` continues from such a state: the steps after it are those of an uninterrupted run with these
    arguments (`steps` and `decay_steps` may differ from the first run's: the rate follows the new schedule, which
    must give the steps already taken the rates they had, else a ValueError names the first that differs).
    Returns {'step': [...], 'loss': [...]} (every log_every steps, each entry the mean loss since the previous
    one) plus 'seconds'."""
    if steps < 1 or batch_size < 1:
        raise ValueError(f"expected steps >= 1 and batch_size >= 1, got {steps} and {batch_size}")
    if not 0.0 <= ema < 1.0:
        raise ValueError(f"expected ema in [0, 1), got {ema}")
    lr_factor(0, steps, warmup, final_lr, schedule, decay_steps)  # validates final_lr, schedule and decay_steps
    device = next(model.parameters()).device
    n = data["img1"].shape[0]
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=tuple(betas),
                            fused=device.type in ("cpu", "cuda"))  # one kernel for all tensors: ~10% of a CPU step
    plan = dict(steps=steps, warmup=warmup, final=final_lr, shape=schedule, decay_steps=decay_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, **plan))
    params = [p for p in model.parameters() if p.requires_grad]
    avg = [p.detach().clone() for p in params] if ema else None
    history, running, t0 = {"step": [], "loss": []}, [], time.perf_counter()
    first = 1
    if resume is not None:
        first = _restore(resume, plan, model, opt, sched, avg, gen, history) + 1
        for g in opt.param_groups:  # the rate of the next step under this run's schedule
            g["lr"] = g["initial_lr"] * lr_factor(sched.last_epoch, **plan)
    bar = ProgressBar(steps) if progress else None
    model.train()
    for step in range(first, steps + 1):
        idx = torch.randint(0, n, (batch_size,), generator=gen)  # (B,)
        batch = {k: v[idx] for k, v in data.items()}
        if augment:
            batch = augment_batch(batch, gen)
        batch = {k: v.to(device) for k, v in batch.items()}
        value, _ = compute_loss(model, batch, loss, alpha)
        opt.zero_grad(set_to_none=True)
        value.backward()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        sched.step()
        if avg is not None:
            with torch.no_grad():  # bias-corrected EMA: early steps are not pulled towards the initial weights
                d = min(ema, (1.0 + step) / (10.0 + step))
                torch._foreach_lerp_(avg, [p.detach() for p in params], 1.0 - d)
        running.append(value.item())
        if not math.isfinite(running[-1]):
            raise FloatingPointError(f"expected a finite loss, got {running[-1]} at step {step} of {steps} "
                                     f"(lr {lr} too high for this model and batch?)")
        if step % log_every == 0 or step == steps:
            history["step"].append(step)
            history["loss"].append(sum(running) / len(running))
            running = []
            if bar:
                bar.update(step, loss=history["loss"][-1])
            if callback is not None:
                callback(step, avg if avg is not None else params)
            if on_state is not None:
                on_state(step, {"step": step, "model": model.state_dict(), "optimizer": opt.state_dict(),
                                "scheduler": sched.state_dict(), "schedule": plan, "ema": avg,
                                "generator": gen.get_state(),
                                "history": {k: list(v) for k, v in history.items()}})
    if avg is not None:
        with torch.no_grad():
            for p, a in zip(params, avg):
                p.copy_(a)
    history["seconds"] = time.perf_counter() - t0
    return history


def _restore(state: dict, plan: dict, model, opt, sched, avg, gen, history) -> int:
    """Load a state written through `train(on_state=...)` into this run's objects; returns its step. `plan`: this
    run's `lr_factor` arguments, which must give every step already taken the rate it was taken at."""
    want = {"step", "model", "optimizer", "scheduler", "schedule", "ema", "generator", "history"}
    if not isinstance(state, dict) or not want <= set(state):
        got = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"expected a training state with keys {sorted(want)}, got {got}")
    done, steps = state["step"], plan["steps"]
    if not 0 < done < steps:
        raise ValueError(f"expected a state before the last step ({steps}), got one after step {done}")
    then = [lr_factor(s, **state["schedule"]) for s in range(done)]
    now = [lr_factor(s, **plan) for s in range(done)]
    if then != now:                      # e.g. a cool-down that would have begun before the state's step
        s = next(i for i, (a, b) in enumerate(zip(then, now)) if a != b)
        raise ValueError(f"expected a schedule that gives the {done} steps already taken their rates; step {s + 1} "
                         f"was taken at {then[s]:.4g} x lr, this schedule sets {now[s]:.4g} x lr (choose one whose "
                         f"cool-down leaves them as they were)")
    if (state["ema"] is None) != (avg is None):
        raise ValueError(f"expected a state {'with' if avg is not None else 'without'} EMA weights, as `ema` asks, "
                         f"got one {'with' if state['ema'] is not None else 'without'}")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    if avg is not None:
        with torch.no_grad():
            for a, saved in zip(avg, state["ema"]):
                a.copy_(saved)
    gen.set_state(state["generator"])
    history.update({k: list(v) for k, v in state["history"].items()})
    return state["step"]


@torch.no_grad()
def predict(model: TinyDUSt3R, data: dict[str, torch.Tensor], batch_size: int = 32) -> dict[str, torch.Tensor]:
    """View-1 predictions for every scene: {'pts3d': (N, H, W, 3), 'conf': (N, H, W), 'depth': (N, H, W)}."""
    model.eval()
    device = next(model.parameters()).device
    outs = []
    for i in range(0, data["img1"].shape[0], batch_size):
        img2 = data["img2"][i:i + batch_size].to(device) if model.head2 is not None else None
        res1, _ = model(data["img1"][i:i + batch_size].to(device), img2)
        outs.append({k: v.cpu() for k, v in res1.items()})
    pts = torch.cat([o["pts3d"] for o in outs])  # (N, H, W, 3)
    return {"pts3d": pts, "conf": torch.cat([o["conf"] for o in outs]), "depth": pts[..., 2]}


def evaluate(model: TinyDUSt3R, data: dict[str, torch.Tensor], align: str = "median") -> dict[str, float]:
    """Held-out depth metrics of view 1, confidence-ranked AbsRel included (see `depth_metrics`)."""
    pred = predict(model, data)
    return depth_metrics(pred["depth"], data["depth1"], data["mask1"], align, conf=pred["conf"])


def save_checkpoint(path, model: TinyDUSt3R, history: dict | None = None) -> None:
    """Weights + the model's config as a plain dict (+ training history) in one torch.save file."""
    torch.save({"config": asdict(model.config), "state_dict": model.state_dict(), "history": history or {}}, path)


def load_checkpoint(path, device=None) -> tuple[TinyDUSt3R, dict]:
    """Rebuild the model from a checkpoint's config and load its weights. Returns (model, history)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict) or not {"config", "state_dict"} <= set(ckpt):
        raise ValueError(f"expected a checkpoint dict with 'config' and 'state_dict', got {type(ckpt).__name__}")
    model = TinyDUSt3R(TinyDUSt3RConfig(**ckpt["config"]), device="cpu")
    model.load_state_dict(ckpt["state_dict"])
    return model.to(get_device(device)), ckpt.get("history", {})
