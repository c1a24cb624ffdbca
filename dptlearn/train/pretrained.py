"""The project's own pretrained tiny DUSt3R: one committed checkpoint, written by `make pretrain`, read here.

    weights/tiny_dust3r.pt          {'config': TinyDUSt3RConfig as a dict, 'state_dict': float16 tensors,
                                     'meta': how it was trained and a few held-out numbers}
    weights/tiny_dust3r.pt.sha256   its SHA-256, checked on every load of the shipped file

Nothing is downloaded: the file ships inside the package. `load_pretrained` only reads it (torch.load with
weights_only=True, so no code in the file can run) and rejects a file whose keys or shapes do not match the
model its config describes, naming what was expected and what was found.
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, fields
from pathlib import Path

import torch

from ..device import get_device
from .backbone import TinyDUSt3R, TinyDUSt3RConfig

WEIGHTS = Path(__file__).parent / "weights" / "tiny_dust3r.pt"


def sha256_file(path) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_pretrained(path, model: TinyDUSt3R, meta: dict) -> str:
    """Write config + float16 weights + meta to `path` and its SHA-256 to `path`.sha256. Returns the digest."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", torch.float16) for k, v in model.state_dict().items()}
    torch.save({"config": asdict(model.config), "state_dict": state, "meta": meta}, path)
    digest = sha256_file(path)
    Path(f"{path}.sha256").write_text(f"{digest}  {path.name}\n")
    return digest


def expected_sha256(path) -> str:
    """The digest recorded next to a checkpoint (`path`.sha256, first word)."""
    record = Path(f"{path}.sha256")
    if not record.is_file():
        raise FileNotFoundError(f"expected a checksum file {record} next to the checkpoint, not found")
    return record.read_text().split()[0]


def load_pretrained(path=None, device=None, check_sha256: bool = True) -> tuple[TinyDUSt3R, dict]:
    """The pretrained two-view model in eval mode, float32, and its meta dict: (model, meta).

    path: default the shipped `weights/tiny_dust3r.pt`. check_sha256: compare the file with the digest in
    `path`.sha256 first (a changed file, or a Git LFS pointer in its place, is refused).
    """
    path = Path(path) if path is not None else WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(f"expected a pretrained checkpoint at {path}, not found "
                                f"(`make pretrain` writes {WEIGHTS.relative_to(WEIGHTS.parents[2])})")
    if check_sha256:
        want, got = expected_sha256(path), sha256_file(path)
        if want != got:
            raise ValueError(f"checksum mismatch for {path}: expected sha256 {want}, got {got} "
                             "(the file changed since it was written; rerun `make pretrain`)")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or not {"config", "state_dict"} <= set(ckpt):
        got = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"expected a checkpoint dict with keys 'config' and 'state_dict' (and 'meta'), got {got}")
    names = {f.name for f in fields(TinyDUSt3RConfig)}
    unknown = sorted(set(ckpt["config"]) - names)
    if unknown:
        raise ValueError(f"expected config keys among {sorted(names)}, got unknown {unknown} in {path}")
    model = TinyDUSt3R(TinyDUSt3RConfig(**ckpt["config"]), device="cpu")
    check_state_dict(model.state_dict(), ckpt["state_dict"], path)
    model.load_state_dict({k: v.float() for k, v in ckpt["state_dict"].items()})
    return model.to(get_device(device)).eval(), ckpt.get("meta", {})


def check_state_dict(expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor], where) -> None:
    """Raise ValueError naming missing / unexpected keys, then the first tensors whose shapes differ."""
    missing, unexpected = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    if missing or unexpected:
        raise ValueError(f"state dict of {where} does not match the model: missing keys {missing[:5]}"
                         f"{' ...' if len(missing) > 5 else ''} ({len(missing)}), unexpected keys {unexpected[:5]}"
                         f"{' ...' if len(unexpected) > 5 else ''} ({len(unexpected)})")
    wrong = [f"{k}: expected {tuple(v.shape)}, got {tuple(got[k].shape)}"
             for k, v in expected.items() if tuple(got[k].shape) != tuple(v.shape)]
    if wrong:
        raise ValueError(f"state dict of {where} has {len(wrong)} tensor(s) of the wrong shape: " + "; ".join(wrong[:3]))


def with_finer_patches(state_dict: dict[str, torch.Tensor], old_patch: int, new_patch: int) -> dict[str, torch.Tensor]:
    """A TinyDUSt3R state dict made for `old_patch`-pixel patches, rewritten to start a model with `new_patch`.

    Only the patch embedding depends on the patch size (the positions are fixed sine-cosine tables, the heads'
    shapes do not depend on it): its (C, 3, p, p) kernel is summed over k x k blocks, k = old_patch / new_patch, so
    a smooth image gives each new token the embedding the old patch had. Everything else is copied as it is.
    The result is a starting point to fine-tune (the encoder now sees positions k times further apart), not a
    finished model.
    """
    if old_patch % new_patch or new_patch >= old_patch:
        raise ValueError(f"expected a smaller patch size that divides {old_patch}, got {new_patch}")
    key = "backbone.patch_embed.proj.weight"
    w = state_dict[key]
    if tuple(w.shape[-2:]) != (old_patch, old_patch):
        raise ValueError(f"expected {key} with a {old_patch}x{old_patch} kernel, got shape {tuple(w.shape)}")
    k = old_patch // new_patch
    out = dict(state_dict)
    out[key] = torch.nn.functional.avg_pool2d(w.float(), k) * (k * k)  # (C, 3, p_new, p_new): block sums
    return out
