"""Checks of notebook 05: the regression head (as a module and in DUSt3R's key layout) and the
post-processing (depth and confidence activations, raw map -> point map)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ... import head as ref_head
from ... import postprocess as ref_post
from .harness import (ALIGN_MSG, INF, NEAREST_MSG, Case, Check, CheckFailed, build, call, close, generator, load,
                      randomize_, up)

HEAD = ("dptlearn.head", "dptlearn.fusion.Upsample", "dptlearn.fast")


def head_variant(ref, x, align=True, mode="bilinear", relu="refine", order="reduce_up_refine"):
    """The regression head's output with one known mistake switched on (the weights of ``ref``)."""
    def conv(m, t, pad):
        return F.conv2d(t, m.weight, m.bias, padding=pad)
    r, f, p = ref.reduce, ref.refine, ref.predict
    if order == "up_first":
        return conv(p, F.relu(conv(f, conv(r, up(x, align, mode), 1), 1)), 0)
    if order == "refine_first":
        return conv(p, up(F.relu(conv(f, conv(r, x, 1), 1)), align, mode), 0)
    if order == "relu_up_swapped":      # ReLU where the upsample goes and the upsample where the ReLU goes
        return conv(p, up(conv(f, F.relu(conv(r, x, 1)), 1), align, mode), 0)
    y = conv(r, x, 1)
    if relu == "after_reduce_too":
        y = F.relu(y)
    y = conv(f, up(y, align, mode), 1)
    if relu != "none":
        y = F.relu(y)
    y = conv(p, y, 0)
    return F.relu(y) if relu == "also_predict" else y


def head_candidates(ref, x):
    v = lambda **kw: (lambda: head_variant(ref, x, **kw))  # noqa: E731
    return [(ALIGN_MSG, v(align=False)),
            ("missing ReLU between refine and predict", v(relu="none")),
            ("ReLU after reduce: DUSt3R's head has a single ReLU, after refine (head.3)", v(relu="after_reduce_too")),
            ("ReLU after predict: the raw output must stay signed (the post-processing maps it)", v(relu="also_predict")),
            ("ReLU and upsample swapped: the upsample follows reduce (head.1) and the ReLU follows refine (head.3)",
             v(order="relu_up_swapped")),
            ("the x2 upsample comes right after reduce (head.1), before refine", v(order="refine_first")),
            ("the x2 upsample comes after reduce (head.1), not before it", v(order="up_first"))]


class RegressionHeadCheck(Check):
    """``student_cls(feature_dim, last_dim, out_channels)``: ``reduce``, ``refine``, ``predict``."""

    name = "RegressionHead"
    forbidden = HEAD
    B, DM, LAST, OUT, H, W = 2, 8, 6, 4, 3, 5

    def reference(self, seed):
        ref = randomize_(ref_head.RegressionHead(self.DM, self.LAST, self.OUT), generator(self.name, seed, 0))
        x = torch.randn(self.B, self.DM, self.H, self.W, generator=generator(self.name, seed, 1))
        return ref, x

    def make_case(self, seed):
        ref, x = self.reference(seed)
        plan = [build(self.DM, self.LAST, self.OUT, what=f"RegressionHead({self.DM}, {self.LAST}, {self.OUT})"),
                load(ref.state_dict()), call(x, fn="m", what="your forward")]
        return Case(plan, {"ref": ref, "x": x, "want": ref(x)})

    def verify(self, case, results):
        def hint(missing, unexpected, mismatched):
            keys = [k for k, *_ in mismatched]
            if "reduce.weight" in keys:
                return "reduce halves the channels before the upsample (lecture 05, section 1)"
            if "refine.weight" in keys:
                return "refine takes reduce's output width to last_dim"
            if "predict.weight" in keys:
                return "predict looks at one pixel at a time and gives out_channels numbers"
            return "the check loads reduce, refine and predict by name, each with a bias"
        self.weights_loaded(case, results, 0, 1, hint=hint, bias_note="the head's three convs have a bias")
        got = self.value(case, results, 2)
        self.compare(got, case.data["want"], label="raw output", dims="(B, out_channels, 2h, 2w)", result=results[2],
                     shape_hints={(self.B, self.OUT, self.H, self.W): "missing the x2 upsample",
                                  (self.B, self.OUT, 4 * self.H, 4 * self.W): "you upsampled twice"},
                     candidates=head_candidates(case.data["ref"], case.data["x"]))
        return "reduce -> x2 bilinear (corners pinned) -> refine -> ReLU -> predict, on a 3x5 map"


