"""Benchmark the DPT head on the CPU (``make bench``); writes docs/benchmarks.md.

For DUSt3R's head at 512x384 (H=384, W=512) and a course-sized head, batch 1, eval mode under
``torch.inference_mode()``, default threads (``--threads N`` to set them), four paths:

    eager     float32, the plain head (the reference order every stage computes)
    fast      float32, ``dptlearn.fast.optimize_for_inference(head)``
    bf16      ``optimize_for_inference(head, torch.bfloat16)``, fed bfloat16 tokens
    autocast  ``optimize_for_inference(head)`` under ``torch.autocast("cpu", dtype=torch.bfloat16)``
    compile   (``--compile`` only) ``torch.compile`` of the plain float32 head, inductor with freezing

and, in the same rounds, the machine's own conv throughput in float32 and bfloat16 (``conv-f32``,
``conv-bf16``): the head's 3x3 256->256 fusion convs alone (channels-last, at the sizes and in the
numbers the head runs them), so each path's GFLOP/s is also printed as a fraction of what this CPU
does on that conv in the same dtype, at the same moment.

It prints, per path: median and min forward time over all timed runs, process CPU time per
forward (all threads together), peak resident memory of the process, analytic FLOPs (2 x conv MACs
from the shape tracer; interpolation and element-wise ops not counted) and achieved GFLOP/s; then
the fast path's largest relative difference from eager (must be < 1e-5), bfloat16's and autocast's
largest relative error against float32 (``max |a - b| / max |b|``), and a per-stage table (medians
of forward hooks' wall time around reassemble, each fusion block, the regression head, and the
post-processing as the rest).

Each measurement runs in a fresh subprocess (so peak memory is per path, not cumulative), and the
paths take turns: ``--rounds`` rounds of every path, each ``--runs`` timed runs after one warm-up,
so a burst of load from other processes hits every path alike; ratios come from the same run.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    "dust3r-512": dict(kwargs={}, size=(384, 512)),
    "course-small": dict(kwargs=dict(enc_embed_dim=192, dec_embed_dim=128, feature_dim=32, last_dim=16,
                                     layer_dims=(16, 32, 64, 128)), size=(384, 512)),
}
PATHS = ("eager", "fast", "bf16", "autocast")
CONV = ("conv-f32", "conv-bf16")
STAGES = ("reassemble", "fusion.3", "fusion.2", "fusion.1", "fusion.0", "head")


def build(name: str, path: str = "fast"):
    """The seeded head and tokens of config ``name``, set up for ``path``."""
    from dptlearn.dust3r import dust3r_dpt_head
    from dptlearn.export import example_tokens
    from dptlearn.fast import optimize_for_inference
    cfg = CONFIGS[name]
    torch.manual_seed(0)
    head = dust3r_dpt_head(**cfg["kwargs"], device="cpu")
    tokens = example_tokens(head, cfg["size"], seed=1)   # 13 layers: encoder width, then decoder width
    if path == "bf16":
        head, tokens = optimize_for_inference(head, torch.bfloat16), [t.to(torch.bfloat16) for t in tokens]
    elif path in ("fast", "autocast"):
        head = optimize_for_inference(head)
    elif path == "compile":
        import torch._inductor.config as inductor
        inductor.freezing = True
        head = torch.compile(head)
    return head, tokens, cfg["size"]


def conv_probe(name: str, dtype: torch.dtype):
    """The head's 3x3 D->D fusion convs alone, channels-last: (function running them once, FLOPs)."""
    cfg = CONFIGS[name]
    D = cfg["kwargs"].get("feature_dim", 256)
    nh, nw = cfg["size"][0] // 16, cfg["size"][1] // 16
    # fusion.3 has one residual unit (2 convs) at ceil(n/2); fusion.2, .1, .0 two units (4 convs) at n, 2n, 4n
    plan = [((-(-nh // 2), -(-nw // 2)), 2), ((nh, nw), 4), ((2 * nh, 2 * nw), 4), ((4 * nh, 4 * nw), 4)]
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(D, D, 3, padding=1).to(dtype).to(memory_format=torch.channels_last).eval()
    xs = [(torch.randn(1, D, h, w).to(dtype).contiguous(memory_format=torch.channels_last), k) for (h, w), k in plan]
    flops = sum(2 * D * D * 9 * x.shape[2] * x.shape[3] * k for x, k in xs)

    def run():
        for x, k in xs:
            for _ in range(k):
                conv(x)
    return run, flops


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


def stage_times(head, tokens, size, path: str, runs: int) -> dict:
    """Median wall time per stage (forward hooks around each stage module; postprocess = the rest)."""
    dpt = head.dpt
    marks: dict[str, list[float]] = {}
    handles = []
    for name in STAGES + ("dpt",):
        m = dpt if name == "dpt" else dpt.get_submodule(name)
        handles.append(m.register_forward_pre_hook(lambda _m, _a, n=name: marks.setdefault(n, []).append(-time.perf_counter())))
        handles.append(m.register_forward_hook(lambda _m, _a, _o, n=name: marks[n].append(marks[n].pop() + time.perf_counter())))
    total = []
    with torch.inference_mode(), precision(path):
        for _ in range(runs):
            t0 = time.perf_counter()
            head(tokens, size)
            total.append(time.perf_counter() - t0)
    for h in handles:
        h.remove()
    out = {n: statistics.median(marks[n]) for n in STAGES}
    out["postprocess"] = statistics.median(t - d for t, d in zip(total, marks["dpt"]))
    return out


def worker(name: str, path: str, runs: int, threads: int) -> dict:
    if threads:
        torch.set_num_threads(threads)
    wall, cpu, extra = [], [], {}
    if path in CONV:
        fn, flops = conv_probe(name, torch.bfloat16 if path == "conv-bf16" else torch.float32)
        extra["flops"] = flops
    else:
        head, tokens, size = build(name, path)

        def fn():
            head(tokens, size)
    rss_build = rss_mb("VmRSS")
    with torch.inference_mode(), precision(path):
        t0 = time.perf_counter()
        fn()                                                 # warm-up (for compile: the compilation)
        extra["first_call"] = time.perf_counter() - t0
        for _ in range(runs):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    if path in PATHS:
        extra["stages"] = stage_times(head, tokens, size, path, runs)
    return dict(wall=wall, cpu=cpu, rss_build_mb=rss_build, peak_rss_mb=rss_mb(), **extra)


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
    """Parameters, FLOPs (total and per stage), and every path's outputs compared with the plain float32 head."""
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
    by_stage = {s: 0 for s in STAGES}
    for k, macs in trace.macs_by_stage().items():     # 'reassemble.branches.0', 'fusion.2', 'head', ...
        by_stage["reassemble" if k.startswith("reassemble.") else k] += 2 * macs
    ref = outs["eager"]
    errors = {p: {k: rel_err(outs[p][k], ref[k]) for k in ref} for p in PATHS if p != "eager"}
    errors["autocast_vs_bf16"] = {k: rel_err(outs["autocast"][k], outs["bf16"][k]) for k in ref}
    return dict(params=sum(p.numel() for p in head.parameters()), flops=2 * trace.total_macs(), errors=errors,
                stage_flops=by_stage, dtypes={p: str(outs[p]["pts3d"].dtype).replace("torch.", "") for p in PATHS})


def summary(samples: list[dict]) -> dict:
    """Pool the rounds of one path."""
    wall = [t for s in samples for t in s["wall"]]
    cpu = [t for s in samples for t in s["cpu"]]
    out = dict(median=statistics.median(wall), min=min(wall), max=max(wall), cpu=statistics.median(cpu),
               rss_build_mb=max(s["rss_build_mb"] for s in samples),
               peak_rss_mb=max(s["peak_rss_mb"] for s in samples),
               first_call=statistics.median(s["first_call"] for s in samples))
    if "flops" in samples[0]:
        out["flops"] = samples[0]["flops"]
    if "stages" in samples[0]:
        out["stages"] = {k: statistics.median(s["stages"][k] for s in samples) for k in samples[0]["stages"]}
    return out


def ratio(samples: dict, a: str, b: str, flops: tuple[float, float] = (1.0, 1.0)) -> tuple[float, float]:
    """``time(a) / time(b)`` (or, with ``flops``, a's GFLOP/s over b's): the median of the per-round ratios
    (a and b measured minutes apart at most), and the ratio of the minima (the least disturbed runs)."""
    per_round = [statistics.median(sa["wall"]) / statistics.median(sb["wall"]) for sa, sb in zip(samples[a], samples[b])]
    mins = min(t for s in samples[a] for t in s["wall"]) / min(t for s in samples[b] for t in s["wall"])
    scale = flops[1] / flops[0]        # GFLOP/s ratio = (flops_a / t_a) / (flops_b / t_b)
    if flops != (1.0, 1.0):
        return 1 / statistics.median(per_round) / scale, 1 / mins / scale
    return statistics.median(per_round), mins


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def machine() -> str:
    model, flags = platform.processor() or "unknown CPU", set()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name") and model in ("unknown CPU", platform.processor()):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return (f"{model}; {os.cpu_count()} logical CPUs visible; {', '.join(isa) or 'no AVX2'}; "
            f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}; "
            f"oneDNN bfloat16 {'yes' if torch.ops.mkldnn._is_mkldnn_bf16_supported() else 'no'}")


def report(name: str, info: dict, r: dict, paths: tuple, samples: dict) -> list[str]:
    """The printed (and written) lines for one config."""
    H, W = CONFIGS[name]["size"]
    peak = {"float32": info["flops_conv"]["conv-f32"], "bfloat16": info["flops_conv"]["conv-bf16"]}
    lines = [f"### {name}: {info['params']:,} parameters, (H, W) = ({H}, {W}), "
             f"{info['flops'] / 1e9:.1f} GFLOP (2 x conv MACs) per forward", "",
             "| path | median | min-max | CPU/fwd | GFLOP/s | of conv peak | peak RSS | max rel. error vs eager (pts3d, conf) |",
             "|---|---|---|---|---|---|---|---|"]
    for path in paths:
        s = r[path]
        err = info["errors"].get(path)
        err = f"{err['pts3d']:.1e}, {err['conf']:.1e} ({info['dtypes'][path]})" if err else "(reference)"
        gfs = info["flops"] / s["median"] / 1e9
        frac = gfs / peak["bfloat16" if path in ("bf16", "autocast") else "float32"]
        extra = f"; first call {s['first_call']:.0f} s" if path == "compile" else ""
        lines.append(f"| {path} | {s['median'] * 1e3:.1f} ms | {s['min'] * 1e3:.1f}-{s['max'] * 1e3:.1f} ms | "
                     f"{s['cpu']:.2f} s | {gfs:.1f} | {frac:.2f} | {s['peak_rss_mb']:.0f} MB | {err}{extra} |")
    for c in CONV:
        s = r[c]
        lines.append(f"| {c} (probe) | {s['median'] * 1e3:.1f} ms | {s['min'] * 1e3:.1f}-{s['max'] * 1e3:.1f} ms | "
                     f"{s['cpu']:.2f} s | {peak['bfloat16' if 'bf16' in c else 'float32']:.1f} | 1 | "
                     f"{s['peak_rss_mb']:.0f} MB | {s['flops'] / 1e9:.1f} GFLOP of 3x3 convs |")
    diff = max(info["errors"]["fast"].values())
    fe, bf, be, af = (ratio(samples, *pair) for pair in (("fast", "eager"), ("fast", "bf16"), ("eager", "bf16"),
                                                         ("fast", "autocast")))
    fl = (info["flops"], r["conv-f32"]["flops"])
    frac = {p: ratio(samples, p, "conv-bf16" if p in ("bf16", "autocast") else "conv-f32", fl) for p in PATHS}
    both = lambda x, f="{:.2f}": f"**{f.format(x[0])}** (minima: {f.format(x[1])})"   # noqa: E731
    lines += ["", "Ratios: the median of the per-round ratios, then (in brackets) the ratio of the minima.", "",
              f"- fast / eager time: {both(fe)}, goal <= 0.80; max relative difference {diff:.1e} "
              f"({'OK' if diff < 1e-5 else 'MISMATCH'}, limit 1e-5)",
              f"- bf16 speed-up over float32 fast: {both(bf, '{:.2f}x')}, goal >= 2.0x; over eager "
              f"{both(be, '{:.2f}x')}; autocast over fast {both(af, '{:.2f}x')}",
              f"- GFLOP/s as a fraction of this CPU's own 3x3 conv throughput in the same dtype: eager "
              f"{both(frac['eager'])}, float32 fast {both(frac['fast'])} (goal 0.85), bf16 {both(frac['bf16'])} "
              f"(goal 0.60), autocast {both(frac['autocast'])}", "",
              "| stage | GFLOP | " + " | ".join(f"{p} ms" for p in PATHS) + " | bf16 GFLOP/s | bf16 of conv peak |",
              "|---|---|" + "---|" * (len(PATHS) + 2)]
    for st in STAGES + ("postprocess",):
        fl = info["stage_flops"].get(st, 0)
        t = {p: r[p]["stages"][st] for p in PATHS}
        rate = f"{fl / t['bf16'] / 1e9:.0f} | {fl / t['bf16'] / 1e9 / peak['bfloat16']:.2f}" if fl else "- | -"
        lines.append(f"| {st} | {fl / 1e9:.1f} | " + " | ".join(f"{t[p] * 1e3:.1f}" for p in PATHS) + f" | {rate} |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=3, help="timed runs per path and round")
    p.add_argument("--rounds", type=int, default=4, help="rounds of every path")
    p.add_argument("--worker")
    p.add_argument("--path", default="fast", choices=PATHS + CONV + ("compile",))
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--configs", nargs="*", default=list(CONFIGS))
    p.add_argument("--compile", action="store_true", help="also time torch.compile (about a minute to compile)")
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"), help="the Markdown report ('' for none)")
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.path, args.runs, args.threads)))
        return
    paths = PATHS + (("compile",) if args.compile else ())
    start_load = load()
    head_line = (f"torch {torch.__version__}, {args.threads or torch.get_num_threads()} threads, batch 1, "
                 f"inference_mode, {args.rounds} rounds x {args.runs} runs per path (each after 1 warm-up), "
                 f"paths interleaved; load average (1/5/15 min) at start {start_load}")
    print(head_line)
    lines = []
    for name in args.configs:
        info = analyse(name)
        samples = {path: [] for path in paths + CONV}
        for _ in range(args.rounds):
            for path in paths + CONV:
                samples[path].append(measure(name, path, args.runs, args.threads))
        r = {path: summary(s) for path, s in samples.items()}
        info["flops_conv"] = {c: r[c]["flops"] / r[c]["median"] / 1e9 for c in CONV}
        block = report(name, info, r, paths, samples)
        print("\n" + "\n".join(block))
        lines += [""] + block
    end_load = load()
    print(f"\nload average at end {end_load}")
    if args.out:
        write(Path(args.out), head_line, lines, end_load)
        print(f"wrote {args.out}")


