"""The probe (dptlearn/train/probe.py, scripts/probe_bench.py): metrics on closed-form maps, and the whole
code path (frozen tokens, a head trained on them, the bench's JSON line) on a tiny budget."""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import math

import pytest
import torch

from _helpers import ROOT
from dptlearn.linear_head import LinearHead
from dptlearn.train import load_pretrained, probe
from dptlearn.train.data import SyntheticScenes


def step_map(left: float = 1.0, right: float = 2.0, H: int = 8, W: int = 10):
    """Depth `left` on columns 0-4, `right` on 5-9, every pixel valid: (1, H, W) depth and mask."""
    depth = torch.full((1, H, W), left)
    depth[..., W // 2:] = right
    return depth, torch.ones(1, H, W, dtype=torch.bool)


def test_a_step_is_an_edge_on_both_sides_and_distance_grows_by_one_per_column():
    depth, mask = step_map()
    edge = probe.depth_edges(depth, mask)
    assert edge[0].all(0).tolist() == [c in (4, 5) for c in range(10)] and not edge[0, :, [0, 3, 6, 9]].any()
    dist = probe.edge_distance(depth, mask)
    assert dist[0].tolist() == [[4, 3, 2, 1, 0, 0, 1, 2, 3, 4]] * 8


def test_a_step_below_the_jump_is_no_edge_and_distance_is_capped():
    depth, mask = step_map(2.0, 2.2)                               # 10 % < 15 %
    assert not probe.depth_edges(depth, mask).any()
    assert (probe.edge_distance(depth, mask, max_distance=16) == 16).all()
    assert probe.depth_edges(depth, mask, jump=0.05).any()


def test_the_outline_against_invalid_pixels_is_an_edge_on_the_valid_side_only():
    depth, mask = step_map(3.0, 3.0)
    mask[0, :, 7:] = False                                         # "sky" on columns 7-9
    edge = probe.depth_edges(depth, mask)
    assert edge[0].any(0).tolist() == [c == 6 for c in range(10)]
    assert probe.edge_distance(depth, mask)[0, 0, :7].tolist() == [6, 5, 4, 3, 2, 1, 0]


def test_near_edge_and_binned_absrel_in_closed_form():
    depth, mask = step_map()                                       # gt 1 | 2; 40 pixels each, median 1 (lower middle)
    pred = 3 * depth
    pred[0, :, 5] *= 1.1                                           # 10 % off on the right edge column only
    dist = probe.edge_distance(depth, mask)
    # pred's median is still 3 -> aligned by 1/3: relative error 0.1 on 8 pixels, 0 elsewhere.
    # 0.1 = (2.2 - 2) / 2 is a difference of float32 values near 2: their few roundings (units of 2^-23 each)
    # are 20x larger relative to 0.1, hence the tolerance
    tol = 20 * 4 * 2 ** -23
    assert math.isclose(probe.near_edge_absrel(pred, depth, mask, dist), 8 * 0.1 / 48, rel_tol=tol)  # cols 2..7
    rows = {r["bin"]: r for r in probe.absrel_by_distance(pred, depth, mask, dist)}
    assert math.isclose(rows[(0, 0)]["absrel"], 8 * 0.1 / 16, rel_tol=tol) and rows[(0, 0)]["share"] == 0.2
    assert rows[(1, 1)]["absrel"] == 0.0 and math.isnan(rows[(8, None)]["absrel"]) and rows[(8, None)]["share"] == 0


def test_patch_seams_is_one_for_a_ramp_and_four_for_a_ramp_with_steps_at_the_borders():
    x = torch.arange(8.0)
    ramp = x.expand(1, 8, 8)
    mask = torch.ones(1, 8, 8, dtype=torch.bool)
    assert math.isclose(probe.patch_seams(ramp + 5.0, mask, 4), 1.0, rel_tol=1e-6)
    # horizontal steps: 1 inside a patch, 1 + 3 across the border at column 3|4; vertical steps 0
    # seam mean (8 x 4 + 8 x 0) / 16 = 2, inner mean (48 x 1 + 48 x 0) / 96 = 0.5
    blocky = ramp + 3 * (x // 4).expand(1, 8, 8)
    assert math.isclose(probe.patch_seams(blocky, mask, 4), 4.0, rel_tol=1e-6)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small tensors: one torch thread is as fast, and does not stall on a busy machine; restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model, _ = load_pretrained(device="cpu")
    data = SyntheticScenes(8, (64, 96), seed=0).batch(range(8))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tokens = probe.frozen_tokens(model, data, batch_size=4)
    return model, data, tokens, before


def test_frozen_tokens_are_the_view_1_token_list_and_match_one_backbone_call(tiny):
    model, data, tokens, _ = tiny
    c = model.config
    assert len(tokens) == c.dec_depth + 1 == 11
    assert all(t.shape == (8, (64 // c.patch_size) * (96 // c.patch_size), 64) for t in tokens)   # (S, 8*12, C)
    with torch.no_grad():
        tok1, _ = model.backbone(data["img1"][4:], data["img2"][4:])
    assert torch.equal(tokens[-1][4:], tok1[-1])                   # the same computation repeated


def test_training_a_linear_head_on_frozen_tokens_lowers_its_loss_and_leaves_the_backbone(tiny):
    model, data, tokens, before = tiny
    kept = [t.clone() for t in tokens]
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        head = LinearHead(64, patch_size=8)
        hist = probe.train_head(head, tokens, data, (64, 96), steps=30, batch_size=4, lr=5e-2, warmup=5,
                                log_every=10, progress=False)
        runs.append(hist["loss"])
    first, last = runs[0][0], runs[0][-1]
    assert last < first - 0.3, f"loss {first:.3f} -> {last:.3f}"
    assert runs[0] == runs[1]                                      # seeded: the same run twice
    assert all(torch.equal(a, b) for a, b in zip(kept, tokens))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    pred = probe.predict_head(head, tokens, (64, 96))
    assert pred["pts3d"].shape == (8, 64, 96, 3) and pred["depth"].shape == pred["conf"].shape == (8, 64, 96)


def test_on_log_runs_at_logged_steps_in_eval_mode_and_leaves_the_training_alone(tiny):
    _, data, tokens, _ = tiny
    seen = []

    def on_log(step, head):
        seen.append((step, head.training, torch.is_grad_enabled()))
        return {"at": step} if step % 20 == 0 else {}

    runs = []
    for hook in (None, on_log):
        torch.manual_seed(0)
        runs.append(probe.train_head(LinearHead(64, patch_size=8), tokens, data, (64, 96), steps=40, batch_size=4,
                                     lr=5e-2, warmup=5, log_every=10, progress=False, on_log=hook))
    assert seen == [(10, False, False), (20, False, False), (30, False, False), (40, False, False)]
    assert runs[1]["at"] == [20, 40] and "at" not in runs[0]
    assert runs[0]["loss"] == runs[1]["loss"] and runs[0]["regr"] == runs[1]["regr"]   # same run, bit for bit
    assert len(runs[0]["regr"]) == len(runs[0]["loss"]) == 4 and all(r > 0 for r in runs[0]["regr"])


def pointmap_data(H: int = 4, W: int = 6):
    """A fronto-parallel plane at depth 2, pinhole points (u - W/2 + 0.5, v - H/2 + 0.5, 2) * 0.5: data + pts."""
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    pts = torch.stack([(u - W / 2 + 0.5) * 0.5, (v - H / 2 + 0.5) * 0.5, torch.full((H, W), 2.0)], -1)[None]  # (1, H, W, 3)
    mask = torch.ones(1, H, W, dtype=torch.bool)
    return {"pts1": pts, "mask1": mask, "depth1": pts[..., 2]}, pts


def test_point_errors_take_the_loss_apart_in_closed_form():
    data, pts = pointmap_data()
    conf = torch.full((1, 4, 6), 2.0)
    # a prediction 3x too far: after the scale normalisation it is exact; only -alpha log C is left
    same = probe.point_errors({"pts3d": 3 * pts, "conf": conf}, data)
    assert same["regr"] < 1e-6 and same["xy"] < 1e-6 and same["z"] < 1e-6 and same["absrel"] < 1e-6
    assert math.isclose(same["loss"], -0.2 * math.log(2.0), rel_tol=1e-5) and math.isclose(same["conf_term"], same["loss"], rel_tol=1e-5)
    # x mirrored: every norm, hence the scale, is unchanged; the error is |2x| / s, all in x, none in z or depth
    mirrored = pts * torch.tensor([-1.0, 1.0, 1.0])
    got = probe.point_errors({"pts3d": mirrored, "conf": torch.ones(1, 4, 6)}, data)
    s = pts.norm(dim=-1).mean().item()
    want = (2 * pts[..., 0].abs()).mean().item() / s
    assert math.isclose(got["xy"], want, rel_tol=1e-5) and math.isclose(got["regr"], want, rel_tol=1e-5)
    assert got["z"] == 0.0 and got["absrel"] == 0.0 and abs(got["conf_term"]) < 1e-6   # C = 1: log C = 0


def test_train_head_refuses_labels_for_other_scenes(tiny):
    _, data, tokens, _ = tiny
    half = {k: v[:4] for k, v in data.items()}
    with pytest.raises(ValueError, match="expected labels for the 8 scenes of the tokens, got 4"):
        probe.train_head(LinearHead(64, patch_size=8), tokens, half, (64, 96), steps=1, progress=False)


def test_probe_bench_prints_one_json_line_with_the_five_numbers_and_saves_heads_that_load(tmp_path, tiny):
    spec = importlib.util.spec_from_file_location("probe_bench", ROOT / "scripts" / "probe_bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = io.StringIO()
    saved = tmp_path / "probe_heads.pt"
    with contextlib.redirect_stdout(out):
        assert bench.main(["--train-scenes", "8", "--test-scenes", "4", "--steps", "2", "--batch-size", "2",
                           "--threads", "0", "--save", str(saved)]) == 0
    last = json.loads(out.getvalue().strip().splitlines()[-1])
    assert set(last) == {"dpt_absrel", "linear_absrel", "dpt_edge_absrel", "linear_edge_absrel", "seconds"}
    assert all(isinstance(v, float) and v > 0 for v in last.values())
    model = tiny[0]
    heads, meta = probe.load_probe_heads(model.config, saved)
    assert meta["steps"] == 2 and meta["results"] == last
    assert heads["linear"].proj.weight.shape == (4 * 8 * 8, 64)
    assert heads["dpt"].dpt.fusion[0].out_conv.weight.shape == (16, 16, 1, 1)      # feature_dim 16
    saved.write_bytes(saved.read_bytes() + b"x")
    with pytest.raises(ValueError, match="checksum mismatch"):
        probe.load_probe_heads(model.config, saved)


def test_probe_bench_controls_add_the_lin4_and_dpt4_numbers(tiny):
    spec = importlib.util.spec_from_file_location("probe_bench", ROOT / "scripts" / "probe_bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert bench.main(["--train-scenes", "8", "--test-scenes", "4", "--steps", "2", "--batch-size", "2",
                           "--controls"]) == 0
    text = out.getvalue()
    last = json.loads(text.strip().splitlines()[-1])
    assert set(last) == {"dpt_absrel", "linear_absrel", "dpt_edge_absrel", "linear_edge_absrel", "seconds",
                         "lin4_absrel", "lin4_edge_absrel", "dpt4_absrel", "dpt4_edge_absrel"}
    assert "lin4 head, 65,792 parameters" in text          # Linear(64 + 3 * 64, 4 * 8 * 8): 256 * 256 + 256
    assert "dpt4 head, 7,760 parameters" in text


def test_the_shipped_probe_heads_load_and_match_their_recorded_config(tiny):
    heads, meta = probe.load_probe_heads(tiny[0].config)
    assert (meta["train_scenes"], meta["steps"], meta["feature_dim"]) == (512, 600, 16)   # scripts/probe_bench.py RUN
    assert set(meta["results"]) == {"dpt_absrel", "linear_absrel", "dpt_edge_absrel", "linear_edge_absrel", "seconds"}
    assert sum(p.numel() for p in heads["linear"].parameters()) == 64 * 256 + 256
