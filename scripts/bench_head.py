"""Benchmark the DPT head on the CPU (``make bench``): eager reference order, fast path, bfloat16.

For DUSt3R's head at 512x384 (H=384, W=512) and a course-sized head, batch 1, eval mode under
``torch.inference_mode()``, default threads (``--threads N`` to set them), four paths:

    eager     float32, reference order (``fast_inference = False``)
    fast      float32, the fast path (what ``head(tokens, (H, W))`` does by default)
    bf16      the head converted with ``.to(torch.bfloat16)``, fed bfloat16 tokens (fast path)
    autocast  the float32 head under ``torch.autocast("cpu", dtype=torch.bfloat16)`` (fast path)

It prints, per path: median and min forward time over all timed runs, process CPU time per
forward (all threads together; less disturbed by other processes than wall time), peak resident memory
of the process, analytic FLOPs (2 x conv MACs from the shape tracer; interpolation and
element-wise ops not counted) and achieved GFLOP/s; then the fast path's largest relative
difference from eager (must be < 1e-5) and bfloat16's and autocast's largest relative error
against float32 for ``pts3d`` and ``conf`` (``max |a - b| / max |b|``).

Each measurement runs in a fresh subprocess (so peak memory is per path, not cumulative), and
the paths take turns: ``--rounds`` rounds of eager, fast, bf16, autocast, each ``--runs`` timed
runs after one warm-up, so a burst of load from other processes hits every path alike. The
load average before and after is printed: on a shared machine, read the min as well as the median.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

CONFIGS = {
    "dust3r-512": dict(kwargs={}, size=(384, 512)),
    "course-small": dict(kwargs=dict(enc_embed_dim=192, dec_embed_dim=128, feature_dim=32, last_dim=16,
                                     layer_dims=(16, 32, 64, 128)), size=(384, 512)),
}
PATHS = ("eager", "fast", "bf16", "autocast")


def build(name: str, path: str = "fast"):
    """The seeded head and tokens of config ``name``, set up for ``path``."""
    from dptlearn.dust3r import dust3r_dpt_head
    from dptlearn.export import example_tokens
    cfg = CONFIGS[name]
    torch.manual_seed(0)
    head = dust3r_dpt_head(**cfg["kwargs"], device="cpu")
    tokens = example_tokens(head, cfg["size"], seed=1)   # 13 layers: encoder width, then decoder width
    head.dpt.fast_inference = path != "eager"
    if path == "bf16":
        head, tokens = head.to(torch.bfloat16), [t.to(torch.bfloat16) for t in tokens]
    return head, tokens, cfg["size"]


def precision(path: str):
    """The context a path runs its forward in."""
    return torch.autocast("cpu", dtype=torch.bfloat16) if path == "autocast" else contextlib.nullcontext()


def rss_mb(field: str = "VmHWM") -> float:
    """Peak (VmHWM) or current (VmRSS) resident memory of this process, in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(name: str, path: str, runs: int, threads: int) -> dict:
    if threads:
        torch.set_num_threads(threads)
    head, tokens, size = build(name, path)
    rss_build = rss_mb("VmRSS")
    wall, cpu = [], []
    with torch.inference_mode(), precision(path):
        head(tokens, size)                                   # warm-up
        for _ in range(runs):
            t0, c0 = time.perf_counter(), time.process_time()
            head(tokens, size)
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    return dict(wall=wall, cpu=cpu, rss_build_mb=rss_build, peak_rss_mb=rss_mb())


