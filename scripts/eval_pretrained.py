"""Evaluate the shipped pretrained tiny DUSt3R on held-out scenes (``make eval-pretrained``).

The scenes come from seed 20000 (pretraining renders seed 0 only; its own check uses seed 30000, train-bench
and notebook 08 hold out seed 10000). Metrics are those of view 1's depth (the z channel of its point map),
each map median-scale-aligned to the truth, per image then averaged (`dptlearn.train.loop.depth_metrics`):
AbsRel, delta<1.25, and AbsRel over the 50% most confident valid pixels of each image. The last line of
output is one JSON object: {"absrel": ..., "delta1": ..., "absrel_conf50": ...}.

Usage: python scripts/eval_pretrained.py [--scenes N] [--seed S] [--checkpoint PATH]
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from dptlearn.train.data import SyntheticScenes
from dptlearn.train.loop import evaluate
from dptlearn.train.pretrained import WEIGHTS, load_pretrained

EVAL_SEED = 20_000


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenes", type=int, default=256)
    p.add_argument("--seed", type=int, default=EVAL_SEED)
    p.add_argument("--checkpoint", default=str(WEIGHTS))
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    if a.seed == 0:
        raise SystemExit("expected a held-out seed: seed 0 is the pretraining set")
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    model, meta = load_pretrained(a.checkpoint)
    print(f"checkpoint {a.checkpoint}: {meta.get('steps_done', '?')} steps, {meta.get('weights', '?')} weights, "
          f"trained in {meta.get('wall_seconds', 0) / 60:.0f} min wall")
    recipe = meta.get("recipe", {})
    size = (recipe.get("height", 64), recipe.get("width", 96))  # the image size it was trained on
    data = SyntheticScenes(a.scenes, size, seed=a.seed).batch(range(a.scenes))
    m = evaluate(model, data, align="median")
    print(f"held-out view-1 depth, {a.scenes} scenes (seed {a.seed}), median-scale-aligned per image: "
          f"AbsRel {m['absrel']:.4f}  delta<1.25 {m['delta1']:.4f}  AbsRel of the 50% most confident pixels "
          f"{m['absrel_conf50']:.4f} ({m['absrel_conf50'] / m['absrel']:.2f} x AbsRel)  "
          f"[{time.perf_counter() - t0:.0f}s]")
    goals = {"absrel <= 0.06": m["absrel"] <= 0.06, "absrel_conf50 <= 0.7 x absrel": m["absrel_conf50"] <= 0.7 * m["absrel"]}
    print("goals: " + ", ".join(f"{k} {'met' if ok else 'NOT met'}" for k, ok in goals.items()))
    print(json.dumps({k: round(m[k], 4) for k in ("absrel", "delta1", "absrel_conf50")}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