class HeadSequential(RegressionHeadCheck):
    """``student(feature_dim, last_dim, out_channels) -> nn.Sequential`` laid out like DUSt3R's ``head.0..4``."""

    name = "head_sequential"
    forbidden = HEAD

    def make_case(self, seed):
        ref, x = self.reference(seed)
        sd = {f"{i}.{p}": getattr(ref, m).get_parameter(p) for i, m in ((0, "reduce"), (2, "refine"), (4, "predict"))
              for p in ("weight", "bias")}
        plan = [build(self.DM, self.LAST, self.OUT, what=f"head_sequential({self.DM}, {self.LAST}, {self.OUT})"),
                load(sd), call(x, fn="m", what="your nn.Sequential")]
        return Case(plan, {"ref": ref, "x": x, "want": ref(x)})

    def verify(self, case, results):
        rec = self.module(case, results, 0)
        if not rec["sequential"]:
            self.fail(f"return an nn.Sequential (its indices become the checkpoint keys), got {rec['type']}")
        if len(rec["children"]) != 5:
            self.fail(f"expected 5 layers (0 reduce conv, 1 upsample, 2 refine conv, 3 ReLU, 4 predict conv), "
                      f"got {len(rec['children'])}: {rec['children']}")
        self.weights_loaded(case, results, 0, 1, hint=lambda m, u, s: (
            "the convs must sit at indices 0, 2, 4 (DUSt3R's keys head.0, head.2, head.4); indices 1 and 3 are "
            "the layers without weights: torch.nn has a module for the upsample too"))
        got = self.value(case, results, 2)
        ref, x = case.data["ref"], case.data["x"]
        self.compare(got, case.data["want"], label="raw output", dims="(B, out_channels, 2h, 2w)", result=results[2],
                     shape_hints={(self.B, self.OUT, self.H, self.W): "index 1 must upsample x2"},
                     candidates=[(ALIGN_MSG + " — nn.Upsample's default is align_corners=False",
                                  lambda: head_variant(ref, x, align=False)),
                                 (NEAREST_MSG + " (nn.Upsample's default mode is 'nearest')",
                                  lambda: head_variant(ref, x, mode="nearest"))] + head_candidates(ref, x)[1:])
        return "nn.Sequential with convs at 0, 2, 4 loads DUSt3R-style head.0/2/4 weights; output matches"


def depth_variant(xyz, kind):
    d = xyz.norm(dim=-1, keepdim=True)
    u = xyz / d.clamp(min=1e-8)
    return {"exp": lambda: u * torch.exp(d), "log1p": lambda: u * torch.log1p(d), "elementwise_exp": lambda: torch.exp(xyz),
            "elementwise_expm1": lambda: torch.expm1(xyz), "no_clamp": lambda: xyz / d * torch.expm1(d),
            "elementwise_square": lambda: xyz ** 2, "square_as_linear": lambda: xyz,
            "norm_dim1": lambda: (xyz / xyz.norm(dim=1, keepdim=True).clamp(min=1e-8)
                                  * torch.expm1(xyz.norm(dim=1, keepdim=True))),
            "sq_elementwise_sign": lambda: xyz * xyz.abs(), "exp_of_square": lambda: u * d.square()}[kind]()


