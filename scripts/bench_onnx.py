"""onnxruntime beside torch for DUSt3R's head on the CPU (``make bench`` runs it after bench_head.py).

DUSt3R's head at 512x384 (H=384, W=512), seeded random weights, batch 1, default threads:

    torch eager   float32, the plain head (the reference order)
    torch fast    float32, ``dptlearn.fast.optimize_for_inference(head)``
    onnxruntime   the file ``dptlearn.export.to_onnx`` writes, CPUExecutionProvider, all graph
                  optimisations on

The three take turns, ``--rounds`` rounds of ``--runs`` timed runs each after one warm-up, so a
burst of load from other processes hits each alike; median and min per forward are printed, then
onnxruntime's largest difference from torch (``max |a - b| / max |b|`` for pts3d and conf). The
same lines replace this script's section of docs/benchmarks.md (``--out ''`` for none).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_head import ONNX_BEGIN, ONNX_END, ROOT, rel_err   # scripts/ is on sys.path when run as a script


def timed(fn, runs: int) -> list[float]:
    fn()                                   # warm-up
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", nargs=2, type=int, default=(384, 512), metavar=("H", "W"))
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    args = p.parse_args()
    try:
        import onnxruntime as ort
    except ImportError:
        sys.exit("bench_onnx: onnxruntime is not installed (make install pins it)")
    from dptlearn.dust3r import dust3r_dpt_head
    from dptlearn.export import example_tokens, to_onnx
    from dptlearn.fast import optimize_for_inference

    size = tuple(args.size)
    torch.manual_seed(0)
    head = dust3r_dpt_head(device="cpu")
    tokens = example_tokens(head, size, batch=1)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        path = to_onnx(head, os.path.join(tmp, "head.onnx"), size)
        print(f"export: {time.perf_counter() - t:.1f} s, {path.stat().st_size / 1e6:.1f} MB")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {f"tokens_{i}": x.numpy() for i, x in enumerate(tokens)}
    fast = optimize_for_inference(head)

    def torch_run(optimised: bool):
        with torch.inference_mode():
            return (fast if optimised else head)(tokens, size)

    paths = {"torch eager": lambda: torch_run(False), "torch fast": lambda: torch_run(True),
             "onnxruntime": lambda: session.run(None, feed)}
    times: dict[str, list[float]] = {k: [] for k in paths}
    load = os.getloadavg()[0]
    for _ in range(args.rounds):
        for name, fn in paths.items():
            times[name] += timed(fn, args.runs)
    lines = [f"DUSt3R head, (H, W) = {size}, batch 1, {torch.get_num_threads()} torch threads, {args.rounds} rounds "
             f"x {args.runs} runs per path, interleaved; load average {load:.1f} -> {os.getloadavg()[0]:.1f}", ""]
    eager = statistics.median(times["torch eager"])
    for name, ts in times.items():
        lines.append(f"- {name:12s} median {statistics.median(ts) * 1e3:8.1f} ms   min {min(ts) * 1e3:8.1f} ms   "
                     f"({statistics.median(ts) / eager:.2f} of eager)")
    want = torch_run(False)
    for name, got in zip(("pts3d", "conf"), session.run(None, feed)):
        ref = want[name]
        lines.append(f"- onnxruntime vs torch eager, {name}: max |diff| / max |torch| = "
                     f"{rel_err(torch.from_numpy(got), ref):.2e}")
    print("\n".join(lines))
    if args.out:
        out = Path(args.out)
        text = out.read_text(encoding="utf-8") if out.exists() else ""
        section = "\n".join([ONNX_BEGIN, "## onnxruntime beside torch (scripts/bench_onnx.py)", "", *lines, ONNX_END])
        if ONNX_BEGIN in text and ONNX_END in text:
            text = text[:text.index(ONNX_BEGIN)] + section + text[text.index(ONNX_END) + len(ONNX_END):]
        else:
            text = text + "\n" + section + "\n"
        out.write_text(text, encoding="utf-8")
        print(f"wrote its section of {out}")


if __name__ == "__main__":
    main()
