"""Benchmark the DPT head on the CPU (``make bench``): eager reference order vs dptlearn's fast path.

For DUSt3R's head at 512x384 (H=384, W=512) and a course-sized head, batch 1, float32,
eval mode under ``torch.inference_mode()``, default threads, it prints: median forward
time over >= 5 runs (after one warm-up), min-max, peak resident memory of the process,
parameter count, analytic FLOPs (2 x conv MACs from the shape tracer; interpolation and
element-wise ops not counted) and achieved GFLOP/s, for both paths side by side, and
checks that the fast path's outputs match the eager path's to 1e-5 relative.

Each measurement runs in a fresh subprocess so peak memory is per path, not cumulative.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

CONFIGS = {
    "dust3r-512": dict(kwargs={}, size=(384, 512), enc=1024, dec=768),
    "course-small": dict(kwargs=dict(enc_embed_dim=192, dec_embed_dim=128, feature_dim=32, last_dim=16,
                                     layer_dims=(16, 32, 64, 128)), size=(384, 512), enc=192, dec=128),
}


def build(name: str):
    from dptlearn.dust3r import dust3r_dpt_head
    cfg = CONFIGS[name]
    torch.manual_seed(0)
    head = dust3r_dpt_head(**cfg["kwargs"], device="cpu")
    H, W = cfg["size"]
    g = torch.Generator().manual_seed(1)
    n = (H // 16) * (W // 16)
    tokens = [torch.randn(1, n, cfg["enc"] if i == 0 else cfg["dec"], generator=g) for i in range(13)]
    return head, tokens, cfg["size"]


def rss_mb(field: str = "VmHWM") -> float:
    """Peak (VmHWM) or current (VmRSS) resident memory of this process, in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(name: str, fast: bool, runs: int) -> dict:
    head, tokens, size = build(name)
    head.dpt.fast_inference = fast
    rss_build = rss_mb("VmRSS")
    times = []
    with torch.inference_mode():
        head(tokens, size)                                   # warm-up
        for _ in range(runs):
            t0 = time.perf_counter()
            head(tokens, size)
            times.append(time.perf_counter() - t0)
    return dict(median=statistics.median(times), min=min(times), max=max(times),
                rss_build_mb=rss_build, peak_rss_mb=rss_mb())


def measure(name: str, fast: bool, runs: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", name, "--fast", str(int(fast)),
                          "--runs", str(runs)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def analyse(name: str) -> dict:
    from dptlearn.viz.trace import trace_head
    head, tokens, size = build(name)
    trace = trace_head(head, tokens, size)
    with torch.inference_mode():
        head.dpt.fast_inference = False
        ref = head(tokens, size)
        head.dpt.fast_inference = True
        fast = head(tokens, size)
    rel = max(((fast[k] - ref[k]).abs().max() / ref[k].abs().max()).item() for k in ref)
    return dict(params=sum(p.numel() for p in head.parameters()), flops=2 * trace.total_macs(), rel_diff=rel)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--worker")
    p.add_argument("--fast", type=int, default=1)
    p.add_argument("--configs", nargs="*", default=list(CONFIGS))
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, bool(args.fast), args.runs)))
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, batch 1, inference_mode, "
          f"median of {args.runs} runs after 1 warm-up")
    results = {}
    for name in args.configs:
        info = analyse(name)
        H, W = CONFIGS[name]["size"]
        eager, fast = measure(name, False, args.runs), measure(name, True, args.runs)
        results[name] = dict(info, eager=eager, fast=fast)
        print(f"\n{name}: {info['params']:,} parameters, input (H, W) = ({H}, {W}), "
              f"{info['flops'] / 1e9:.1f} GFLOP (2 x conv MACs) per forward")
        print(f"  {'path':<7} {'median':>9} {'min-max':>17} {'GFLOP/s':>8} {'RSS after build':>16} {'peak RSS':>9}")
        for label, r in (("eager", eager), ("fast", fast)):
            print(f"  {label:<7} {r['median'] * 1e3:7.1f}ms {r['min'] * 1e3:7.1f}-{r['max'] * 1e3:7.1f}ms "
                  f"{info['flops'] / r['median'] / 1e9:8.1f} {r['rss_build_mb']:13.0f} MB {r['peak_rss_mb']:6.0f} MB")
        ok = "OK" if info["rel_diff"] < 1e-5 else "MISMATCH"
        print(f"  speed-up {eager['median'] / fast['median']:.2f}x; peak memory fast/eager "
              f"{fast['peak_rss_mb'] / eager['peak_rss_mb']:.2f}; max relative difference "
              f"{info['rel_diff']:.1e} ({ok}, limit 1e-5)")
    print(json.dumps({k: dict(speedup=round(v["eager"]["median"] / v["fast"]["median"], 3),
                              eager_ms=round(v["eager"]["median"] * 1e3, 1), fast_ms=round(v["fast"]["median"] * 1e3, 1))
                      for k, v in results.items()}))


if __name__ == "__main__":
    main()
