"""Checks of notebook 04: the residual conv unit, the crop, a fusion block, the coarse-to-fine path."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ... import fusion as ref_fusion
from ...fused import set_fast_inference
from .. import probe
from .harness import (ALIGN_MSG, NEAREST_MSG, Case, Check, build, call, generator, load, randomize_, standin, up)

RCU_SHAPE = "the 3x3 convs need padding=1 to keep (h, w)"
FUSION = ("dptlearn.fusion", "dptlearn.fused")


def rcu(x, w1, b1, w2, b2, pre=True, residual=True, skip_is_relu=False, final_relu=False):
    """The residual conv unit with one known mistake switched on (all off: the right unit)."""
    out = F.conv2d(F.relu(x) if pre else x, w1, b1, padding=1)
    out = F.conv2d(F.relu(out), w2, b2, padding=1)
    if residual:
        out = (F.relu(x) if skip_is_relu else x) + out
    return F.relu(out) if final_relu else out


def rcu_candidates(run):
    """Known RCU mistakes; ``run(**variant)`` recomputes the output with one of them."""
    return [
        ("missing pre-activation: the unit is x + conv2(relu(conv1(relu(x)))) — a ReLU *before* conv1 too",
         lambda: run(pre=False)),
        ("missing residual: return x + conv2(...), not conv2(...) alone", lambda: run(residual=False)),
        ("the skip adds relu(x) instead of x — an in-place ReLU (or relu'd input reused) overwrote x; use "
         "F.relu(x) / nn.ReLU(inplace=False) and add the original x", lambda: run(skip_is_relu=True)),
        ("ReLU after the residual add: DUSt3R's unit ends with the add, x + conv2(...)", lambda: run(final_relu=True)),
    ]


class ResidualConvUnitFn(Check):
    """``student(x, w1, b1, w2, b2) -> x + conv2(relu(conv1(relu(x))))`` with F.conv2d (padding 1)."""

    name = "residual_conv_unit"
    forbidden = FUSION
    B, D, H, W = 2, 4, 3, 5

    def make_case(self, seed):
        g = generator(self.name, seed, 0)
        x = torch.randn(self.B, self.D, self.H, self.W, generator=g)
        w1, w2 = (torch.randn(self.D, self.D, 3, 3, generator=g) / 6 for _ in range(2))
        b1, b2 = (torch.randn(self.D, generator=g) * 0.5 for _ in range(2))
        args = (x, w1, b1, w2, b2)
        return Case([call(*args, what="residual_conv_unit(x, w1, b1, w2, b2)")], {"args": args})

    def verify(self, case, results):
        got = self.value(case, results, 0)
        self.unchanged(results, 0, "in-place ReLU: your code overwrote the input x (e.g. F.relu(x, inplace=True) or "
                                   "x.relu_()), so the skip connection no longer adds the original x; use F.relu(x)")
        args = case.data["args"]
        B, D, h, w = self.B, self.D, self.H, self.W
        self.compare(got, rcu(*args), label="output", dims="(B, D, h, w)", result=results[0],
                     shape_hints={(B, D, h - 4, w - 4): RCU_SHAPE, (B, D, h - 2, w - 2): RCU_SHAPE},
                     candidates=rcu_candidates(lambda **kw: rcu(*args, **kw)))
        return "pre-activation residual unit on a 3x5 map, D=4"


class ResidualConvUnitCheck(Check):
    """``student_cls(dim)`` with ``conv1``, ``conv2`` (3x3, padding 1, bias)."""

    name = "ResidualConvUnit"
    forbidden = FUSION
    B, D, H, W = 2, 4, 3, 5

    def make_case(self, seed):
        ref = set_fast_inference(randomize_(ref_fusion.ResidualConvUnit(self.D), generator(self.name, seed, 0)), False)
        x = torch.randn(self.B, self.D, self.H, self.W, generator=generator(self.name, seed, 1))
        plan = [build(self.D, what=f"ResidualConvUnit({self.D})"), load(ref.state_dict()),
                call(x, fn="m", what="your forward")]
        return Case(plan, {"x": x, "want": ref(x), "args": (ref.conv1.weight, ref.conv1.bias, ref.conv2.weight,
                                                            ref.conv2.bias)})

    def verify(self, case, results):
        self.weights_loaded(case, results, 0, 1, bias_note="DUSt3R's residual units use convs with a bias",
                            hint=lambda m, u, s: ("name the convs conv1 and conv2: Conv2d(dim, dim, kernel_size=3, "
                                                  "padding=1)" if m else None))
        got = self.value(case, results, 2)
        self.unchanged(results, 2, "in-place ReLU: your forward overwrote its input x (nn.ReLU(inplace=True) or "
                                   "F.relu(x, inplace=True)), so the skip no longer adds the original x; DUSt3R's "
                                   "ReLU is not in place")
        x, args = case.data["x"], case.data["args"]
        B, D, h, w = self.B, self.D, self.H, self.W
        self.compare(got, case.data["want"], label="output", dims="(B, D, h, w)", result=results[2],
                     shape_hints={(B, D, h - 4, w - 4): RCU_SHAPE, (B, D, h - 2, w - 2): RCU_SHAPE},
                     candidates=rcu_candidates(lambda **kw: rcu(x, *args, **kw)))
        return "conv1/conv2 weights loaded, pre-activation, input untouched, 3x5 map"


class CropTo(Check):
    """``student(x, (h, w))``: keep the top-left h x w of (B, C, H, W)."""

    name = "crop_to"
    forbidden = ("dptlearn.fusion.crop_to",)
    SIZES = ((5, 7), torch.Size([4, 8]), (6, 5), (6, 8), (3, 3))

    def make_case(self, seed):
        x = torch.randn(2, 3, 6, 8, generator=generator(self.name, seed, 0))
        plan = [call(x, size, what=f"crop_to(x (2, 3, 6, 8), {tuple(size)})") for size in self.SIZES]
        return Case(plan, {"x": x})

    def verify(self, case, results):
        x = case.data["x"]
        for i, size in enumerate(self.SIZES):
            h, w = size
            got = self.value(case, results, i)
            self.compare(got, x[..., :h, :w], label=f"crop to {(h, w)}", dims="(B, C, h, w)", result=results[i],
                         shape_hints={(2, 3, h, 8): "crop the columns too", (2, 3, 6, w): "crop the rows too",
                                      (2, 3, w, h): "size is (h, w): rows first"},
                         candidates=[
                             ("you kept the bottom-right; DUSt3R keeps the top-left and drops the last rows/columns: "
                              "x[..., :h, :w]", lambda: x[..., 6 - h:, 8 - w:]),
                             ("you cropped the centre; DUSt3R keeps the top-left: x[..., :h, :w]",
                              lambda: x[..., (6 - h) // 2:(6 - h) // 2 + h, (8 - w) // 2:(8 - w) // 2 + w]),
                             ("you resized (interpolated) instead of cropping: DUSt3R slices x[..., :h, :w]",
                              lambda: up(x, True, size=(h, w))),
                             ("you resized (interpolated) instead of cropping: DUSt3R slices x[..., :h, :w]",
                              lambda: up(x, False, size=(h, w))),
                         ])
        return "top-left crops of a 6x8 map, incl. the no-op and a torch.Size"


def fusion_variant(ref, x, skip=None, align=True, mode="bilinear", rcu_kw=None, raw_skip=False, swap=False,
                   up_first=False, skip_after=False):
    """A fusion block's output with one known mistake switched on (the weights of ``ref``)."""
    def unit(m, t):
        return rcu(t, m.conv1.weight, m.conv1.bias, m.conv2.weight, m.conv2.bias, **(rcu_kw or {}))
    if swap:
        x, skip = skip, x
    out = x
    if up_first:
        out = up(out, align, mode)
        if skip is not None:
            out = out + up(unit(ref.skip_unit, skip), align, mode)
        return F.conv2d(unit(ref.unit, out), ref.out_conv.weight, ref.out_conv.bias)
    if skip is not None and not skip_after:
        out = out + (skip if raw_skip else unit(ref.skip_unit, skip))
    out = unit(ref.unit, out)
    if skip is not None and skip_after:
        out = out + unit(ref.skip_unit, skip)
    return F.conv2d(up(out, align, mode), ref.out_conv.weight, ref.out_conv.bias)