def measure(name: str, path: str, runs: int, threads: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", name, "--path", path, "--runs", str(runs),
                          "--threads", str(threads)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """``max |a - b| / max |b|``, in float32."""
    a, b = a.float(), b.float()
    return ((a - b).abs().max() / b.abs().max()).item()


def analyse(name: str) -> dict:
    """Parameters, FLOPs, and every path's outputs compared with the float32 fast path."""
    from dptlearn.viz.trace import trace_head
    outs = {}
    for path in PATHS:
        head, tokens, size = build(name, path)
        with torch.inference_mode(), precision(path):
            outs[path] = head(tokens, size)
        if path == "eager":
            eager = head, tokens, size      # traced below; the other heads are let go
    head, tokens, size = eager
    trace = trace_head(head, tokens, size)
    ref = outs["fast"]
    errors = {p: {k: rel_err(outs[p][k], ref[k]) for k in ref} for p in PATHS if p != "fast"}
    errors["autocast_vs_bf16"] = {k: rel_err(outs["autocast"][k], outs["bf16"][k]) for k in ref}
    return dict(params=sum(p.numel() for p in head.parameters()), flops=2 * trace.total_macs(), errors=errors,
                dtypes={p: str(outs[p]["pts3d"].dtype).replace("torch.", "") for p in PATHS})


def summary(samples: list[dict]) -> dict:
    """Pool the rounds of one path."""
    wall = [t for s in samples for t in s["wall"]]
    cpu = [t for s in samples for t in s["cpu"]]
    return dict(median=statistics.median(wall), min=min(wall), max=max(wall), cpu=statistics.median(cpu),
                rss_build_mb=max(s["rss_build_mb"] for s in samples),
                peak_rss_mb=max(s["peak_rss_mb"] for s in samples))


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=3, help="timed runs per path and round")
    p.add_argument("--rounds", type=int, default=3, help="rounds of eager, fast, bf16, autocast")
    p.add_argument("--worker")
    p.add_argument("--path", default="fast", choices=PATHS)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--configs", nargs="*", default=list(CONFIGS))
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.path, args.runs, args.threads)))
        return
    print(f"torch {torch.__version__}, {args.threads or torch.get_num_threads()} threads, batch 1, inference_mode, "
          f"{args.rounds} rounds x {args.runs} runs per path (each after 1 warm-up), paths interleaved; "
          f"load average (1/5/15 min) at start {load()}")
    results = {}
    for name in args.configs:
        info = analyse(name)
        samples = {path: [] for path in PATHS}
        for _ in range(args.rounds):
            for path in PATHS:
                samples[path].append(measure(name, path, args.runs, args.threads))
        r = {path: summary(s) for path, s in samples.items()}
        H, W = CONFIGS[name]["size"]
        print(f"\n{name}: {info['params']:,} parameters, input (H, W) = ({H}, {W}), "
              f"{info['flops'] / 1e9:.1f} GFLOP (2 x conv MACs) per forward")
        print(f"  {'path':<9} {'median':>9} {'min-max':>17} {'CPU/fwd':>8} {'GFLOP/s':>8} {'RSS after build':>16} "
              f"{'peak RSS':>9}  {'max rel. error vs float32 fast (pts3d, conf)'}")
        for path in PATHS:
            s = r[path]
            err = info["errors"].get(path)
            err = f"{err['pts3d']:.1e}, {err['conf']:.1e} ({info['dtypes'][path]} outputs)" if err else "(reference)"
            print(f"  {path:<9} {s['median'] * 1e3:7.1f}ms {s['min'] * 1e3:7.1f}-{s['max'] * 1e3:7.1f}ms "
                  f"{s['cpu']:7.2f}s {info['flops'] / s['median'] / 1e9:8.1f} {s['rss_build_mb']:13.0f} MB "
                  f"{s['peak_rss_mb']:6.0f} MB  {err}")
        eager, fast, bf16, ac = (r[p] for p in PATHS)
        diff = max(info["errors"]["eager"].values())
        print(f"  fast vs eager: {eager['median'] / fast['median']:.2f}x (min {eager['min'] / fast['min']:.2f}x); "
              f"max relative difference {diff:.1e} ({'OK' if diff < 1e-5 else 'MISMATCH'}, limit 1e-5)")
        for label, s in (("bf16", bf16), ("autocast", ac)):
            print(f"  {label} vs float32 fast: {fast['median'] / s['median']:.2f}x (min {fast['min'] / s['min']:.2f}x, "
                  f"CPU time {fast['cpu'] / s['cpu']:.2f}x); peak memory {s['peak_rss_mb'] / fast['peak_rss_mb']:.2f} "
                  f"of float32's")
        a = info["errors"]["autocast_vs_bf16"]
        print(f"  autocast vs bf16: max relative difference {a['pts3d']:.1e} (pts3d), {a['conf']:.1e} (conf)")
        results[name] = dict(r, errors=info["errors"])
    print(f"\nload average at end {load()}")
    print(json.dumps({k: dict(fast_vs_eager=round(v["eager"]["median"] / v["fast"]["median"], 3),
                              bf16_vs_fast=round(v["fast"]["median"] / v["bf16"]["median"], 3),
                              autocast_vs_fast=round(v["fast"]["median"] / v["autocast"]["median"], 3),
                              **{f"{p}_ms": round(v[p]["median"] * 1e3, 1) for p in PATHS})
                      for k, v in results.items()}))


if __name__ == "__main__":
    main()
