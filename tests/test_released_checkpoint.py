"""DUSt3R's released checkpoint format -> both heads, on a synthetic file written in exactly that format.

The file is ``torch.save({'args': Namespace(model="AsymmetricCroCo3DStereo(...)", ...), 'model': state_dict})``
with backbone keys beside ``downstream_head1.dpt.*`` / ``downstream_head2.dpt.*`` in DUSt3R's key layout
(aliases included). Small widths keep the file small; the loader reads them off the weights.
"""
import argparse
import math

import pytest
import torch

from dptlearn.dust3r import dust3r_dpt_head, dust3r_state_dict
from dptlearn.export import example_tokens
from dptlearn.released import load_released_heads, parse_model_call
from _helpers import seeded_

SMALL = dict(feature_dim=16, last_dim=8, layer_dims=(8, 16, 24, 32))
MODEL = ("AsymmetricCroCo3DStereo(pos_embed='RoPE100', patch_embed_cls='ManyAR_PatchEmbed', img_size=(512, 512), "
         "head_type='dpt', output_mode='pts3d', depth_mode=('exp', -inf, inf), conf_mode=('exp', 1, inf), "
         "enc_embed_dim=32, enc_depth=2, enc_num_heads=2, dec_embed_dim=24, dec_depth=10, dec_num_heads=2)")


def write_checkpoint(path, model=MODEL, dec_depth=10, heads=True, args=True):
    originals = [seeded_(dust3r_dpt_head(32, 24, dec_depth, **SMALL, device="cpu"), s) for s in (1, 2)]
    sd = {"enc_blocks.0.attn.qkv.weight": torch.randn(96, 32), "enc_norm.weight": torch.ones(32),
          "decoder_embed.weight": torch.randn(24, 32)}
    if heads:
        for k, head in enumerate(originals, start=1):
            sd.update(dust3r_state_dict(head, prefix=f"downstream_head{k}."))
    ckpt = {"model": sd}
    if args:
        ckpt["args"] = argparse.Namespace(model=model, lr=1e-4, batch_size=4, output_dir="checkpoints/dust3r_512dpt")
    torch.save(ckpt, path)
    return originals


def test_both_heads_come_back_with_their_weights_and_the_recorded_configuration(tmp_path):
    path = tmp_path / "DUSt3R_synthetic_dpt.pth"
    originals = write_checkpoint(path)
    heads = load_released_heads(path, device="cpu")
    assert heads.config["source"] == "args.model" and heads.config["model"] == "AsymmetricCroCo3DStereo"
    assert heads.config["dec_depth"] == 10 and heads.config["depth_mode"] == ("exp", -math.inf, math.inf)
    assert heads.head1.dpt.hooks == (0, 5, 7, 10) and heads.head1.dpt.num_layers == 11
    assert heads.config["layer_dims"] == (8, 16, 24, 32) and heads.config["feature_dim"] == 16
    assert len(heads.reports[0].aliases_checked) == 4 and not heads.head1.training
    toks = example_tokens(heads.head1, (48, 80), batch=2)
    with torch.no_grad():
        for mine, original in zip((heads.head1, heads.head2), originals):
            got, want = mine(toks, (48, 80)), original(toks, (48, 80))
            torch.testing.assert_close(got["pts3d"], want["pts3d"], rtol=0, atol=0)
            torch.testing.assert_close(got["conf"], want["conf"], rtol=0, atol=0)
        assert not torch.allclose(heads.head1(toks, (48, 80))["conf"], heads.head2(toks, (48, 80))["conf"])


def test_modes_from_the_file_are_used(tmp_path):
    path = tmp_path / "sq.pth"
    write_checkpoint(path, MODEL.replace("depth_mode=('exp', -inf, inf)", "depth_mode=('square', -inf, inf)")
                     .replace("conf_mode=('exp', 1, inf)", "conf_mode=('sigmoid', 0.5, 2)"))
    head = load_released_heads(path, device="cpu").head1
    assert head.depth_mode == ("square", -math.inf, math.inf) and head.conf_mode == ("sigmoid", 0.5, 2.0)