def fusion_candidates(ref, x, skip):
    v = lambda **kw: (lambda: fusion_variant(ref, x, skip, **kw))  # noqa: E731
    cands = [(ALIGN_MSG, v(align=False)), (NEAREST_MSG, v(mode="nearest")),
             ("the x2 upsample comes last (before out_conv), after the residual unit(s); you upsampled first",
              v(up_first=True))]
    cands += [(f"inside your residual units — {msg}", v(rcu_kw=kw)) for msg, kw in (
        ("missing pre-activation: x + conv2(relu(conv1(relu(x))))", {"pre": False}),
        ("missing residual: x + conv2(...)", {"residual": False}),
        ("the skip adds relu(x) instead of x (in-place ReLU?)", {"skip_is_relu": True}))]
    if skip is not None:
        cands += [
            ("the skip input goes through skip_unit before the add: out = x + skip_unit(skip)", v(raw_skip=True)),
            ("x and skip swapped: the pyramid level (skip) goes through skip_unit; the path x is added as is",
             v(swap=True)),
            ("add skip_unit(skip) *before* the residual unit: out = unit(x + skip_unit(skip))", v(skip_after=True)),
        ]
    return cands


class FusionBlockCheck(Check):
    """``student_cls(dim, with_skip=True)``: ``skip_unit``, ``unit``, ``out_conv``; forward(x, skip=None)."""

    name = "FusionBlock"
    forbidden = FUSION
    B, D, H, W = 2, 4, 3, 5

    def make_case(self, seed):
        plan, refs = [], []
        x = torch.randn(self.B, self.D, self.H, self.W, generator=generator(self.name, seed, 0))
        skip = torch.randn(self.B, self.D, self.H, self.W, generator=generator(self.name, seed, 1))
        for k, with_skip in enumerate((True, False)):
            ref = randomize_(ref_fusion.FusionBlock(self.D, with_skip=with_skip), generator(self.name, seed, 2 + k))
            set_fast_inference(ref, False)
            args = (x, skip) if with_skip else (x,)
            plan += [build(self.D, with_skip, slot=f"f{k}", what=f"FusionBlock({self.D}, with_skip={with_skip})"),
                     load(ref.state_dict(), slot=f"f{k}"),
                     call(*args, fn=f"f{k}", what=f"forward({'x, skip' if with_skip else 'x'})")]
            refs.append((ref, args, ref(*args)))
        return Case(plan, {"runs": refs})

    def verify(self, case, results):
        B, D, h, w = self.B, self.D, self.H, self.W
        for k, (ref, args, want) in enumerate(case.data["runs"]):
            with_skip = len(args) == 2

            def hint(missing, unexpected, mismatched, with_skip=with_skip):
                if not with_skip and any(k.startswith("skip_unit.") for k in unexpected):
                    return ("with_skip=False: the coarsest block takes x alone, build it without a skip unit "
                            "(self.skip_unit = None; DUSt3R's exists but is never used)")
                if with_skip and any(k.startswith("skip_unit.") for k in missing):
                    return "with_skip=True needs self.skip_unit, a residual conv unit for the skip input"
                if any(k.startswith("out_conv") for k, *_ in mismatched):
                    return "out_conv is a 1x1 Conv2d(dim, dim)"
                return ("attributes: skip_unit and unit (residual conv units with conv1, conv2) and out_conv "
                        "(1x1 conv)")
            self.weights_loaded(case, results, 3 * k, 3 * k + 1, hint=hint,
                                bias_note="DUSt3R's fusion convs have a bias")
            got = self.value(case, results, 3 * k + 2)
            self.unchanged(results, 3 * k + 2, "your block modified its inputs in place (an in-place ReLU in a "
                                               "residual unit?); DUSt3R's ReLU is not in place")
            self.compare(got, want, label=f"output (with_skip={with_skip})", dims="(B, D, 2h, 2w)",
                         result=results[3 * k + 2],
                         shape_hints={(B, D, h, w): "missing the x2 upsample (bilinear, align_corners=True)"},
                         candidates=fusion_candidates(ref, *args) if with_skip else fusion_candidates(ref, args[0], None))
        return ("with and without skip on a 3x5 map: x + skip_unit(skip) -> unit -> x2 bilinear (align_corners=True) "
                "-> out_conv")