class DepthActivation(Check):
    """``student(xyz, mode)`` for modes ('linear'|'square'|'exp', -inf, inf): keep direction, remap length;
    ValueError for finite bounds (DUSt3R asserts vmin = -inf and vmax = inf)."""

    name = "depth_activation"
    forbidden = ("dptlearn.postprocess",)
    MODES = ("exp", "square", "linear")
    BOUNDED = (("exp", 0, 10), ("linear", -INF, 5.0))

    def make_case(self, seed):
        xyz = torch.randn(2, 3, 5, 3, generator=generator(self.name, seed, 0))
        xyz[0, 0, 0] = 0.0                                   # a zero vector: stays at the camera centre
        plan = [call(xyz, (m, -INF, INF), what=f"depth_activation(xyz, {(m, -INF, INF)})") for m in self.MODES]
        plan += [call(xyz, mode, what=f"depth_activation(xyz, {mode})") for mode in self.BOUNDED]
        return Case(plan, {"xyz": xyz})

    def verify(self, case, results):
        xyz = case.data["xyz"]
        for i, mode_name in enumerate(self.MODES):
            got = self.value(case, results, i)
            self.unchanged(results, i, "you modified xyz in place; return a new tensor")
            v = lambda k: (lambda: depth_variant(xyz, k))  # noqa: E731
            cands = [
                ("NaN at the zero vector (0/0): the card says what to divide by instead of d", v("no_clamp")),
                ("norm over the wrong axis: each vector is the last dimension (..., 3)", v("norm_dim1")),
            ]
            if mode_name == "exp":
                cands = [("exp instead of expm1 (e^d − 1): a zero vector must stay at the camera centre, and near 0 "
                          "exp(d) − 1 loses its digits (lecture 05: why expm1)", v("exp")),
                         ("you applied exp to each coordinate; DUSt3R keeps the vector's direction and remaps its "
                          "length d = |v|", v("elementwise_exp")),
                         ("you applied expm1 to each coordinate; DUSt3R keeps the vector's direction and remaps "
                          "its length d = |v|", v("elementwise_expm1")),
                         ("log1p (ln(1 + d)) where DUSt3R uses expm1 (e^d − 1): the inverse of the right remap, so far points come out far too close (lecture 05: why expm1)", v("log1p")),
                         ("you used the 'square' formula for 'exp'", v("exp_of_square"))] + cands
            elif mode_name == "square":
                cands = [("you squared each coordinate (that loses the sign); DUSt3R keeps the direction and "
                          "squares the length", v("elementwise_square")),
                         ("you squared each coordinate keeping its sign; DUSt3R squares the vector's length",
                          v("sq_elementwise_sign")),
                         ("'square' returned xyz unchanged (that is 'linear')", v("square_as_linear"))] + cands
            else:
                cands = [("'linear' must return xyz unchanged", lambda: xyz)]
            self.compare(got, ref_post.depth_activation(xyz, (mode_name, -INF, INF)), label=f"mode {mode_name!r}",
                         dims="(..., 3)", result=results[i],
                         shape_hints={(2, 3, 5, 1): "return the vectors (..., 3), not their lengths"}, candidates=cands)
        for i, mode in enumerate(self.BOUNDED, start=len(self.MODES)):
            self.expect_value_error(case, results, i, "DUSt3R's depth modes accept only vmin = -inf, vmax = inf",
                                    returned=lambda v: f"a {self.kind(v)}")
        return "modes 'exp', 'square', 'linear' incl. a zero vector; ValueError for finite bounds"


