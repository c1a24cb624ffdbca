"""Train the tiny DUSt3R from scratch with a fixed seed and report held-out depth quality (``make train-bench``).

Phases: render the synthetic training and held-out scenes, build backbone + DPT head(s), train, evaluate.
Depth is the z channel of view 1's predicted point map. DUSt3R's point maps are only defined up to scale
(the loss normalises them), so AbsRel and delta<1.25 are computed after aligning each predicted depth map
to the ground truth by the ratio of medians. The last line of output is one JSON object:
{"absrel": ..., "delta1": ..., "seconds": ...}  (seconds = wall time of all phases, data included).

Usage: python scripts/train_bench.py [--steps N] [--seed S] [--threads T] [--save PATH] ...
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import fields

import torch

from dptlearn.train.backbone import TinyDUSt3R, TinyDUSt3RConfig
from dptlearn.train.data import SyntheticScenes
from dptlearn.train.loop import evaluate, save_checkpoint, train

# The configuration docs/training.md quotes; every value can be overridden on the command line.
# One head (view 1, DUSt3R's loss on its point map), 16-pixel patches: the fastest configuration to learn depth.
# Model widths and depths: TinyDUSt3RConfig's defaults (--layer-dims takes 4 comma-separated widths, --two-heads 0/1).
MODEL = TinyDUSt3RConfig(patch_size=16, two_heads=False)
RUN = dict(height=64, width=96, train_scenes=1152, test_scenes=64, steps=1100, batch_size=16, lr=4e-3,
           loss="conf", seed=0, test_seed=10_000, threads=2,
           # optimiser / schedule (see dptlearn.train.loop.train and lr_factor)
           warmup=20, final_lr=0.0, schedule="cosine", weight_decay=0.05, clip=1.0, ema=0.0, augment=0)


def to_cli(value):
    """A config value as the command line spells it: tuples comma-separated, booleans 0/1."""
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return int(value) if isinstance(value, bool) else value


def from_cli(text, like):
    """The inverse of `to_cli`, typed after the default `like`."""
    return tuple(int(v) for v in text.split(",")) if isinstance(like, tuple) else type(like)(text)


def model_config(a: argparse.Namespace) -> TinyDUSt3RConfig:
    return TinyDUSt3RConfig(**{f.name: from_cli(getattr(a, f.name), getattr(MODEL, f.name)) for f in fields(MODEL)})


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    model = {f.name: to_cli(getattr(MODEL, f.name)) for f in fields(MODEL)}
    for k, v in {**RUN, **model}.items():
        p.add_argument("--" + k.replace("_", "-"), type=type(v), default=v)
    # --threads: torch intra-op threads, 0 = torch's default. 2 threads give ~1.5x the steps/s of 1 on a quiet 2-core
    # CPU (batch 16: ~100 vs ~150 ms/step); on a busy machine use --threads 1 (two OpenMP threads stall whenever one
    # is descheduled).
    p.add_argument("--save", default="", help="write a checkpoint here after training")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    a = parse(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    t0 = time.perf_counter()
    size = (a.height, a.width)
    print(f"train-bench: {a.height}x{a.width} images, {a.steps} steps x batch {a.batch_size}, loss {a.loss!r}, "
          f"seed {a.seed}, torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)

    print(f"[1/4] rendering {a.train_scenes} training + {a.test_scenes} held-out scenes (two views each) ...",
          end=" ", flush=True)
    train_data = SyntheticScenes(a.train_scenes, size, seed=a.seed).batch(range(a.train_scenes))
    test_data = SyntheticScenes(a.test_scenes, size, seed=a.test_seed).batch(range(a.test_scenes))
    print(f"{time.perf_counter() - t0:.1f}s", flush=True)

    t1 = time.perf_counter()
    model = TinyDUSt3R(model_config(a), device="cpu")
    n_params = sum(p.numel() for p in model.parameters())
    print(f"[2/4] model: {n_params / 1e6:.2f}M parameters ({'two heads' if model.config.two_heads else 'one head'}, "
          f"patch {model.config.patch_size}) {time.perf_counter() - t1:.1f}s", flush=True)

    print("[3/4] training", flush=True)
    hist = train(model, train_data, steps=a.steps, batch_size=a.batch_size, lr=a.lr, loss=a.loss, seed=a.seed,
                 log_every=max(1, a.steps // 20), warmup=a.warmup, final_lr=a.final_lr, schedule=a.schedule,
                 weight_decay=a.weight_decay, clip=a.clip, ema=a.ema, augment=bool(a.augment))
    print(f"      loss {hist['loss'][0]:.4f} -> {hist['loss'][-1]:.4f} in {hist['seconds']:.1f}s "
          f"({1000 * hist['seconds'] / a.steps:.0f} ms/step)", flush=True)

    t3 = time.perf_counter()
    m = evaluate(model, test_data, align="median")
    seconds = time.perf_counter() - t0
    print(f"[4/4] held-out view-1 depth, {a.test_scenes} scenes, median-scale-aligned per image: "
          f"AbsRel {m['absrel']:.4f}  delta<1.25 {m['delta1']:.4f}  ({time.perf_counter() - t3:.1f}s)", flush=True)
    if a.save:
        save_checkpoint(a.save, model, hist)
        print(f"      checkpoint written to {a.save}")
    goal = m["absrel"] <= 0.10 and seconds <= 120
    print(f"goal AbsRel <= 0.10 within 120 s: {'met' if goal else 'not met'} "
          f"(AbsRel {m['absrel']:.3f}, {seconds:.0f} s)")
    print(json.dumps({"absrel": round(m["absrel"], 4), "delta1": round(m["delta1"], 4), "seconds": round(seconds, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