def write(path: Path, head_line: str, lines: list[str], end_load: str) -> None:
    """docs/benchmarks.md: this run's figures; bench_onnx.py's section (between its markers) is kept."""
    kept = ""
    if path.exists():
        old = path.read_text(encoding="utf-8")
        if ONNX_BEGIN in old and ONNX_END in old:
            kept = old[old.index(ONNX_BEGIN):old.index(ONNX_END) + len(ONNX_END)]
    text = "\n".join([
        "# Benchmarks", "",
        "Written by `make bench` (`scripts/bench_head.py`, then `scripts/bench_onnx.py` adds its section);",
        "do not edit by hand. Re-run it to measure your own machine.", "",
        f"- machine: {machine()}",
        f"- {head_line}; at end {end_load}", "",
        "**How to read these figures.** The machine is shared (2 cores, other programs running), so one",
        "timing alone means little. Every path runs in its own fresh process, the paths take turns round by",
        "round, each figure in a table is a median over all runs, and every claim below is a *ratio of two",
        "figures from the same run*, given twice: the median of the ratios within each round (the two paths",
        "measured at most a minute apart), and the ratio of the minima (the runs least disturbed by other",
        "programs; on a busy machine the better estimate of what the code costs): the fast head against",
        "the plain one, bfloat16 against float32, and each path's",
        "GFLOP/s against this CPU's own throughput on the head's 3x3 256->256 convs (`conv-f32`,",
        "`conv-bf16`: the same convs alone, channels-last, at the sizes and in the numbers the head runs",
        "them, measured in the same rounds). FLOPs are 2 x conv MACs from the shape tracer; interpolation",
        "and element-wise work is not counted, so it shows up as a lower fraction. The stage table times",
        "forward hooks around each stage (postprocess = the rest of the forward).", "",
        "Paths: **eager** is the plain head (the reference order every stage computes); **fast** is",
        "`dptlearn.fast.optimize_for_inference(head)` (channels-last, fused oneDNN conv+ReLU / conv+add, each",
        "fusion block's 1x1 conv before its upsample); **bf16** is `optimize_for_inference(head,",
        "torch.bfloat16)` with bfloat16 tokens; **autocast** is the fast head under",
        "`torch.autocast('cpu', dtype=torch.bfloat16)`; **compile** (`--compile`) is `torch.compile` of the",
        "plain head (inductor, freezing on): it works offline here, but compiling takes about a minute",
        "(its first call) for a few percent over the fast head, so optimize_for_inference keeps the",
        "fused eager modules.",
    ] + lines + ["", kept or f"{ONNX_BEGIN}\n(run scripts/bench_onnx.py)\n{ONNX_END}", ""])
    path.write_text(text, encoding="utf-8")


ONNX_BEGIN, ONNX_END = "<!-- bench_onnx -->", "<!-- /bench_onnx -->"


if __name__ == "__main__":
    main()