class ConfActivation(Check):
    """``student(x, mode)`` for ('exp', vmin, vmax) and ('sigmoid', vmin, vmax)."""

    name = "conf_activation"
    forbidden = ("dptlearn.postprocess",)
    MODES = (("exp", 1, INF), ("exp", 0.5, INF), ("exp", 1, 5), ("sigmoid", 0, 1), ("sigmoid", 1, 3))

    def make_case(self, seed):
        x = torch.randn(2, 3, 5, generator=generator(self.name, seed, 0)) * 1.5
        return Case([call(x, mode, what=f"conf_activation(x, {mode})") for mode in self.MODES], {"x": x})

    def verify(self, case, results):
        x = case.data["x"]
        s, e = torch.sigmoid(x), torch.exp(x)
        for i, mode in enumerate(self.MODES):
            kind, vmin, vmax = mode
            got = self.value(case, results, i)
            cands = {"exp": [
                ("wrong confidence offset: without vmin added the confidence can fall below vmin (DUSt3R's "
                 "('exp', 1, inf) keeps it above 1)", lambda: e),
                ("the result exceeds vmax: clip e^x so that the confidence stays within [vmin, vmax]",
                 lambda: vmin + e),
                ("wrong confidence offset: read vmin from the mode tuple, not a hard-coded 1", lambda: 1 + e),
                ("wrong confidence offset: vmin is added, not multiplied", lambda: vmin * e),
                ("clipped at the wrong value: the result exceeds vmax (clip what is added to vmin)",
                 lambda: vmin + e.clamp(max=vmax)),
                ("you used expm1; the confidence is vmin plus e^x itself",
                 lambda: vmin + torch.expm1(x).clamp(max=vmax - vmin)),
            ], "sigmoid": [
                ("the sigmoid must be stretched and shifted to span [vmin, vmax]", lambda: s),
                ("the sigmoid is shifted but not stretched: it must span [vmin, vmax], a width of vmax - vmin",
                 lambda: s + vmin),
                ("the sigmoid spans [vmin, vmin + vmax]: stretch it by the width of the interval, not by vmax",
                 lambda: vmax * s + vmin),
                ("you used exp for the 'sigmoid' mode", lambda: vmin + e.clamp(max=vmax - vmin)),
            ]}[kind]
            self.compare(got, ref_post.conf_activation(x, mode), label=f"mode {mode}", dims="(B, H, W)",
                         result=results[i], candidates=cands)
        return "('exp', 1, inf), ('exp', 0.5, inf), ('exp', 1, 5), ('sigmoid', 0, 1), ('sigmoid', 1, 3)"


EARLIER_DEPTH = (   # depth_variant kinds -> what the learner's depth_activation does wrong, in words
    ("exp", "e^d instead of e^d − 1 (exp instead of expm1)"), ("elementwise_exp", "exp of each coordinate"),
    ("elementwise_expm1", "expm1 of each coordinate"), ("no_clamp", "NaN at the zero vector"),
    ("norm_dim1", "a norm over the wrong axis"), ("exp_of_square", "the 'square' formula for 'exp'"))


def fix_first(part: str, what: str) -> str:
    return (f"your `{part}` gives {what}; postprocess hands it the right channels, so fix `{part}` first (its own "
            f"check above names the mistake), then run this check again")


def depth_cause(got: torch.Tensor, fmap: torch.Tensor) -> str | None:
    """The learner's pts3d point the right way but have other lengths: the cause is depth_activation."""
    xyz = fmap[..., :3]
    for kind, what in EARLIER_DEPTH:
        if close(got, depth_variant(xyz, kind)):
            return fix_first("depth_activation", f"{what} for ('exp', -inf, inf)")
    n_got, n_want = got.norm(dim=-1, keepdim=True), xyz.norm(dim=-1, keepdim=True)
    if bool(torch.isfinite(got).all()) and close(got / n_got.clamp(min=1e-8), xyz / n_want.clamp(min=1e-8)):
        return fix_first("depth_activation", "the right directions but other lengths for ('exp', -inf, inf)")
    return None


def conf_cause(got: torch.Tensor, raw_conf: torch.Tensor) -> str | None:
    """The learner's conf is an increasing function of the right channel, but not DUSt3R's: conf_activation."""
    if got.shape != raw_conf.shape or not bool(torch.isfinite(got).all()):
        return None
    if torch.equal(got.flatten().argsort(), raw_conf.flatten().argsort()):
        return fix_first("conf_activation", "another increasing map of the confidence channel than ('exp', 1, inf)")
    return None


