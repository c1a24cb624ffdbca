"""DUSt3R's linear head against a DPT head on the shipped encoder's frozen tokens (``make probe-bench``).

The probing protocol of DINOv2's depth evaluation at toy size: the pretrained tiny DUSt3R
(dptlearn/train/weights/tiny_dust3r.pt) is frozen, view 1's token lists of freshly rendered scenes are
computed once, and two new heads with random weights learn from them with DUSt3R's confidence-aware loss,
the same steps on the same batches: a DPT head (dust3r_dpt_head) and DUSt3R's linear head (LinearHead, one
Linear per token painting its 8x8 patch). Held-out view-1 depth after per-image median alignment: AbsRel, and
AbsRel of the pixels at most 2 px from a depth edge (dptlearn.train.probe). The last line of output is one
JSON object: {"dpt_absrel", "linear_absrel", "dpt_edge_absrel", "linear_edge_absrel", "seconds"}
(seconds = wall time of everything, rendering included). Seeded and offline.

--controls also trains two control heads, the same steps on the same batches, to separate the causes
(is it the DPT head's parameters, or the four layers it reads?): "lin4", a linear head on the DPT head's
four hooked layers concatenated (DINOv2's "lin. 4" probe; each token still paints its own patch), and
"dpt4", a DPT head at feature_dim 4 with fewer parameters than the linear head. Their AbsRel and near-edge
AbsRel join the JSON line ("lin4_absrel", ...); the 120 s goal is for the two main heads' run without them.

Usage: python scripts/probe_bench.py [--steps N] [--train-scenes S] [--threads T] ...
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from dptlearn.linear_head import LinearHead
from dptlearn.tokens import dust3r_hook_indices
from dptlearn.train import load_pretrained, probe
from dptlearn.train.data import SyntheticScenes

# The recipe docs/training.md quotes; every value can be overridden on the command line.
# DPT head widths: the shipped model's own head is feature_dim 32 / last_dim 16 / layer_dims 16..128; the probe's
# DPT head is half as wide (layer_dims scale with feature_dim), which costs ~0.4x per step.
RUN = dict(train_scenes=512, test_scenes=64, steps=600, batch_size=16, lr=8e-3, linear_lr=5e-2, warmup=50,
           feature_dim=16, seed=0, test_seed=10_000, threads=1)


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for k, v in RUN.items():
        p.add_argument("--" + k.replace("_", "-"), type=type(v), default=v)
    # --threads: torch intra-op threads, 0 = torch's default. The probe's tensors are small and the machine is often
    # shared: one thread is about as fast as two there and never stalls on a descheduled partner.
    p.add_argument("--controls", action="store_true", help="also train the lin4 and dpt4 control heads")
    p.add_argument("--save", default="", help="write both trained heads here (the shipped file: "
                   "dptlearn/train/weights/probe_heads.pt)")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    a = parse(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    model, _ = load_pretrained(device="cpu")
    c = model.config
    size = (64, 96)
    print(f"probe-bench: frozen tiny DUSt3R ({c.patch_size}-pixel patches, {c.dec_depth + 1} token "
          f"layers of width {c.dec_embed_dim}), {a.steps} steps x batch {a.batch_size} per head, seed {a.seed}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)", flush=True)
    print(f"[1/{4 + 2 * a.controls}] rendering {a.train_scenes} training + {a.test_scenes} held-out scenes, frozen tokens ...",
          end=" ", flush=True)
    train_data = SyntheticScenes(a.train_scenes, size, seed=a.seed).batch(range(a.train_scenes))
    test_data = SyntheticScenes(a.test_scenes, size, seed=a.test_seed).batch(range(a.test_scenes))
    train_tok, test_tok = probe.frozen_tokens(model, train_data), probe.frozen_tokens(model, test_data)
    dist = probe.edge_distance(test_data["depth1"], test_data["mask1"])
    print(f"{time.perf_counter() - t0:.1f}s", flush=True)

    results, heads = {}, {}
    hooks = dust3r_hook_indices(c.dec_depth)
    runs = [("dpt", lambda: probe.probe_dpt_head(c, a.feature_dim), a.lr),
            ("linear", lambda: LinearHead(c.dec_embed_dim, c.patch_size), a.linear_lr)]
    if a.controls:
        runs += [("lin4", lambda: LinearHead(c.enc_embed_dim + 3 * c.dec_embed_dim, c.patch_size, layers=hooks),
                  a.linear_lr),
                 ("dpt4", lambda: probe.probe_dpt_head(c, 4), a.lr)]
    total = len(runs) + 2
    for i, (name, build, lr) in enumerate(runs):
        torch.manual_seed(a.seed)
        head = heads[name] = build()
        n_params = sum(p.numel() for p in head.parameters())
        print(f"[{i + 2}/{total}] {name} head, {n_params:,} parameters, lr {lr:g}", flush=True)
        hist = probe.train_head(head, train_tok, train_data, size, steps=a.steps, batch_size=a.batch_size, lr=lr,
                                warmup=a.warmup, seed=a.seed, log_every=max(1, a.steps // 20), progress=False)
        pred = probe.predict_head(head, test_tok, size)
        m = probe.evaluate_head(pred, test_data, dist)
        m["seams"] = probe.patch_seams(pred["depth"], test_data["mask1"], c.patch_size)
        m["by_distance"] = probe.absrel_by_distance(pred["depth"], test_data["depth1"], test_data["mask1"], dist)
        results[name] = m
        print(f"      loss {hist['loss'][0]:.4f} -> {hist['loss'][-1]:.4f} in {hist['seconds']:.1f}s "
              f"({1000 * hist['seconds'] / a.steps:.0f} ms/step); held-out AbsRel {m['absrel']:.4f}  "
              f"delta<1.25 {m['delta1']:.4f}  near-edge AbsRel {m['edge_absrel']:.4f}  "
              f"most confident half {m['absrel_conf50']:.4f}  patch seams {m['seams']:.2f}", flush=True)
        if name == "linear":
            main_seconds = time.perf_counter() - t0                   # the two main heads, rendering included

    seconds = time.perf_counter() - t0
    gt_seams = probe.patch_seams(test_data["depth1"], test_data["mask1"], c.patch_size)
    print(f"held-out view-1 depth, {a.test_scenes} scenes, median-aligned per image; pixel-pooled AbsRel by "
          f"distance to a depth edge (patch seams of the true depth: {gt_seams:.2f}):")
    print(f"      {'distance':>10s} {'pixels':>7s}" + "".join(f" {name:>7s}" for name in results))
    for k, d in enumerate(results["dpt"]["by_distance"]):
        lo, hi = d["bin"]
        label = f"{lo} px" if lo == hi else (f"{lo}-{hi} px" if hi is not None else f">= {lo} px")
        print(f"      {label:>10s} {d['share']:7.1%}" + "".join(f" {r['by_distance'][k]['absrel']:7.4f}"
                                                           for r in results.values()))
    dpt, lin = results["dpt"], results["linear"]
    goals = {"DPT AbsRel <= 0.08": dpt["absrel"] <= 0.08,
             "below the linear head's": dpt["absrel"] < lin["absrel"],
             f"near-edge (<= {probe.NEAR_EDGE} px) AbsRel at most half the linear head's":
                 dpt["edge_absrel"] <= 0.5 * lin["edge_absrel"],
             "within 120 s (the two main heads)": main_seconds <= 120}
    for goal, met in goals.items():
        print(f"goal {goal}: {'met' if met else 'not met'}")
    numbers = {"dpt_absrel": round(dpt["absrel"], 4), "linear_absrel": round(lin["absrel"], 4),
               "dpt_edge_absrel": round(dpt["edge_absrel"], 4), "linear_edge_absrel": round(lin["edge_absrel"], 4),
               "seconds": round(seconds, 1)}
    for name in ("lin4", "dpt4") if a.controls else ():
        numbers[f"{name}_absrel"] = round(results[name]["absrel"], 4)
        numbers[f"{name}_edge_absrel"] = round(results[name]["edge_absrel"], 4)
    if a.save:
        recipe = {k: getattr(a, k) for k in RUN}
        digest = probe.save_probe_heads(a.save, heads["dpt"], heads["linear"],
                                        {**recipe, "torch": str(torch.__version__), "results": numbers})
        print(f"wrote {a.save} (sha256 {digest})")
    print(json.dumps(numbers))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
