"""Pretrain the course's tiny two-view DUSt3R (both heads) and write the checkpoint the package ships (``make pretrain``).

Two stages, both trained with dptlearn's own code on the same seeded synthetic scenes (seed 0, scenes
0..train_scenes-1; evaluation uses other seeds), with DUSt3R's confidence-aware loss over both views, views
exchanged and mirrored at random (seeded), AdamW with warm-up, a constant learning rate, then a linear cool-down to
0 over the last `cooldown` steps ("warm-up, stable, decay"), an exponential moving average (EMA) of the weights as
the result, two torch threads (the sums, hence the weights, depend on the thread count, not on the machine):

  --stage 1  notebook 08's model, TinyDUSt3RConfig(patch_size=16, two_heads=True): a 4x6 token grid at 64x96,
             cheap per step; 12000 steps from random weights -> artifacts/pretrain/stage1.pt (~45 min).
  --stage 2  the same model with 8-pixel patches (an 8x12 token grid, 2.5x the cost per step), started from
             stage 1's weights (`with_finer_patches`: only the patch embedding changes) and fine-tuned for 7000
             steps -> dptlearn/train/weights/tiny_dust3r.pt, the shipped checkpoint (~60 min).

Stage 1 alone stops at AbsRel ~0.07 however long it runs (docs/training.md: 40000 steps gave 0.071): a 16-pixel token grid
cannot draw depth edges sharply. Stage 2 buys the finer grid for a fraction of a from-scratch run at 8 pixels.

Every `checkpoint_every` steps the EMA weights are written to --work/step_N.pt in the shipped format, so a stopped
run still leaves a model. Every step before the cool-down is the same whatever --steps is, so a checkpoint of the
constant phase is reproduced by `--steps N --cooldown 0`. The whole training state (weights, optimiser, EMA, batch
generator) is kept in --work/state.pt at the same steps and at the end; `--resume` continues from it exactly as
the uninterrupted run would have gone on, also with more --steps or a later --cooldown (a run of the constant
phase can be extended, then cooled down). At the end the weights are written as float16 to --out with its
SHA-256 next to it, and the wall and CPU time are printed (a resumed run adds the time of the run it continues;
stage 2's meta also records stage 1's time).

Usage: python scripts/pretrain.py --stage {1,2} [--steps N] [--out PATH] ...   (see --help; defaults = the
shipped checkpoint's recipe)
"""
from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import time
from pathlib import Path

import torch

from dptlearn.train.backbone import TinyDUSt3R, TinyDUSt3RConfig
from dptlearn.train.data import SyntheticScenes
from dptlearn.train.loop import evaluate, train
from dptlearn.train.pretrained import WEIGHTS, expected_sha256, load_pretrained, save_pretrained, with_finer_patches

COMMON = dict(height=64, width=96, train_scenes=4096, seed=0, batch_size=16, weight_decay=0.05, clip=1.0, ema=0.999,
              augment=1, threads=2, checkpoint_every=250, check_seed=30_000, check_scenes=16)
STAGES = {
    1: dict(COMMON, patch_size=16, init="", steps=12_000, lr=3e-3, warmup=200, cooldown=3000,
            out="artifacts/pretrain/stage1.pt", work="artifacts/pretrain/stage1"),
    2: dict(COMMON, patch_size=8, init="artifacts/pretrain/stage1.pt", steps=7000, lr=1e-3, warmup=100,
            cooldown=3000, out=str(WEIGHTS), work="artifacts/pretrain/stage2"),
}
# Not part of the recipe: where the files go.
PLACES = ("out", "work")
HELP = {"out": "the final checkpoint (its .sha256 is written next to it)",
        "work": "folder for the periodic checkpoints step_N.pt and the training state state.pt",
        "init": "a checkpoint with larger patches to start from (stage 1's); empty: random weights"}


def model_config(patch_size: int) -> TinyDUSt3RConfig:
    """Notebook 08's two-view model with `patch_size`-pixel patches."""
    return TinyDUSt3RConfig(patch_size=patch_size, two_heads=True)