class Postprocess(Check):
    """``student(raw, depth_mode, conf_mode) -> {'pts3d': (B, H, W, 3), 'conf': (B, H, W)}``.

    When the channels are right but a value is not, the cause may be the learner's own
    ``depth_activation`` or ``conf_activation`` (postprocess calls them): the message then says so.
    """

    name = "postprocess"
    forbidden = ("dptlearn.postprocess",)
    B, H, W = 2, 3, 5
    DM, CM = ("exp", -INF, INF), ("exp", 1, INF)

    def make_case(self, seed):
        raw = torch.randn(self.B, 4, self.H, self.W, generator=generator(self.name, seed, 0))
        plan = [call(raw, self.DM, self.CM, what=f"postprocess(raw, {self.DM}, {self.CM})"),
                call(raw[:, :3], ("linear", -INF, INF), None,
                     what="postprocess(raw with 3 channels, ('linear', -inf, inf), None)")]
        return Case(plan, {"raw": raw})

    def verify(self, case, results):
        B, H, W, dm, cm, raw = self.B, self.H, self.W, self.DM, self.CM, case.data["raw"]
        want = ref_post.postprocess(raw, dm, cm)
        got = self.mapping(self.value(case, results, 0), {"pts3d", "conf"}, "return a dict with keys 'pts3d' and 'conf'")
        da, ca = ref_post.depth_activation, ref_post.conf_activation
        fmap = raw.permute(0, 2, 3, 1)                                       # (B, H, W, 4)
        self.caused(lambda: self.compare(got["pts3d"], want["pts3d"], label="pts3d", dims="(B, H, W, 3)", result=results[0],
                     shape_hints={(B, 3, H, W): "channels last: the point map is (B, H, W, 3)"},
                     candidates=[
                         ("reshape instead of moving the channel axis: a reshape to (B, H, W, C) keeps the memory "
                          "order and scrambles channels and pixels (lecture 05, section 4)",
                          lambda: da(raw.reshape(B, H, W, 4)[..., :3], dm)),
                         ("channel order: the raw channels are x, y, z, conf — pts3d comes from the first three",
                          lambda: da(raw.permute(0, 2, 3, 1)[..., 1:4], dm)),
                         ("pts3d must go through the depth activation of depth_mode",
                          lambda: raw.permute(0, 2, 3, 1)[..., :3]),
                     ]), lambda: depth_cause(got["pts3d"], fmap))
        self.caused(lambda: self.compare(got["conf"], want["conf"], label="conf", dims="(B, H, W)", result=results[0],
                     shape_hints={(B, H, W, 1): "conf has no channel dimension: a slice keeps the axis, an integer "
                                                "index drops it",
                                  (B, 1, H, W): "channels last and no channel dimension: conf is (B, H, W)"},
                     candidates=[
                         ("reshape instead of moving the channel axis: a reshape to (B, H, W, C) keeps the memory "
                          "order and scrambles channels and pixels (lecture 05, section 4)",
                          lambda: ca(raw.reshape(B, H, W, 4)[..., 3], cm)),
                         ("channel order: the raw channels are x, y, z, conf — conf is the last channel",
                          lambda: ca(raw[:, 0], cm)),
                         ("conf must go through the confidence activation of conf_mode", lambda: raw[:, 3]),
                     ]), lambda: conf_cause(got["conf"], fmap[..., 3]))
        got = self.value(case, results, 1, hint="with conf_mode=None the raw map has 3 channels (x, y, z) and no "
                                                "confidence: return only {'pts3d': ...}")
        got = self.mapping(got, {"pts3d"}, "with conf_mode=None (a 3-channel raw map) return only {'pts3d': ...}")
        self.compare(got["pts3d"], raw[:, :3].permute(0, 2, 3, 1), label="pts3d with mode 'linear'",
                     dims="(B, H, W, 3)", result=results[1])
        return "exp depth + exp conf on a 4-channel map; linear depth without conf on a 3-channel map"

    def caused(self, compare, cause) -> None:
        """Run ``compare``; a bare value mismatch is replaced by its cause in an earlier answer, if found."""
        try:
            compare()
        except CheckFailed as e:
            why = cause() if "but the wrong values" in str(e) else None
            if why is None:
                raise
            self.fail(why)
