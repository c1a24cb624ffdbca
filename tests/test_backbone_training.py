"""Tiny two-view backbone + DUSt3R heads: token-list contract, shapes, one-batch overfit, metrics, checkpoints."""
import contextlib
import io
import math

import pytest
import torch

from dptlearn.train.backbone import PatchEmbed, TinyDUSt3R, TinyDUSt3RConfig, TinyTwoViewBackbone, sincos_pos_embed
from dptlearn.train.data import SyntheticScenes
from dptlearn.train.loop import (ProgressBar, compute_loss, depth_metrics, load_checkpoint, lr_factor, save_checkpoint,
                                 train)


pytestmark = pytest.mark.usefixtures("one_thread")


SMALL = dict(patch_size=8, enc_embed_dim=32, enc_depth=2, enc_num_heads=2, dec_embed_dim=32, dec_depth=10,
             dec_num_heads=2, feature_dim=16, last_dim=8, layer_dims=(8, 16, 16, 32))


def test_sincos_pos_embed_closed_form():
    pe = sincos_pos_embed(3, 5, 8)  # 2 frequencies: 1 and 100 ** -0.5 = 0.1
    assert pe.shape == (15, 8)
    r, c = 2, 4
    row = pe[r * 5 + c]  # row-major: token index = r * nw + c
    expect = [math.sin(r), math.sin(0.1 * r), math.cos(r), math.cos(0.1 * r),
              math.sin(c), math.sin(0.1 * c), math.cos(c), math.cos(0.1 * c)]
    torch.testing.assert_close(row, torch.tensor(expect), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_pos_embed(2, 2, 6)


def test_token_list_matches_the_dust3r_head_contract():
    torch.manual_seed(0)
    bb = TinyTwoViewBackbone(patch_size=8, enc_embed_dim=32, enc_depth=2, enc_num_heads=2,
                             dec_embed_dim=24, dec_depth=10, dec_num_heads=2)
    img1, img2 = torch.randn(2, 3, 32, 48), torch.randn(2, 3, 32, 48)
    tok1, tok2 = bb(img1, img2)
    N = (32 // 8) * (48 // 8)
    for tok in (tok1, tok2):
        assert len(tok) == 11
        assert tok[0].shape == (2, N, 32)
        assert all(t.shape == (2, N, 24) for t in tok[1:])
    single = bb(img1)
    assert isinstance(single, list) and len(single) == 11


def test_encoder_is_per_view_and_decoder_cross_attends():
    torch.manual_seed(0)
    bb = TinyTwoViewBackbone(patch_size=8, enc_embed_dim=32, enc_depth=1, enc_num_heads=2,
                             dec_embed_dim=32, dec_depth=10, dec_num_heads=2)
    img1 = torch.randn(1, 3, 16, 24)
    a, _ = bb(img1, torch.randn(1, 3, 16, 24))
    b, _ = bb(img1, torch.randn(1, 3, 16, 24))
    torch.testing.assert_close(a[0], b[0], atol=1e-6, rtol=1e-6)  # encoder output sees only its own view
    assert (a[1] - b[1]).abs().max() > 1e-4  # first decoder block already reads the other view


def test_model_outputs_and_input_checks():
    torch.manual_seed(0)
    model = TinyDUSt3R(**SMALL, device="cpu")
    res1, res2 = model(torch.randn(2, 3, 32, 48), torch.randn(2, 3, 32, 48))
    for res in (res1, res2):
        assert res["pts3d"].shape == (2, 32, 48, 3) and res["conf"].shape == (2, 32, 48)
        assert (res["conf"] > 1).all()  # DUSt3R's conf_mode ('exp', 1, inf): 1 + e^x
    mono = TinyDUSt3R(**SMALL, two_heads=False, device="cpu")
    r1, r2 = mono(torch.randn(1, 3, 32, 48))
    assert r1["pts3d"].shape == (1, 32, 48, 3) and r2 is None
    with pytest.raises(ValueError, match="dec_depth >= 10"):
        TinyDUSt3R(**{**SMALL, "dec_depth": 8}, device="cpu")
    with pytest.raises(ValueError, match="multiples of patch_size 8"):
        PatchEmbed(8, 16)(torch.randn(1, 3, 30, 48))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        PatchEmbed(8, 16)(torch.randn(1, 1, 32, 48))
    with pytest.raises(ValueError, match="two views"):
        model(torch.randn(1, 3, 32, 48))


def test_config_is_written_once_and_checked():
    config = TinyDUSt3RConfig(**SMALL, two_heads=False)
    model = TinyDUSt3R(config, device="cpu")
    assert model.config == config and model.head2 is None
    assert model.backbone.dec_depth == 10 and model.backbone.patch_embed.proj.out_channels == 32
    assert model.head1.dpt.head.predict.out_channels == 4 and model.head1.dpt.head.predict.in_channels == 8  # last_dim
    # keyword overrides go on top of the config; the result equals the config spelled out
    assert TinyDUSt3R(config, two_heads=True, device="cpu").config == TinyDUSt3RConfig(**SMALL, two_heads=True)
    assert TinyDUSt3RConfig(layer_dims=[1, 2, 3, 4]).layer_dims == (1, 2, 3, 4)  # stored as a tuple
    assert config.args_for(TinyTwoViewBackbone) == dict(patch_size=8, enc_embed_dim=32, enc_depth=2, enc_num_heads=2,
                                                        dec_embed_dim=32, dec_depth=10, dec_num_heads=2, mlp_ratio=2)
    with pytest.raises(TypeError, match=r"unknown \['depth'\]"):
        TinyDUSt3R(depth=3, device="cpu")
    with pytest.raises(ValueError, match=r"dec_depth >= 10 .*, got 9"):
        TinyDUSt3RConfig(dec_depth=9)


@pytest.fixture(scope="module")
def scenes():
    return SyntheticScenes(4, (32, 48), seed=1).batch(range(4))


def test_one_batch_overfit_drives_the_loss_down(scenes):
    torch.manual_seed(0)
    model = TinyDUSt3R(**SMALL, device="cpu")
    batch = {k: v[:2] for k, v in scenes.items()}
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses, regr = [], []
    for _ in range(40):
        loss, logs = compute_loss(model, batch, "conf")
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        regr.append(logs["regr"])
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0] - 0.5  # conf loss: starts around sum of errors (> 1 for two views)
    assert regr[-1] < 0.5 * regr[0]  # the normalised 3D error at least halves


def test_train_loop_with_l1_depth_loss(scenes):
    torch.manual_seed(0)
    model = TinyDUSt3R(**SMALL, two_heads=False, device="cpu")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        hist = train(model, scenes, steps=30, batch_size=2, lr=3e-3, warmup=5, loss="l1", log_every=10)
    assert hist["step"] == [10, 20, 30] and len(hist["loss"]) == 3
    assert hist["loss"][-1] < 0.7 * hist["loss"][0]
    assert "30/30" in out.getvalue()
    with pytest.raises(ValueError, match="'conf' or 'l1'"):
        compute_loss(model, scenes, "l2")


def test_depth_metrics_closed_form():
    gt = torch.tensor([[[1.0, 2.0, 4.0, 9.0]]])
    m = torch.tensor([[[True, True, True, False]]])
    exact = depth_metrics(3 * gt, gt, m, align="median")  # median scaling undoes a global factor
    assert exact["absrel"] == pytest.approx(0.0, abs=1e-6) and exact["delta1"] == pytest.approx(1.0)
    raw = depth_metrics(3 * gt, gt, m, align="none")
    assert raw["absrel"] == pytest.approx(2.0) and raw["delta1"] == pytest.approx(0.0)
    pred = torch.tensor([[[1.1, 2.0, 6.0, 0.0]]])
    # no alignment: |0.1|/1, 0/2, 2/4 -> AbsRel 0.2; ratios 1.1, 1, 1.5 -> 2 of 3 under 1.25
    hand = depth_metrics(pred, gt, m, align="none")
    assert hand["absrel"] == pytest.approx(0.2, rel=1e-6) and hand["delta1"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="align"):
        depth_metrics(pred, gt, m, align="mean")


def test_progress_bar_text():
    out = io.StringIO()
    bar = ProgressBar(4, width=8, file=out)
    bar.update(2, loss=0.5)
    bar.update(4, loss=0.25)
    text = out.getvalue()
    assert "\r[####....] 2/4 loss 0.5000" in text and "\r[########] 4/4 loss 0.2500" in text
    assert text.endswith("\n")


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = TinyDUSt3R(**SMALL, device="cpu")
    path = tmp_path / "tiny.pt"
    save_checkpoint(path, model, {"loss": [1.0, 0.5]})
    loaded, hist = load_checkpoint(path, device="cpu")
    assert hist == {"loss": [1.0, 0.5]} and loaded.config == model.config
    x1, x2 = torch.randn(1, 3, 32, 48), torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        a, b = model(x1, x2)[0]["pts3d"], loaded(x1, x2)[0]["pts3d"]
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert torch.load(path, weights_only=False)["config"] == {**SMALL, "mlp_ratio": 2, "two_heads": True}  # a dict on disk
    torch.save({"weights": 1}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="'config' and 'state_dict'"):
        load_checkpoint(tmp_path / "bad.pt")


def test_lr_factor_closed_form():
    # warm-up: (s + 1) / warmup, times the cosine decay
    assert lr_factor(0, 100, warmup=10) == pytest.approx(0.1 * 1.0)
    assert lr_factor(4, 100, warmup=10) == pytest.approx(0.5 * 0.5 * (1 + math.cos(math.pi * 0.04)))
    assert lr_factor(50, 100, warmup=10) == pytest.approx(0.5)  # cosine half-way
    assert lr_factor(100, 100, warmup=10) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(150, 100, warmup=10) == pytest.approx(0.0, abs=1e-12)  # clamps past the end
    # floor: final + (1 - final) * decay
    assert lr_factor(50, 100, warmup=10, final=0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(100, 100, warmup=10, final=0.1) == pytest.approx(0.1)
    assert lr_factor(25, 100, warmup=1, shape="linear") == pytest.approx(0.75)
    assert lr_factor(0, 100, warmup=0) == pytest.approx(1.0)  # no warm-up
    # the default schedule is the original min(1, (s+1)/warmup) * (1 + cos(pi s / steps)) / 2, bit for bit
    for s in (0, 7, 19, 20, 333, 999, 1000):
        orig = min(1.0, (s + 1) / 20) * 0.5 * (1 + math.cos(math.pi * min(s, 1000) / 1000))
        assert lr_factor(s, 1000, 20) == orig
    with pytest.raises(ValueError, match="'cosine' or 'linear'"):
        lr_factor(0, 10, shape="step")
    with pytest.raises(ValueError, match="final"):
        lr_factor(0, 10, final=1.5)
    # warm-up, stable, decay: constant until step steps - decay_steps, then linear to `final` over decay_steps
    assert [lr_factor(s, 10, warmup=1, final=0.0, shape="linear", decay_steps=4) for s in range(12)] == \
        pytest.approx([1, 1, 1, 1, 1, 1, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0])
    assert lr_factor(8, 10, warmup=1, final=0.2, shape="cosine", decay_steps=4) == pytest.approx(0.2 + 0.8 * 0.5)
    assert [lr_factor(s, 50, 5, decay_steps=50) for s in range(60)] == [lr_factor(s, 50, 5) for s in range(60)]
    for bad in (0, 11):
        with pytest.raises(ValueError, match=r"decay_steps in \[1, steps=10\]"):
            lr_factor(0, 10, decay_steps=bad)


def test_train_options_are_deterministic_and_ema_applies(scenes):
    def run(**kw):
        torch.manual_seed(0)
        model = TinyDUSt3R(**SMALL, two_heads=False, device="cpu")
        hist = train(model, scenes, steps=6, batch_size=2, lr=3e-3, warmup=2, log_every=3, progress=False, **kw)
        return model, hist
    a, ha = run(ema=0.9, final_lr=0.1, schedule="linear", clip=0.5)
    b, hb = run(ema=0.9, final_lr=0.1, schedule="linear", clip=0.5)
    assert ha["loss"] == hb["loss"]
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, atol=0, rtol=0)
    c, hc = run(final_lr=0.1, schedule="linear", clip=0.5)  # same trajectory without EMA: same losses, other weights
    assert hc["loss"] == ha["loss"]
    assert any((pa - pc).abs().max() > 0 for pa, pc in zip(a.parameters(), c.parameters()))
    with pytest.raises(ValueError, match="ema"):
        run(ema=1.0)
    d, hd = run(final_lr=0.0, schedule="linear", decay_steps=3)  # constant for 3 steps, then cooled down
    e, he = run(final_lr=1.0)  # constant throughout: the same first 3 steps
    assert hd["loss"][0] == he["loss"][0] and hd["loss"][1] != he["loss"][1]


def test_a_non_finite_loss_stops_training_with_the_step(scenes):
    torch.manual_seed(0)
    model = TinyDUSt3R(**SMALL, two_heads=False, device="cpu")
    broken = {**scenes, "img1": torch.full_like(scenes["img1"], float("nan"))}
    with pytest.raises(FloatingPointError, match="expected a finite loss, got nan at step 1 of 3"):
        train(model, broken, steps=3, batch_size=2, progress=False)


def test_absrel_conf50_follows_the_confidence_ranking():
    gt = torch.ones(2, 1, 5)
    pred = torch.tensor([[[1.0, 1.0, 2.0, 2.0, 9.0]], [[1.0, 1.5, 1.5, 1.0, 1.0]]])
    m = torch.tensor([[[True, True, True, True, False]], [[True] * 5]])  # the 9.0 is invalid
    # relative errors, no alignment: image 0 [0, 0, 1, 1] -> 0.5; image 1 [0, .5, .5, 0, 0] -> 0.2; mean 0.35
    perfect = torch.tensor([[[4.0, 3.0, 2.0, 1.0, 99.0]], [[5.0, 1.0, 2.0, 4.0, 3.0]]])  # most confident = exact
    inverse = torch.tensor([[[1.0, 2.0, 3.0, 4.0, 99.0]], [[1.0, 5.0, 4.0, 2.0, 3.0]]])  # most confident = worst
    good = depth_metrics(pred, gt, m, align="none", conf=perfect)
    bad = depth_metrics(pred, gt, m, align="none", conf=inverse)
    assert good["absrel"] == bad["absrel"] == pytest.approx(0.35)
    assert good["absrel_conf50"] == pytest.approx(0.0)
    # image 0: top 2 of 4 -> [1, 1] -> 1.0; image 1: top ceil(5/2) = 3 -> [.5, .5, 0] -> 1/3; mean 2/3
    assert bad["absrel_conf50"] == pytest.approx((1.0 + 1 / 3) / 2)
    assert "absrel_conf50" not in depth_metrics(pred, gt, m, align="none")
    with pytest.raises(ValueError, match="conf of shape"):
        depth_metrics(pred, gt, m, conf=perfect[:1])


def test_train_augment_and_callback(scenes):
    seen = []

    def run(**kw):
        torch.manual_seed(0)
        model = TinyDUSt3R(**SMALL, two_heads=True, device="cpu")
        return model, train(model, scenes, steps=4, batch_size=2, lr=3e-3, warmup=1, log_every=2, progress=False, **kw)
    _, plain = run()
    a, ha = run(augment=True, ema=0.5, callback=lambda step, w: seen.append((step, [t.clone() for t in w])))
    _, hb = run(augment=True, ema=0.5)
    assert ha["loss"] == hb["loss"] and ha["loss"] != plain["loss"]  # seeded, and the batches did change
    assert [s for s, _ in seen] == [2, 4]
    # the weights handed to the callback at the last step are the EMA weights train() leaves in the model
    for p, w in zip([p for p in a.parameters() if p.requires_grad], seen[-1][1]):
        torch.testing.assert_close(p, w, atol=0, rtol=0)
