"""Checks that find the cause (issue #23 item 4), each message tested against a planted mistake.

- postprocess: right wiring on top of a wrong depth_activation / conf_activation blames that part;
- grid_to_tokens is judged on its own (its round trip starts from the reference's fold);
- the capstone names wrong hooks, wrong widths and a wrong fusion order as such;
- FusionBlock on top of a wrong ResidualConvUnit blames the unit.
The expected phrases are written here, from the mistakes, not copied from the checks' candidates.
"""
from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from dptlearn import checks
from dptlearn.course.answers import PARTS, Parts, load_answers
from dptlearn.course.checks import CheckFailed

from test_capstone import SOLUTIONS, capstone, run_check
from test_checks import FusionOk, conf_ok, depth_ok


def failure(name, obj) -> str:
    with pytest.raises(CheckFailed) as info:
        getattr(checks, name)(obj, device="cpu")
    return str(info.value)


# ------------------------------------------------------------------ postprocess on a wrong activation

def post_with(depth=depth_ok, conf=conf_ok):
    """A right postprocess, calling the given activations (as the learner's calls their own)."""
    def post(raw, dm, cm):
        f = raw.permute(0, 2, 3, 1)
        out = {"pts3d": depth(f[..., :3], dm)}
        if cm is not None:
            out["conf"] = conf(f[..., 3], cm)
        return out
    return post


def depth_exp(xyz, mode):               # e^d where DUSt3R has e^d - 1
    if mode[0] == "linear":
        return xyz
    d = xyz.norm(dim=-1, keepdim=True)
    return xyz / d.clamp(min=1e-8) * d.exp()


def depth_doubled(xyz, mode):           # a mistake no candidate lists: twice the length
    return 2 * depth_ok(xyz, mode) if mode[0] != "linear" else xyz


@pytest.mark.parametrize("depth,named", [(depth_exp, "exp instead of expm1"),
                                         (depth_doubled, "right directions but other lengths")])
def test_postprocess_blames_a_wrong_depth_activation(depth, named):
    msg = failure("postprocess", post_with(depth=depth))
    assert msg.startswith("postprocess: your `depth_activation` gives"), msg
    assert named in msg and "fix `depth_activation` first" in msg, msg


def test_postprocess_blames_a_wrong_conf_activation():
    msg = failure("postprocess", post_with(conf=lambda x, m: 2 * conf_ok(x, m)))
    assert "your `conf_activation` gives" in msg and "fix `conf_activation` first" in msg, msg


def test_postprocess_own_mistake_is_still_its_own():
    """Taking conf from channel 0 is postprocess's mistake, not the activation's."""
    def post(raw, dm, cm):
        return {"pts3d": depth_ok(raw.permute(0, 2, 3, 1)[..., :3], dm), "conf": conf_ok(raw[:, 0], cm)}
    msg = failure("postprocess", post)
    assert "conf_activation" not in msg.split("—")[0] and "channel order" in msg, msg


# ------------------------------------------------------------------ each direction on its own

def test_grid_to_tokens_is_judged_without_tokens_to_grid(capsys):
    """A right grid_to_tokens passes whatever tokens_to_grid does, and says it ran on its own."""
    checks.grid_to_tokens(lambda g: rearrange(g, "b c nh nw -> b (nh nw) c"), device="cpu")
    assert "this direction on its own" in capsys.readouterr().out
    msg = failure("grid_to_tokens", lambda g: rearrange(g, "b c nh nw -> b (nw nh) c"))
    assert "rows and columns swapped" in msg


# ------------------------------------------------------------------ FusionBlock on a wrong unit

class FusionOnResNetUnit(FusionOk):
    """A right block whose residual units are ResNet-ordered (the learner's ResidualConvUnit is wrong)."""

    def __init__(self, dim, with_skip=True):
        super().__init__(dim, with_skip)
        for unit in (self.skip_unit, self.unit):
            if unit is not None:
                unit.forward = (lambda u: lambda x: F.relu(x + u.conv2(F.relu(u.conv1(x)))))(unit)


def test_fusion_block_blames_the_residual_unit():
    msg = failure("FusionBlock", FusionOnResNetUnit)
    assert "your ResidualConvUnit" in msg and "fix it first" in msg, msg


# ------------------------------------------------------------------ the capstone: hooks, widths, fusion order

@pytest.fixture(scope="module")
def mine():
    return Parts({nb: load_answers(nb, SOLUTIONS) for nb in PARTS}, {}, [])


class Head(nn.Module):
    """MyDUSt3RHead from the solutions' parts, with one planted mistake of the assembly."""

    def __init__(self, p, mistake, enc, dec, depth, feature_dim, last_dim, layer_dims, patch_size=16):
        super().__init__()
        self.p, self.mistake, self.patch_size = p, mistake, patch_size
        self.hooks = {"dpt_hooks": [2, 5, 8, 11], "rounded_up": [0, 5, 8, 10]}.get(mistake, p.hook_indices(depth))
        widths = [enc if h == 0 else dec for h in p.hook_indices(depth)]
        if mistake == "all_enc":
            widths = [enc] * 4
        if mistake == "layer_dims_reversed":
            layer_dims = tuple(reversed(layer_dims))
        self.reassemble = p.Reassemble(widths, layer_dims, feature_dim)
        with_skip = (lambda i: i > 0) if mistake == "coarsest_first" else (lambda i: i < 3)
        self.fusion = nn.ModuleList(p.FusionBlock(feature_dim, with_skip=with_skip(i)) for i in range(4))
        self.head = p.RegressionHead(feature_dim, last_dim, 4)

    def forward(self, tokens, image_size):
        p = self.p
        nh, nw = p.patch_grid(image_size, self.patch_size)
        grids = [p.tokens_to_grid(t, nh, nw) for t in p.select_hooked_tokens(tokens, self.hooks)]
        levels = self.reassemble(grids)
        fusion = self.fusion[::-1] if self.mistake == "blocks_reversed" else self.fusion
        raw = self.head(p.fuse_pyramid(levels, fusion))
        return p.postprocess(raw, ("exp", -math.inf, math.inf), ("exp", 1, math.inf))


ASSEMBLY = {   # planted mistake -> what the message must call it
    "dpt_hooks": ("wrong hooks", "[2, 5, 8, 11]"),
    "rounded_up": ("wrong hooks", "[0, 5, 8, 10]"),
    "all_enc": ("wrong widths", "branch 1 reads 8 channels"),
    "layer_dims_reversed": ("wrong widths", "layer_dims[i]"),
    "coarsest_first": ("wrong fusion order", "fusion[0]"),
    "blocks_reversed": ("wrong fusion order", "without a skip unit got a skip input"),
}


@pytest.mark.parametrize("mistake", sorted(ASSEMBLY))
def test_the_capstone_names_hooks_widths_and_fusion_order(mistake, mine):
    obj = {**capstone(mine), "head": lambda *args: Head(mine, mistake, *args)}
    with pytest.raises(CheckFailed) as info:
        run_check("MyDUSt3RHead", obj)
    msg = str(info.value)
    kind, detail = ASSEMBLY[mistake]
    assert msg.startswith("MyDUSt3RHead: ") and kind in msg.split(" — ")[0], msg
    assert detail in msg, msg


def test_the_planted_head_without_a_mistake_passes(mine, capsys):
    run_check("MyDUSt3RHead", {**capstone(mine), "head": lambda *args: Head(mine, None, *args)})
    assert capsys.readouterr().out.startswith("✓ MyDUSt3RHead: passed")