def parse(argv: list[str]) -> argparse.Namespace:
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--stage", type=int, choices=sorted(STAGES), default=2)
    stage = first.parse_known_args(argv)[0].stage
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stage", type=int, choices=sorted(STAGES), default=2,
                   help="1: 16-pixel patches from random weights; 2: 8-pixel patches from stage 1 (the shipped file)")
    for k, v in STAGES[stage].items():
        p.add_argument("--" + k.replace("_", "-"), type=type(v), default=v, help=HELP.get(k))
    p.add_argument("--resume", default="", help="a state.pt to continue from (same recipe; --steps and --cooldown "
                                                "may be larger, e.g. to train longer before cooling down)")
    a = p.parse_args(argv)
    if not 0 <= a.cooldown <= a.steps:
        p.error(f"--cooldown {a.cooldown} is longer than --steps {a.steps} (expected 0 <= cooldown <= steps)"
                if a.cooldown > a.steps else f"expected --cooldown >= 0, got {a.cooldown}")
    return a


def initial_weights(a: argparse.Namespace) -> tuple[TinyDUSt3R, dict, dict]:
    """The model to train and what it starts from: random weights (no --init), or --init's checkpoint with its
    patch embedding rewritten for --patch-size (`with_finer_patches`). Also returns what the start adds to the
    recipe ({'init_sha256'}: a resume onto another start is refused) and to the meta (its steps and time)."""
    model = TinyDUSt3R(model_config(a.patch_size), device="cpu")
    if not a.init:
        return model, {}, {}
    if not Path(a.init).is_file():
        raise SystemExit(f"expected stage 1's checkpoint at {a.init} (make pretrain writes it: "
                         f"scripts/pretrain.py --stage 1), not found")
    start, meta = load_pretrained(a.init)
    if start.config != model_config(start.config.patch_size) or start.config.patch_size <= a.patch_size:
        raise SystemExit(f"expected --init to hold {model_config(16)} or another model with patches larger than "
                         f"{a.patch_size}, got {start.config}")
    state = with_finer_patches(start.state_dict(), start.config.patch_size, a.patch_size)
    model.load_state_dict(state)
    return model, {"init_sha256": expected_sha256(a.init)}, {  # the digest load_pretrained has just checked
        "init_steps": meta.get("steps_done"), "init_wall_seconds": meta.get("wall_seconds", 0),
        "init_cpu_seconds": meta.get("cpu_seconds", 0)}


# Settings a resumed run may change: how long it goes on, when it cools down, how often it writes.
MAY_CHANGE_ON_RESUME = ("steps", "cooldown", "checkpoint_every", "init")  # init: its digest is compared


def load_state(path: str, recipe: dict) -> tuple[dict, dict]:
    """A training state written by this script (`--work`/state.pt) and the time it had taken, checked against
    `recipe`: every setting but MAY_CHANGE_ON_RESUME must be the same (the thread count included: the sums,
    hence the weights, depend on it)."""
    if not Path(path).is_file():
        raise SystemExit(f"expected a training state at {path} (pretrain writes --work/state.pt), not found")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "recipe" not in state:
        raise SystemExit(f"expected a training state written by scripts/pretrain.py in {path}, got another file")
    differ = {k: (state["recipe"].get(k), v) for k, v in recipe.items()
              if k not in MAY_CHANGE_ON_RESUME and state["recipe"].get(k) != v}
    if differ:
        raise SystemExit("cannot resume with another recipe: " + ", ".join(
            f"--{k.replace('_', '-')} was {old}, now {new}" for k, (old, new) in differ.items()))
    return state, state.get("elapsed", {"wall": 0.0, "cpu": 0.0})