def test_without_args_the_widths_come_from_the_weights(tmp_path):
    path = tmp_path / "noargs.pth"
    write_checkpoint(path, dec_depth=12, args=False)
    heads = load_released_heads(path, device="cpu")
    assert heads.config["source"].startswith("weights") and heads.config["enc_embed_dim"] == 32
    with torch.no_grad():
        assert heads.head2(example_tokens(heads.head2, (48, 80), batch=2), (48, 80))["pts3d"].shape == (2, 48, 80, 3)


def test_the_args_string_is_parsed_never_run(tmp_path):
    cls, kw = parse_model_call(MODEL)
    assert cls == "AsymmetricCroCo3DStereo" and kw["img_size"] == (512, 512) and kw["conf_mode"] == ("exp", 1, math.inf)
    marker = tmp_path / "ran"
    evil = f"AsymmetricCroCo3DStereo(head_type=__import__('pathlib').Path({str(marker)!r}).touch())"
    with pytest.raises(ValueError, match="head_type= is not a literal"):
        parse_model_call(evil)
    path = tmp_path / "evil.pth"
    write_checkpoint(path, model=evil)
    with pytest.raises(ValueError, match="only literals are read"):
        load_released_heads(path, device="cpu")
    assert not marker.exists()
    with pytest.raises(ValueError, match="not a Python call"):
        parse_model_call("AsymmetricCroCo3DStereo(")


def test_checkpoint_without_the_heads(tmp_path):
    path = tmp_path / "encoder_only.pth"
    write_checkpoint(path, heads=False)
    with pytest.raises(ValueError, match=r"no DPT head weights under \['downstream_head1.', 'downstream_head2.'\]"
                                         r".*found: \['decoder_embed', 'enc_blocks', 'enc_norm'\]"):
        load_released_heads(path, device="cpu")


def test_a_linear_head_checkpoint_and_a_plain_state_dict_are_named(tmp_path):
    path = tmp_path / "linear.pth"
    write_checkpoint(path, MODEL.replace("head_type='dpt'", "head_type='linear'"))
    with pytest.raises(ValueError, match="head_type is 'linear'; only DUSt3R's 'dpt'"):
        load_released_heads(path, device="cpu")
    torch.save({"dpt.head.0.weight": torch.zeros(1)}, tmp_path / "plain.pth")
    with pytest.raises(ValueError, match="a dict with 'args' and 'model'"):
        load_released_heads(tmp_path / "plain.pth", device="cpu")


def test_args_that_disagree_with_the_weights(tmp_path):
    path = tmp_path / "wrong.pth"
    write_checkpoint(path, MODEL.replace("enc_embed_dim=32", "enc_embed_dim=1024"))
    with pytest.raises(ValueError, match="enc_embed_dim=1024 but the head weights take 32-wide tokens"):
        load_released_heads(path, device="cpu")


def test_export_reads_a_released_checkpoint(tmp_path):
    """``python -m dptlearn.export --checkpoint`` writes head 1 of the file: onnxruntime gives its numbers."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from dptlearn.export import main, output_names
    path = tmp_path / "ckpt.pth"
    head1, _ = write_checkpoint(path)
    out = tmp_path / "head.onnx"
    main(["--checkpoint", str(path), "--out", str(out), "--size", "32", "48"])
    assert out.stat().st_size > 0
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    toks = example_tokens(head1, (32, 48), batch=2)          # 2 x 3 patches, 11 layers; the batch is dynamic
    assert [i.name for i in session.get_inputs()] == [f"tokens_{i}" for i in range(11)] == \
        [f"tokens_{i}" for i in range(len(toks))]
    names = [o.name for o in session.get_outputs()]
    assert names == output_names(head1) == ["pts3d", "conf"]
    got = session.run(None, {f"tokens_{i}": t.numpy() for i, t in enumerate(toks)})
    with torch.no_grad():
        want = head1.eval()(toks, (32, 48))                  # the head written as downstream_head1, in torch
    assert want["pts3d"].shape == (2, 32, 48, 3) and want["conf"].shape == (2, 32, 48)
    for name, array in zip(names, got, strict=True):
        torch.testing.assert_close(torch.from_numpy(array), want[name], rtol=1e-4, atol=1e-4,
                                   msg=lambda m: f"{name}: {m}")
