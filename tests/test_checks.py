"""Tests of dptlearn.checks: every check passes a correct implementation and names the mistake
in at least three known-wrong ones (written here, independently of the checks' own candidates)."""
from __future__ import annotations

import math
import re
import time

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

import dptlearn
from dptlearn import checks
from dptlearn import fusion as fu
from dptlearn import grid as gr
from dptlearn import head as hd
from dptlearn import postprocess as pp
from dptlearn import reassemble as ra
from dptlearn import tokens as tk


# ============================================================================ correct implementations

def hooks_ok(L):
    if L <= 9:
        raise ValueError("dec_depth must be > 9")
    return [0, 2 * L // 4, 3 * L // 4, L]


def select_ok(tokens, hooks):
    if len(tokens) <= max(hooks):
        raise ValueError(f"need {max(hooks) + 1} layers")
    return [tokens[h] for h in hooks]


def readout_ok(x, mode, n_prefix):
    patches = x[:, n_prefix:]
    if mode == "ignore":
        return patches
    return patches + x[:, :n_prefix].mean(dim=1, keepdim=True)


class ReadoutProjectOk(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.project = nn.Sequential(nn.Linear(2 * dim, dim), nn.GELU())

    def forward(self, x):
        patches = x[:, 1:]
        return self.project(torch.cat([patches, x[:, :1].expand_as(patches)], dim=-1))


def patch_grid_ok(image_size, p):
    H, W = image_size
    if H % p or W % p:
        raise ValueError("not a multiple")
    return H // p, W // p


def t2g_ok(t, nh, nw):
    return rearrange(t, "b (nh nw) c -> b c nh nw", nh=nh, nw=nw)


def g2t_ok(g):
    return rearrange(g, "b c nh nw -> b (nh nw) c")


def branch_ok(cin, cout, f):
    layers = [nn.Conv2d(cin, cout, 1)]
    if f == 4:
        layers.append(nn.ConvTranspose2d(cout, cout, 4, stride=4))
    elif f == 2:
        layers.append(nn.ConvTranspose2d(cout, cout, 2, stride=2))
    elif f == 0.5:
        layers.append(nn.Conv2d(cout, cout, 3, stride=2, padding=1))
    return nn.Sequential(*layers)


class ReassembleOk(nn.Module):
    def __init__(self, dims, layer_dims, D, bias=False, factors=(4, 2, 1, 0.5)):
        super().__init__()
        self.branches = nn.ModuleList(branch_ok(c, d, f) for c, d, f in zip(dims, layer_dims, factors))
        self.project = nn.ModuleList(nn.Conv2d(d, D, 3, padding=1, bias=bias) for d in layer_dims)

    def forward(self, grids):
        return [p(b(g)) for p, b, g in zip(self.project, self.branches, grids)]


class ReassembleNoProject(ReassembleOk):
    def forward(self, grids):
        return [b(g) for b, g in zip(self.branches, grids)]


class ReassembleCoarseFirst(ReassembleOk):
    def forward(self, grids):
        return super().forward(grids)[::-1]


def rcu_fn_ok(x, w1, b1, w2, b2):
    out = F.conv2d(F.relu(x), w1, b1, padding=1)
    return x + F.conv2d(F.relu(out), w2, b2, padding=1)


class RCUOk(nn.Module):
    def __init__(self, dim, bias=True):
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, 3, padding=1, bias=bias)
        self.conv2 = nn.Conv2d(dim, dim, 3, padding=1, bias=bias)

    def forward(self, x):
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


def crop_ok(x, size):
    return x[..., : size[0], : size[1]]


class FusionOk(nn.Module):
    def __init__(self, dim, with_skip=True, align=True):
        super().__init__()
        self.skip_unit = RCUOk(dim) if with_skip else None
        self.unit = RCUOk(dim)
        self.out_conv = nn.Conv2d(dim, dim, 1)
        self.align = align

    def forward(self, x, skip=None):
        out = x if skip is None else x + self.skip_unit(skip)
        out = self.unit(out)
        out = F.interpolate(out, scale_factor=2, mode="bilinear", align_corners=self.align)
        return self.out_conv(out)


def fuse_ok(levels, fusion):
    path = fusion[3](levels[3])
    path = crop_ok(path, levels[2].shape[-2:])
    path = fusion[2](path, levels[2])
    path = fusion[1](path, levels[1])
    return fusion[0](path, levels[0])


class HeadOk(nn.Module):
    def __init__(self, D, last, out, align=True):
        super().__init__()
        self.reduce = nn.Conv2d(D, D // 2, 3, padding=1)
        self.refine = nn.Conv2d(D // 2, last, 3, padding=1)
        self.predict = nn.Conv2d(last, out, 1)
        self.align = align

    def forward(self, x):
        x = self.reduce(x)
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=self.align)
        return self.predict(F.relu(self.refine(x)))


def head_seq_ok(D, last, out):
    return nn.Sequential(nn.Conv2d(D, D // 2, 3, padding=1),
                         nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
                         nn.Conv2d(D // 2, last, 3, padding=1), nn.ReLU(), nn.Conv2d(last, out, 1))


def depth_ok(xyz, mode):
    name, vmin, vmax = mode
    if (vmin, vmax) != (-math.inf, math.inf):
        raise ValueError("depth modes need vmin = -inf and vmax = inf")
    if name == "linear":
        return xyz
    d = xyz.norm(dim=-1, keepdim=True)
    u = xyz / d.clamp(min=1e-8)
    return u * d.square() if name == "square" else u * torch.expm1(d)


def conf_ok(x, mode):
    name, vmin, vmax = mode
    if name == "exp":
        return vmin + x.exp().clamp(max=vmax - vmin)
    return (vmax - vmin) * torch.sigmoid(x) + vmin


def post_ok(raw, dm, cm):
    f = raw.permute(0, 2, 3, 1)
    out = {"pts3d": depth_ok(f[..., :3], dm)}
    if cm is not None:
        out["conf"] = conf_ok(f[..., 3], cm)
    return out


# ============================================================================ known-wrong implementations

def _rcu_variant(pre=True, inplace=False, post=False):
    class RCU(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.conv1 = nn.Conv2d(dim, dim, 3, padding=1)
            self.conv2 = nn.Conv2d(dim, dim, 3, padding=1)

        def forward(self, x):
            h = (F.relu(x, inplace=True) if inplace else F.relu(x)) if pre else x
            out = x + self.conv2(F.relu(self.conv1(h)))
            return F.relu(out) if post else out
    return RCU


class FusionUpFirst(FusionOk):
    def forward(self, x, skip=None):
        out = x if skip is None else x + self.skip_unit(skip)
        out = F.interpolate(out, scale_factor=2, mode="bilinear", align_corners=True)
        return self.out_conv(self.unit(out))


class FusionRawSkip(FusionOk):
    def forward(self, x, skip=None):
        out = x if skip is None else x + skip
        out = F.interpolate(self.unit(out), scale_factor=2, mode="bilinear", align_corners=True)
        return self.out_conv(out)


class FusionAlwaysSkip(FusionOk):
    def __init__(self, dim, with_skip=True):
        super().__init__(dim, with_skip=True)


class FusionPostAct(FusionOk):
    def __init__(self, dim, with_skip=True):
        super().__init__(dim, with_skip)
        if with_skip:
            self.skip_unit = _rcu_variant(pre=False)(dim)
        self.unit = _rcu_variant(pre=False)(dim)


class FusionSkipAfter(FusionOk):
    def forward(self, x, skip=None):
        out = self.unit(x)
        out = out if skip is None else out + self.skip_unit(skip)
        return self.out_conv(F.interpolate(out, scale_factor=2, mode="bilinear", align_corners=True))


def _fuse_wrong(kind):
    """fuse_pyramid with one wiring mistake (written independently of the check's own candidates)."""
    def fuse(lv, f):
        blocks = (0, 1, 2) if kind in ("coarsest-first indices", "levels fine to coarse") else (2, 1, 0)
        path = f[3](lv[3])
        h, w = lv[2].shape[-2:]
        if kind == "first row":
            path = path[..., path.shape[-2] - h:, :w]
        elif kind == "nearest resize":
            path = F.interpolate(path, size=(h, w))
        elif kind != "no crop":
            path = path[..., :h, :w]
        for b, i in zip(blocks, blocks if kind == "levels fine to coarse" else (2, 1, 0)):
            path = f[b](lv[i], path) if kind == "swapped" else f[b](path, lv[i])
        return path
    return fuse


class HeadNoRelu(HeadOk):
    def forward(self, x):
        x = F.interpolate(self.reduce(x), scale_factor=2, mode="bilinear", align_corners=True)
        return self.predict(self.refine(x))


class HeadReluBeforeUp(HeadOk):
    def forward(self, x):
        x = self.refine(F.relu(self.reduce(x)))
        return self.predict(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True))


class HeadFullWidth(HeadOk):
    def __init__(self, D, last, out):
        super().__init__(D, last, out)
        self.reduce = nn.Conv2d(D, D, 3, padding=1)
        self.refine = nn.Conv2d(D, last, 3, padding=1)


class ReadoutSwapped(ReadoutProjectOk):
    def forward(self, x):
        patches = x[:, 1:]
        return self.project(torch.cat([x[:, :1].expand_as(patches), patches], dim=-1))


class ReadoutNoGelu(ReadoutProjectOk):
    def __init__(self, dim):
        super().__init__(dim)
        self.project = nn.Sequential(nn.Linear(2 * dim, dim))


class ReadoutKeepsCls(ReadoutProjectOk):
    def forward(self, x):
        return self.project(torch.cat([x, x[:, :1].expand_as(x)], dim=-1))


def _branch_wrong(kind):
    def make(cin, cout, f):
        if kind == "k2_down" and f == 0.5:
            return nn.Sequential(nn.Conv2d(cin, cout, 1), nn.Conv2d(cout, cout, 2, stride=2))
        if kind == "x2_for_x4" and f == 4:
            return nn.Sequential(nn.Conv2d(cin, cout, 1), nn.ConvTranspose2d(cout, cout, 4, stride=2, padding=1))
        if kind == "interp" and f in (4, 2):
            return nn.Sequential(nn.Conv2d(cin, cout, 1), nn.Upsample(scale_factor=f))
        if kind == "no_bias":
            m = branch_ok(cin, cout, f)
            m[0] = nn.Conv2d(cin, cout, 1, bias=False)
            return m
        return branch_ok(cin, cout, f)
    return make


def _post_reshape(raw, dm, cm):
    B, C, H, W = raw.shape
    f = raw.reshape(B, H, W, C)
    return {"pts3d": depth_ok(f[..., :3], dm), "conf": conf_ok(f[..., 3], cm)} if cm else {"pts3d": depth_ok(f, dm)}


def _post_conf_keepdim(raw, dm, cm):
    f = raw.permute(0, 2, 3, 1)
    out = {"pts3d": depth_ok(f[..., :3], dm)}
    if cm is not None:
        out["conf"] = conf_ok(f[..., 3:], cm)
    return out


def _post_channels_first(raw, dm, cm):
    out = {"pts3d": depth_ok(raw[:, :3].permute(0, 2, 3, 1), dm)}
    if cm is not None:
        out["conf"] = conf_ok(raw[:, 0], cm)
    return out


# ============================================================================ the table

CASES = {
    "hook_indices": (hooks_ok, [
        (lambda L: [0, 4, 6, 8], "CroCo's default 8-block decoder"),
        (lambda L: [0, 2 * L // 4, 3 * L // 4, L - 1], "off by one"),
        (lambda L: [2, 5, 8, 11], "original DPT's hooks"),
        (lambda L: [0, 2 * (L // 4), 3 * (L // 4), L], "rounding"),
        (lambda L: [0, 2 * L // 4, 3 * L // 4, L], "should raise ValueError"),
    ]),
    "select_hooked_tokens": (select_ok, [
        (lambda t, h: torch.stack([t[i] for i in h]), "cannot be stacked"),
        (lambda t, h: [t[i - 1] if i else t[0] for i in h], "off by one"),
        (lambda t, h: [t[i] for i in h], "should raise ValueError"),
    ]),
    "apply_readout": (readout_ok, [
        (lambda x, m, n: x if m == "ignore" else x + x[:, :n].mean(1, keepdim=True), "prefix tokens are still there"),
        (lambda x, m, n: x[:, :-n] if m == "ignore" else x[:, :-n] + x[:, -n:].mean(1, keepdim=True), "come first"),
        (lambda x, m, n: x[:, n:] if m == "ignore" else x[:, n:] + x[:, :n].sum(1, keepdim=True), "their mean"),
        (lambda x, m, n: x[:, n:] if m == "ignore" else x[:, n:] + x[:, :1], "only the first prefix token"),
    ]),
    "ReadoutProject": (ReadoutProjectOk, [
        (ReadoutSwapped, "concatenation order"),
        (ReadoutNoGelu, "missing GELU"),
        (ReadoutKeepsCls, "readout token is still there"),
    ]),
    "patch_grid": (patch_grid_ok, [
        (lambda s, p: (s[1] // p, s[0] // p), "nh and nw swapped"),
        (lambda s, p: (s[0] // p, s[1] // p), "should raise ValueError (500 is not a multiple of 16)"),
        (lambda s, p: (s[0] / p, s[1] / p), "integer division"),
    ]),
    "tokens_to_grid": (t2g_ok, [
        (lambda t, nh, nw: t.reshape(t.shape[0], t.shape[2], nh, nw), "reshape instead of moving the channel axis"),
        (lambda t, nh, nw: rearrange(t, "b (nw nh) c -> b c nh nw", nh=nh, nw=nw), "rows and columns swapped"),
        (lambda t, nh, nw: rearrange(t, "b (nh nw) c -> b c nw nh", nh=nh, nw=nw), "nh and nw swapped"),
        (lambda t, nh, nw: t.reshape(t.shape[0], nh, nw, t.shape[2]), "channels last"),
    ]),
    "grid_to_tokens": (g2t_ok, [
        (lambda g: g.reshape(g.shape[0], -1, g.shape[1]), "reshape instead of moving the channel axis"),
        (lambda g: rearrange(g, "b c nh nw -> b (nw nh) c"), "rows and columns swapped"),
        (lambda g: g.flatten(2), "channel axis must come last"),
    ]),
    "reassemble_branch": (branch_ok, [
        (_branch_wrong("k2_down"), "round up on odd grids"),
        (_branch_wrong("x2_for_x4"), "wrong resampling factor"),
        (_branch_wrong("interp"), "no learned resampler"),
        (_branch_wrong("no_bias"), "missing bias"),
    ]),
    "Reassemble": (ReassembleOk, [
        (lambda *a: ReassembleOk(*a, bias=True), "bias where DUSt3R has none"),
        (lambda *a: ReassembleOk(*a, factors=(0.5, 1, 2, 4)), "branches resample by (4, 2, 1, 1/2)"),
        (ReassembleNoProject, "goes through project[i]"),
        (ReassembleCoarseFirst, "in the wrong order"),
    ]),
    "residual_conv_unit": (rcu_fn_ok, [
        (lambda x, w1, b1, w2, b2: x + F.conv2d(F.relu(F.conv2d(x, w1, b1, padding=1)), w2, b2, padding=1),
         "missing pre-activation"),
        (lambda x, w1, b1, w2, b2: x + F.conv2d(F.relu(F.conv2d(F.relu(x, inplace=True), w1, b1, padding=1)),
                                                w2, b2, padding=1), "in-place ReLU"),
        (lambda x, w1, b1, w2, b2: F.conv2d(F.relu(F.conv2d(F.relu(x), w1, b1, padding=1)), w2, b2, padding=1),
         "missing residual"),
        (lambda x, w1, b1, w2, b2: x[..., 2:-2, 2:-2] + F.conv2d(F.relu(F.conv2d(F.relu(x), w1, b1)), w2, b2),
         "which padding keeps"),
        (lambda x, w1, b1, w2, b2: F.relu(x + F.conv2d(F.relu(F.conv2d(x, w1, b1, padding=1)), w2, b2, padding=1)),
         "ResNet order"),
        (lambda x, w1, b1, w2, b2: F.relu(x + F.relu(F.conv2d(F.relu(F.conv2d(x, w1, b1, padding=1)), w2, b2,
                                                              padding=1))), "ResNet order"),
    ]),
    "ResidualConvUnit": (RCUOk, [
        (_rcu_variant(pre=False), "missing pre-activation"),
        (_rcu_variant(inplace=True), "in-place ReLU"),
        (lambda d: RCUOk(d, bias=False), "missing bias"),
        (_rcu_variant(pre=False, post=True), "ResNet order"),
    ]),
    "crop_to": (crop_ok, [
        (lambda x, s: x[..., x.shape[-2] - s[0]:, x.shape[-1] - s[1]:], "bottom-right"),
        (lambda x, s: F.interpolate(x, size=tuple(s), mode="bilinear", align_corners=False), "resized"),
        (lambda x, s: x[..., : s[0], :], "crop the columns too"),
        (lambda x, s: x[..., x.shape[-2] - s[0]:, : s[1]], "dropped the first rows"),
    ]),
    "FusionBlock": (FusionOk, [
        (lambda d, s=True: FusionOk(d, s, align=False), "align_corners is False"),
        (FusionUpFirst, "you upsampled first"),
        (FusionRawSkip, "goes through skip_unit"),
        (FusionAlwaysSkip, "has no skip unit"),
        (FusionPostAct, "missing pre-activation"),
        (FusionSkipAfter, "the skip comes in too late"),
    ]),
    "fuse_pyramid": (fuse_ok, [
        (lambda lv, fu_: fu_[0](fu_[1](fu_[2](fu_[3](lv[3]), lv[2]), lv[1]), lv[0]), "missing crop on odd grids"),
        (lambda lv, fu_: fu_[0](fu_[1](fu_[2](F.interpolate(fu_[3](lv[3]), size=lv[2].shape[-2:], mode="bilinear",
                                                            align_corners=True), lv[2]), lv[1]), lv[0]),
         "instead of cropping"),
        (lambda lv, fu_: fu_[0](fu_[1](fu_[2](fu_[3](lv[3])[..., -lv[2].shape[-2]:, -lv[2].shape[-1]:], lv[2]),
                                       lv[1]), lv[0]), "bottom-right"),
        (_fuse_wrong("swapped"), "path and level swapped"),
        (_fuse_wrong("nearest resize"), "nearest neighbour"),
        (_fuse_wrong("first row"), "dropped the first row"),
        (_fuse_wrong("coarsest-first indices"), "blocks indexed coarsest-first"),
        (_fuse_wrong("levels fine to coarse"), "run the blocks coarse to fine"),
    ]),
    "RegressionHead": (HeadOk, [
        (lambda *a: HeadOk(*a, align=False), "align_corners is False"),
        (HeadNoRelu, "missing ReLU"),
        (HeadFullWidth, "halves the channels"),
        (HeadReluBeforeUp, "ReLU and upsample swapped"),
    ]),
    "head_sequential": (head_seq_ok, [
        (lambda D, last, out: nn.Sequential(nn.Conv2d(D, D // 2, 3, padding=1), nn.Upsample(scale_factor=2, mode="bilinear"),
                                            nn.Conv2d(D // 2, last, 3, padding=1), nn.ReLU(), nn.Conv2d(last, out, 1)),
         "align_corners is False"),
        (lambda D, last, out: nn.Sequential(nn.Conv2d(D, D // 2, 3, padding=1), nn.Upsample(scale_factor=2),
                                            nn.Conv2d(D // 2, last, 3, padding=1), nn.ReLU(), nn.Conv2d(last, out, 1)),
         "nearest"),
        (lambda D, last, out: nn.Sequential(nn.Conv2d(D, D // 2, 3, padding=1), nn.Conv2d(D // 2, last, 3, padding=1),
                                            nn.ReLU(), nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
                                            nn.Conv2d(last, out, 1)), "indices 0, 2, 4"),
        (lambda D, last, out: nn.Sequential(nn.Conv2d(D, D // 2, 3, padding=1), nn.ReLU(),
                                            nn.Conv2d(D // 2, last, 3, padding=1),
                                            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
                                            nn.Conv2d(last, out, 1)), "ReLU and upsample swapped"),
    ]),
    "depth_activation": (depth_ok, [
        (lambda xyz, m: xyz if m[0] == "linear" else (xyz / xyz.norm(dim=-1, keepdim=True).clamp(min=1e-8)
                                                      * (xyz.norm(dim=-1, keepdim=True) ** 2 if m[0] == "square"
                                                         else xyz.norm(dim=-1, keepdim=True).exp())),
         "exp instead of expm1"),
        (lambda xyz, m: xyz if m[0] == "linear" else (xyz ** 2 if m[0] == "square" else torch.expm1(xyz)),
         "to each coordinate"),
        (lambda xyz, m: xyz if m[0] == "linear" else xyz / xyz.norm(dim=-1, keepdim=True) * (
            xyz.norm(dim=-1, keepdim=True) ** 2 if m[0] == "square" else torch.expm1(xyz.norm(dim=-1, keepdim=True))),
         "NaN at the zero vector"),
        (lambda xyz, m: depth_ok(xyz, (m[0], -math.inf, math.inf)), "accept only vmin = -inf, vmax = inf"),
    ]),
    "conf_activation": (conf_ok, [
        (lambda x, m: x.exp() if m[0] == "exp" else (m[2] - m[1]) * torch.sigmoid(x) + m[1], "wrong confidence offset"),
        (lambda x, m: 1 + x.exp() if m[0] == "exp" else (m[2] - m[1]) * torch.sigmoid(x) + m[1], "hard-coded 1"),
        (lambda x, m: m[1] + x.exp() if m[0] == "exp" else (m[2] - m[1]) * torch.sigmoid(x) + m[1],
         "the result exceeds vmax"),
        (lambda x, m: conf_ok(x, m) if m[0] == "exp" else torch.sigmoid(x) + m[1], "shifted but not stretched"),
    ]),
    "postprocess": (post_ok, [
        (_post_reshape, "reshape instead of moving the channel axis"),
        (_post_conf_keepdim, "conf has no channel dimension"),
        (_post_channels_first, "channel order"),
        (lambda raw, dm, cm: post_ok(raw, dm, ("exp", 1, math.inf)), "return only {'pts3d'"),
    ]),
}

REFERENCES = {  # dptlearn's own objects: handing them in must fail as "the reference for this exercise"
    "hook_indices": tk.dust3r_hook_indices, "select_hooked_tokens": tk.select_hooked_tokens,
    "ReadoutProject": tk.Readout, "patch_grid": gr.patch_grid, "tokens_to_grid": gr.tokens_to_grid,
    "grid_to_tokens": gr.grid_to_tokens, "reassemble_branch": ra.ReassembleBranch,
    "ResidualConvUnit": fu.ResidualConvUnit, "crop_to": fu.crop_to, "FusionBlock": fu.FusionBlock,
    "RegressionHead": hd.RegressionHead, "depth_activation": pp.depth_activation,
    "conf_activation": pp.conf_activation, "postprocess": pp.postprocess,
    "Reassemble": ra.Reassemble, "fuse_pyramid": fu.fuse_pyramid,
    "apply_readout": lambda x, mode, n: tk.Readout(mode, x.shape[-1], n)(x),   # a wrapper around it
}


CAPSTONE = {"MyDUSt3RHead", "convert_dust3r_state_dict"}   # on the learner's parts: tests/test_capstone.py
CHALLENGES = {name for name in checks.CHECKS if name.startswith(("bug_", "predict_", "transfer_"))}   # tests/test_challenges.py


def test_every_check_is_tested():
    assert set(CASES) == set(checks.CHECKS) - CAPSTONE - CHALLENGES
    assert len(CASES) >= 14
    assert {name: len(wrong) for name, (_, wrong) in CASES.items() if len(wrong) < 3} == {}


@pytest.mark.parametrize("name", sorted(CASES))
def test_correct_implementation_passes(name, device, capsys):
    rng = torch.get_rng_state()
    t0 = time.perf_counter()
    getattr(checks, name)(CASES[name][0], device=device)
    seconds = time.perf_counter() - t0
    out = capsys.readouterr().out
    assert out.startswith(f"✓ {name}: passed (") and out.count("\n") == 1, out
    assert torch.equal(torch.get_rng_state(), rng), "a check must not disturb the global RNG"
    assert seconds < 10.0, f"{name} took {seconds:.2f} s"   # ~0.1 s alone; slack for a busy CI machine


# A message names the mistake and where to look, never the corrected code.
ANSWER_CODE = re.compile(r"rearrange\(|nn\.\w+\(|F\.(interpolate|conv2d|relu)\(|\.permute\(|\.reshape\(\w|"
                         r"\[\.\.\., *:|\[:, *:?n_prefix|\.clamp\(|expm1\(d\)|\bfor \w+ in\b|= *x *\+")


@pytest.mark.parametrize("name,index", [(n, i) for n in sorted(CASES) for i in range(len(CASES[n][1]))])
def test_known_mistake_is_named(name, index, device, capsys):
    wrong, expected = CASES[name][1][index]
    with pytest.raises(AssertionError) as info:
        getattr(checks, name)(wrong, device=device)
    msg = str(info.value)
    assert msg.startswith(f"{name}: "), msg
    assert expected in msg, f"expected {expected!r} in: {msg}"
    assert "✓" not in capsys.readouterr().out
    assert not ANSWER_CODE.search(msg), f"the message hands over code: {msg}"


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_dptlearn_reference_is_rejected(name):
    with pytest.raises(checks.CheckFailed, match="the reference for this exercise: write your own") as info:
        getattr(checks, name)(REFERENCES[name], device="cpu")
    assert "reference" in info.value.flags


def test_subclass_of_reference_is_rejected():
    class Mine(fu.ResidualConvUnit):
        pass
    with pytest.raises(AssertionError, match="the reference for this exercise"):
        checks.ResidualConvUnit(Mine, device="cpu")

    class Wrapper(nn.Module):      # a module built around the reference is rejected too
        def __init__(self, dim, with_skip=True):
            super().__init__()
            self.inner = fu.FusionBlock(dim, with_skip)
    with pytest.raises(AssertionError, match="the reference for this exercise"):
        checks.FusionBlock(Wrapper, device="cpu")


def _stub(*args, **kwargs):
    raise NotImplementedError("Exercise x: replace this stub with your code")


class _StubModule(nn.Module):
    def __init__(self, *args, **kwargs):
        super().__init__()
        raise NotImplementedError("Exercise x: replace this stub with your code")


@pytest.mark.parametrize("name", sorted(CASES))
def test_stub_reports_not_implemented(name):
    stub = _StubModule if name[0].isupper() or name in ("reassemble_branch", "head_sequential") else _stub
    with pytest.raises(AssertionError, match="not implemented yet"):
        getattr(checks, name)(stub, device="cpu")


def test_student_exception_is_reported_with_context():
    def broken(g):
        return g.transpose(2, 3).view(g.shape[0], g.shape[1], -1).transpose(1, 2)
    with pytest.raises(AssertionError) as info:
        checks.grid_to_tokens(broken, device="cpu")
    assert "raised RuntimeError" in str(info.value) and "needs contiguous memory" in str(info.value)


def test_shape_message_spells_out_the_axes():
    with pytest.raises(AssertionError, match=r"expected \(B, C, nh, nw\) = \(2, 4, 3, 5\), got \(2, 3, 5, 4\)"):
        checks.tokens_to_grid(lambda t, nh, nw: rearrange(t, "b (nh nw) c -> b nh nw c", nh=nh, nw=nw), device="cpu")


def test_generic_value_mismatch_reports_the_difference():
    with pytest.raises(AssertionError, match="right shape .* but the wrong values: max"):
        checks.crop_to(lambda x, s: 2 * x[..., : s[0], : s[1]], device="cpu")


def test_checks_leave_tf32_flags_alone():
    before = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    checks.crop_to(crop_ok, device="cpu")
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == before


def test_device_defaults_to_get_device(monkeypatch, capsys):
    monkeypatch.setenv("DPTLEARN_DEVICE", "cpu")
    checks.grid_to_tokens(g2t_ok)
    assert dptlearn.get_device().type == "cpu"
    assert "✓ grid_to_tokens" in capsys.readouterr().out