def main(argv: list[str]) -> int:
    a = parse(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    size = (a.height, a.width)
    print(f"pretrain stage {a.stage}: {a.height}x{a.width}, {a.patch_size}-pixel patches"
          f"{f', from {a.init}' if a.init else ', from random weights'}, {a.train_scenes} scenes (seed {a.seed}), "
          f"{a.steps} steps x batch {a.batch_size}, torch {torch.__version__}, {torch.get_num_threads()} thread(s)",
          flush=True)
    train_data = SyntheticScenes(a.train_scenes, size, seed=a.seed).batch(range(a.train_scenes))
    check_data = SyntheticScenes(a.check_scenes, size, seed=a.check_seed).batch(range(a.check_scenes))
    print(f"rendered in {time.perf_counter() - wall0:.0f}s", flush=True)

    model, start_recipe, start_meta = initial_weights(a)
    recipe = {k: getattr(a, k) for k in STAGES[a.stage] if k not in PLACES}
    meta = {"recipe": {"stage": a.stage, **recipe, **start_recipe}, "torch": str(torch.__version__), **start_meta}
    work = Path(a.work)
    resume, spent = load_state(a.resume, meta["recipe"]) if a.resume else (None, {"wall": 0.0, "cpu": 0.0})
    if resume is not None:
        print(f"resuming after step {resume['step']} of a run that had taken {spent['wall'] / 60:.1f} min wall",
              flush=True)

    def elapsed() -> dict[str, float]:
        return {"wall": spent["wall"] + time.perf_counter() - wall0, "cpu": spent["cpu"] + time.process_time() - cpu0}

    def write(path: Path, weights: list[torch.Tensor], step: int, **extra) -> str:
        """Save `weights` (rounded to float16, as stored) with a check on held-out scenes in the meta."""
        snapshot = copy.deepcopy(model)
        with torch.no_grad():
            for p, w in zip([p for p in snapshot.parameters() if p.requires_grad], weights):
                p.copy_(w.half().float())  # the numbers the file will hold
        check = evaluate(snapshot, check_data)
        took = elapsed()
        info = {**meta, "steps_done": step, "weights": "EMA" if a.ema else "raw",
                "wall_seconds": round(took["wall"]), "cpu_seconds": round(took["cpu"]),
                "check": {"seed": a.check_seed, "scenes": a.check_scenes, **{k: round(v, 6) for k, v in check.items()}},
                **extra}
        digest = save_pretrained(path, snapshot, info)
        print(f"  step {step}: wrote {path}, check {info['check']} ({info['wall_seconds']}s wall, "
              f"{info['cpu_seconds']}s CPU)", flush=True)
        return digest

    def checkpoint(step: int, weights: list[torch.Tensor]) -> None:
        if step % a.checkpoint_every == 0:
            write(work / f"step_{step}.pt", weights, step)

    def keep_state(step: int, state: dict) -> None:
        if step % a.checkpoint_every == 0 or step == a.steps:  # replaced atomically: a kill never leaves half a file
            tmp = work / "state.pt.tmp"
            torch.save({**state, "recipe": meta["recipe"], "elapsed": elapsed()}, tmp)
            os.replace(tmp, work / "state.pt")

    hist = train(model, train_data, steps=a.steps, batch_size=a.batch_size, lr=a.lr, loss="conf", seed=a.seed,
                 log_every=math.gcd(50, a.checkpoint_every), warmup=a.warmup,
                 final_lr=0.0 if a.cooldown else 1.0, schedule="linear", decay_steps=a.cooldown or None,
                 weight_decay=a.weight_decay, clip=a.clip, ema=a.ema, augment=bool(a.augment), progress=False,
                 callback=checkpoint, on_state=keep_state, resume=resume)
    for s, l in zip(hist["step"][::10], hist["loss"][::10]):
        print(f"  step {s:5d} loss {l:.4f}")
    params = [p.detach() for p in model.parameters() if p.requires_grad]  # train() copied the EMA in
    digest = write(Path(a.out), params, a.steps, loss=[round(v, 4) for v in hist["loss"]])
    took = elapsed()
    print(f"wrote {a.out} ({Path(a.out).stat().st_size / 1e6:.1f} MB, sha256 {digest})")
    print(f"duration: {took['wall'] / 60:.1f} min wall, {took['cpu'] / 60:.1f} min CPU")
    if a.init:
        print(f"with stage 1 ({meta['init_steps']} steps): {(took['wall'] + meta['init_wall_seconds']) / 60:.1f} min "
              f"wall, {(took['cpu'] + meta['init_cpu_seconds']) / 60:.1f} min CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