def standin_blocks(D: int, g: torch.Generator) -> list:
    """Parameters of 4 stand-in fusion blocks (``probe.StandInBlock``); the coarsest has no skip."""
    return [{"scale": 0.5 + torch.rand(D, generator=g), "shift": torch.randn(D, generator=g) * 0.5,
             "a": None if i == 3 else round(0.3 + 0.4 * float(torch.rand(1, generator=g)), 4)} for i in range(4)]


def wiring(levels, fusion, crop=lambda p, s: p[..., :s[0], :s[1]], swap=False):
    """The coarse-to-fine path with another crop, or path and level swapped (for the known mistakes)."""
    path = crop(fusion[3](levels[3]), levels[2].shape[-2:])
    for i in (2, 1, 0):
        path = fusion[i](levels[i], path) if swap else fusion[i](path, levels[i])
    return path


class FusePyramid(Check):
    """``student(levels, fusion)``: coarse-to-fine fusion of 4 levels with the odd-grid crop.

    ``fusion`` holds stand-in blocks (``probe.StandInBlock``): the wiring is what is tested.
    """

    name = "fuse_pyramid"
    forbidden = ("dptlearn.fusion",)
    B, D, GRIDS = 2, 4, ((4, 6), (3, 5))

    def make_case(self, seed):
        blocks = standin_blocks(self.D, generator(self.name, seed, 0))
        fusion = probe.build_standin("fusion_blocks", blocks)
        plan, runs = [], []
        for k, (nh, nw) in enumerate(self.GRIDS):
            sizes = [(4 * nh, 4 * nw), (2 * nh, 2 * nw), (nh, nw), (math.ceil(nh / 2), math.ceil(nw / 2))]
            g = generator(self.name, seed, 1 + k)
            levels = [torch.randn(self.B, self.D, *s, generator=g) for s in sizes]
            plan.append(call(levels, standin("fusion_blocks", blocks), what=f"fuse_pyramid on a {nh}x{nw} grid"))
            runs.append((nh, nw, levels, ref_fusion.fuse_pyramid(levels, fusion)))
        return Case(plan, {"fusion": fusion, "runs": runs})

    def verify(self, case, results):
        fusion = case.data["fusion"]
        for i, (nh, nw, levels, want) in enumerate(case.data["runs"]):
            r = results[i]
            if r.get("raised") not in (None, "NotImplementedError"):
                c = levels[3].shape[-2:]
                if (nh % 2 or nw % 2) and "same shape" in r.get("message", ""):
                    self.fail(f"missing crop on odd grids: on a {nh}x{nw} grid the coarsest level has {c[0]}x{c[1]} "
                              f"cells, fusion[3] doubles that to {2 * c[0]}x{2 * c[1]}, which must be cropped "
                              f"(top-left) to {nh}x{nw} before fusion[2] ({r['raised']}: {r.get('message')})")
                self.fail(f"your code raised {r['raised']} on a {nh}x{nw} grid: {r.get('message')} — go coarse to "
                          f"fine: fusion[3](levels[3]) alone, then fusion[2](path, levels[2]), fusion[1](path, "
                          f"levels[1]), fusion[0](path, levels[0])")
            got = self.value(case, results, i)
            self.compare(got, want, label=f"fused map for a {nh}x{nw} grid", dims="(B, D, 8nh, 8nw)", result=r,
                         candidates=[
                             ("you kept the bottom-right of the coarse path; DUSt3R crops to the top-left: "
                              "path[..., :h, :w]", lambda: wiring(levels, fusion, lambda p, s: p[..., -s[0]:, -s[1]:])),
                             ("you resized the coarse path (interpolation) instead of cropping it: DUSt3R slices "
                              "path[..., :h, :w]", lambda: wiring(levels, fusion, lambda p, s: up(p, True, size=s))),
                             ("you resized the coarse path (interpolation) instead of cropping it: DUSt3R slices "
                              "path[..., :h, :w]", lambda: wiring(levels, fusion, lambda p, s: up(p, False, size=s))),
                             ("path and level swapped: a block takes the path first, then its pyramid level as the "
                              "skip — fusion[i](path, levels[i])", lambda: wiring(levels, fusion, swap=True)),
                         ])
        return "even 4x6 and odd 3x5 grids, crop after fusion[3]"
