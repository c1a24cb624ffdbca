"""ONNX export: onnxruntime runs the written head and agrees with torch to 1e-4, for any batch."""
import numpy as np
import pytest
import torch

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from dptlearn.depth_anything import depth_anything_v2_head  # noqa: E402
from dptlearn.dust3r import dust3r_dpt_head  # noqa: E402
from dptlearn.export import example_tokens, output_names, to_onnx  # noqa: E402
from dptlearn.fusion import FusionBlock  # noqa: E402
from _helpers import seeded_  # noqa: E402

SMALL = dict(enc_embed_dim=32, dec_embed_dim=24, feature_dim=16, last_dim=8, layer_dims=(8, 16, 24, 32))


def run_both(head, path, image_size, batch):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    tokens = example_tokens(head, image_size, batch=batch, seed=batch)
    got = session.run(None, {f"tokens_{i}": t.numpy() for i, t in enumerate(tokens)})
    with torch.no_grad():
        want = head(tokens, image_size)
    want = [want[k] for k in output_names(head)] if isinstance(want, dict) else [want]
    return [i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()], got, want


def assert_close(got, want):
    want = want.numpy()
    assert got.shape == want.shape
    scale = np.abs(want).max()
    assert np.abs(got - want).max() <= 1e-4 * scale, f"max |diff| {np.abs(got - want).max():.3g} vs scale {scale:.3g}"


@pytest.fixture(scope="module")
def dust3r_export(tmp_path_factory):
    head = seeded_(dust3r_dpt_head(**SMALL, device="cpu"))
    path = to_onnx(head, tmp_path_factory.mktemp("onnx") / "head.onnx", (48, 80))   # 3 x 5 patches: the crop
    return head, path


@pytest.mark.parametrize("batch", [1, 3])
def test_dust3r_head_in_onnxruntime_equals_torch(dust3r_export, batch):
    head, path = dust3r_export
    inputs, outputs, got, want = run_both(head, path, (48, 80), batch)
    assert inputs == [f"tokens_{i}" for i in range(13)] and outputs == ["pts3d", "conf"]
    assert got[0].shape == (batch, 48, 80, 3) and got[1].shape == (batch, 48, 80)
    for g, w in zip(got, want):
        assert_close(g, w)


def test_export_leaves_the_head_as_it_was(dust3r_export):
    head, _ = dust3r_export
    assert all(p.requires_grad and p.dtype == torch.float32 for p in head.parameters())
    assert all(type(b) is FusionBlock for b in head.dpt.fusion)      # the plain stages, not optimised copies


def test_depth_anything_head_exports_too(tmp_path):
    head = seeded_(depth_anything_v2_head(hidden_size=32, feature_dim=16, layer_dims=(8, 16, 24, 32), device="cpu"))
    path = to_onnx(head, tmp_path / "da.onnx", (42, 70))
    inputs, outputs, got, want = run_both(head, path, (42, 70), 2)
    assert len(inputs) == 12 and outputs == ["depth"]
    assert_close(got[0], want[0])


def test_export_size_not_a_multiple_of_the_patch(tmp_path):
    head = dust3r_dpt_head(**SMALL, device="cpu")
    with pytest.raises(ValueError, match=r"\(H, W\)=\(50, 80\) must be a multiple of the patch size 16"):
        to_onnx(head, tmp_path / "x.onnx", (50, 80))
    assert not (tmp_path / "x.onnx").exists()
    with pytest.raises(TypeError, match="DUSt3RHead or a DepthHead, got DPTHead"):
        to_onnx(head.dpt, tmp_path / "x.onnx", (48, 80))
