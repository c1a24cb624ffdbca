"""Checks of notebook 04: the residual conv unit, the crop, a fusion block, the coarse-to-fine path."""
from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F

from ... import fusion as ref_fusion
from .. import probe
from .harness import (ALIGN_MSG, NEAREST_MSG, Case, Check, build, call, generator, load, randomize_, standin, up)

RCU_SHAPE = "a 3x3 conv without padding shrinks the map by 2 cells: which padding keeps (h, w)?"
FUSION = ("dptlearn.fusion", "dptlearn.fast")
RESNET_MSG = ("ResNet order (ReLU after the add, no ReLU before conv1): DUSt3R's unit is pre-activation — the "
              "ReLU comes before each conv and nothing follows the add (lecture 04, question 2)")


def rcu(x, w1, b1, w2, b2, pre=True, residual=True, skip_is_relu=False, final_relu=False, relu_conv2=False,
        leaky=False):
    """The residual conv unit with one known mistake switched on (all off: the right unit)."""
    act = F.leaky_relu if leaky else F.relu          # leaky: nn.LeakyReLU's default slope 0.01
    out = F.conv2d(act(x) if pre else x, w1, b1, padding=1)
    out = F.conv2d(act(out), w2, b2, padding=1)
    if relu_conv2:
        out = F.relu(out)
    if residual:
        out = (F.relu(x) if skip_is_relu else x) + out
    return F.relu(out) if final_relu else out


RCU_MISTAKES = (   # (diagnosis, switches for ``rcu``)
    ("missing pre-activation: the unit's first ReLU comes before conv1", {"pre": False}),
    ("missing residual: the unit adds its unchanged input back at the end", {"residual": False}),
    ("the skip adds relu(x) instead of x — an in-place ReLU (or a relu'd input reused) overwrote x; the skip "
     "needs the original input", {"skip_is_relu": True}),
    (RESNET_MSG, {"pre": False, "final_relu": True}),
    (RESNET_MSG, {"pre": False, "relu_conv2": True, "final_relu": True}),
    ("ReLU after the residual add: DUSt3R's unit ends with the add", {"final_relu": True}),
    ("LeakyReLU where DUSt3R's unit uses ReLU: negative values become 0, not 0.01 x", {"leaky": True}),
)


def rcu_candidates(run):
    """Known RCU mistakes; ``run(**variant)`` recomputes the output with one of them."""
    return [(msg, lambda kw=kw: run(**kw)) for msg, kw in RCU_MISTAKES]


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
        self.unchanged(results, 0, "in-place ReLU: your code overwrote the input x (inplace=True, or relu_()), so "
                                   "the skip connection no longer adds the original x (lecture 04, question 1)")
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
        ref = randomize_(ref_fusion.ResidualConvUnit(self.D), generator(self.name, seed, 0))
        x = torch.randn(self.B, self.D, self.H, self.W, generator=generator(self.name, seed, 1))
        plan = [build(self.D, what=f"ResidualConvUnit({self.D})"), load(ref.state_dict()),
                call(x, fn="m", what="your forward")]
        return Case(plan, {"x": x, "want": ref(x), "args": (ref.conv1.weight, ref.conv1.bias, ref.conv2.weight,
                                                            ref.conv2.bias)})

    def verify(self, case, results):
        self.weights_loaded(case, results, 0, 1, bias_note="DUSt3R's residual units use convs with a bias",
                            hint=lambda m, u, s: ("the check loads the two 3x3 convs as conv1 and conv2 (dim -> dim, "
                                                  "size kept)" if m or s else None))
        got = self.value(case, results, 2)
        self.unchanged(results, 2, "in-place ReLU: your forward overwrote its input x (a ReLU with inplace=True), "
                                   "so the skip no longer adds the original x (lecture 04, question 1)")
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
                             ("you kept the bottom-right; DUSt3R keeps the top-left and drops the last rows and "
                              "columns", lambda: x[..., 6 - h:, 8 - w:]),
                             ("you dropped the first rows; DUSt3R drops the last ones (lecture 04, section 3: "
                              "which row has no counterpart)", lambda: x[..., 6 - h:, :w]),
                             ("you dropped the first columns; DUSt3R drops the last ones", lambda: x[..., :h, 8 - w:]),
                             ("you cropped the centre; DUSt3R keeps the top-left",
                              lambda: x[..., (6 - h) // 2:(6 - h) // 2 + h, (8 - w) // 2:(8 - w) // 2 + w]),
                             ("you resized (interpolated) instead of cropping: a crop keeps the values it keeps",
                              lambda: up(x, True, size=(h, w))),
                             ("you resized (interpolated) instead of cropping: a crop keeps the values it keeps",
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
    cands += [(f"your ResidualConvUnit (the block's two residual units) gives another unit — {msg}; fix it first "
               f"(its own check above names the mistake), then run this check again", v(rcu_kw=kw))
              for msg, kw in RCU_MISTAKES]
    if skip is not None:
        cands += [
            ("the skip input (the pyramid level) goes through skip_unit before it is added to the path; you added "
             "it raw", v(raw_skip=True)),
            ("x and skip swapped: the pyramid level (skip) goes through skip_unit; the path x is added as is",
             v(swap=True)),
            ("the skip comes in too late: unit refines the sum of the path and the refined skip, so the add comes "
             "before unit", v(skip_after=True)),
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
                    return ("with_skip=False: the coarsest block takes x alone and has no skip unit (skip_unit is "
                            "None; DUSt3R builds one that never runs, lecture 04, section 5)")
                if with_skip and any(k.startswith("skip_unit.") for k in missing):
                    return "with_skip=True needs skip_unit, a residual conv unit for the skip input"
                if any(k.startswith("out_conv") for k, *_ in mismatched):
                    return "out_conv mixes the channels of each pixel, dim -> dim (look at its kernel size)"
                return ("the check loads skip_unit and unit (residual conv units with conv1, conv2) and out_conv "
                        "by name")
            self.weights_loaded(case, results, 3 * k, 3 * k + 1, hint=hint,
                                bias_note="DUSt3R's fusion convs have a bias")
            got = self.value(case, results, 3 * k + 2)
            self.unchanged(results, 3 * k + 2, "your block modified its inputs in place (an in-place ReLU in a "
                                               "residual unit?): the skip connections need the original inputs")
            self.compare(got, want, label=f"output (with_skip={with_skip})", dims="(B, D, 2h, 2w)",
                         result=results[3 * k + 2],
                         shape_hints={(B, D, h, w): "missing the x2 upsample: a block doubles h and w",
                                      (B, D, 4 * h, 4 * w): "you upsampled twice: a block doubles h and w once"},
                         candidates=fusion_candidates(ref, *args) if with_skip else fusion_candidates(ref, args[0], None))
        return "with and without skip on a 3x5 map: skip unit, add, unit, x2 bilinear (corners pinned), out_conv"


def standin_blocks(D: int, g: torch.Generator) -> list:
    """Parameters of 4 stand-in fusion blocks (``probe.StandInBlock``); the coarsest has no skip."""
    return [{"scale": 0.5 + torch.rand(D, generator=g), "shift": torch.randn(D, generator=g) * 0.5,
             "a": None if i == 3 else round(0.3 + 0.4 * float(torch.rand(1, generator=g)), 4)} for i in range(4)]


def wiring(levels, fusion, crop=lambda p, s: p[..., :s[0], :s[1]], swap=False, blocks=(3, 2, 1, 0)):
    """The coarse-to-fine path with another crop, path and level swapped, or other blocks for the levels
    3, 2, 1, 0 (``blocks``), for the known mistakes."""
    path = crop(fusion[blocks[0]](levels[3]), levels[2].shape[-2:])
    for b, i in zip(blocks[1:], (2, 1, 0)):
        path = fusion[b](levels[i], path) if swap else fusion[b](path, levels[i])
    return path


CROP_MISTAKES = (   # (diagnosis, crop(path, (h, w)))
    ("you kept the bottom-right of the coarse path; DUSt3R keeps the top-left and drops the last rows and columns",
     lambda p, s: p[..., p.shape[-2] - s[0]:, p.shape[-1] - s[1]:]),
    ("you dropped the first row(s) of the coarse path; DUSt3R drops the last ones (lecture 04, section 3: which "
     "row has no counterpart in the level)", lambda p, s: p[..., p.shape[-2] - s[0]:, :s[1]]),
    ("you dropped the first column(s) of the coarse path; DUSt3R drops the last ones",
     lambda p, s: p[..., :s[0], p.shape[-1] - s[1]:]),
    ("you resized the coarse path to the level's size (interpolation) instead of cropping it: DUSt3R's block "
     "doubles, then the crop drops what has no counterpart — resizing moves every sample (lecture 04, 'Why not "
     "upsample straight to the right size?')", lambda p, s: up(p, True, size=s)),
    ("you resized the coarse path to the level's size (interpolation) instead of cropping it: DUSt3R's block "
     "doubles, then the crop drops what has no counterpart", lambda p, s: up(p, False, size=s)),
    ("you resized the coarse path to the level's size (nearest neighbour) instead of cropping it: on this "
     "pyramid it picks other rows than the top-left crop", lambda p, s: up(p, mode="nearest", size=s)),
)
SHAPES_RE = re.compile(r"path (\([\d, ]+\)) and the skip (\([\d, ]+\))")


class FusePyramid(Check):
    """``student(levels, fusion)``: coarse-to-fine fusion of 4 levels with the odd-grid crop.

    ``fusion`` holds stand-in blocks (``probe.StandInBlock``): the wiring is what is tested, on an
    even and an odd patch grid and on a pyramid whose coarsest level has a cell too many each way
    (there a nearest resize of the path differs from the top-left crop; on a real pyramid it does not).
    """

    name = "fuse_pyramid"
    forbidden = ("dptlearn.fusion",)
    B, D = 2, 4
    PYRAMIDS = ((4, 6, 0), (3, 5, 0), (4, 6, 1))   # (nh, nw, extra cells of the coarsest level)

    @staticmethod
    def label(nh, nw, extra):
        return f"a {nh}x{nw} grid" + (f" whose coarsest level has {extra} cell too many each way" if extra else "")

    def make_case(self, seed):
        blocks = standin_blocks(self.D, generator(self.name, seed, 0))
        fusion = probe.build_standin("fusion_blocks", blocks)
        plan, runs = [], []
        for k, (nh, nw, extra) in enumerate(self.PYRAMIDS):
            sizes = [(4 * nh, 4 * nw), (2 * nh, 2 * nw), (nh, nw),
                     (math.ceil(nh / 2) + extra, math.ceil(nw / 2) + extra)]
            g = generator(self.name, seed, 1 + k)
            levels = [torch.randn(self.B, self.D, *s, generator=g) for s in sizes]
            plan.append(call(levels, standin("fusion_blocks", blocks),
                             what=f"fuse_pyramid on {self.label(nh, nw, extra)}"))
            runs.append((nh, nw, extra, levels, ref_fusion.fuse_pyramid(levels, fusion)))
        return Case(plan, {"fusion": fusion, "runs": runs})

    def raised(self, r, nh, nw, extra, levels):
        """Name the mistake behind an exception a stand-in block raised (or report the learner's own)."""
        message, where = r.get("message", ""), self.label(nh, nw, extra)
        if "expects a skip input" in message:
            self.fail(f"on {where} you called a block that has a skip unit with the path alone: only fusion[3], the "
                      f"coarsest block, takes its level alone — the blocks are indexed like the levels, finest first")
        if "expects no skip input" in message:
            self.fail(f"on {where} you gave fusion[3] a skip input: the coarsest block has no skip unit and takes "
                      f"levels[3] alone")
        m = SHAPES_RE.search(message)
        if m:
            path, skip = (tuple(int(n) for n in re.findall(r"\d+", t)) for t in (m[1], m[2]))
            doubled = tuple(2 * n for n in levels[3].shape[-2:])
            if path[-2:] == doubled and skip[-2:] == tuple(levels[2].shape[-2:]):
                c = levels[3].shape[-2:]
                self.fail(f"missing crop on odd grids: on {where} the coarsest level has {c[0]}x{c[1]} cells, "
                          f"fusion[3] doubles that to {doubled[0]}x{doubled[1]}, larger than the {nh}x{nw} level "
                          f"it must meet next — the path needs cutting down to that level's size first")
            self.fail(f"on {where} a block got a path of size {path[-2:]} and a level of size {skip[-2:]}: run the "
                      f"blocks coarse to fine, so that each block's doubled output meets the next level at its size")
        self.fail(f"your code raised {r['raised']} on {where}: {message}")

    def verify(self, case, results):
        fusion = case.data["fusion"]
        for i, (nh, nw, extra, levels, want) in enumerate(case.data["runs"]):
            r = results[i]
            if r.get("raised") not in (None, "NotImplementedError"):
                self.raised(r, nh, nw, extra, levels)
            got = self.value(case, results, i)
            cands = [(msg, lambda crop=crop: wiring(levels, fusion, crop)) for msg, crop in CROP_MISTAKES]
            cands += [("path and level swapped: a block takes the path as x and its pyramid level as skip (only the "
                       "level goes through skip_unit)", lambda: wiring(levels, fusion, swap=True)),
                      ("blocks indexed coarsest-first: fusion[i] belongs with levels[i] (both lists run finest "
                       "first), so after fusion[3] come fusion[2], fusion[1], fusion[0]",
                       lambda: wiring(levels, fusion, blocks=(3, 0, 1, 2)))]
            self.compare(got, want, label=f"fused map for {self.label(nh, nw, extra)}", dims="(B, D, 8nh, 8nw)",
                         result=r, candidates=cands)
        return "even 4x6 and odd 3x5 grids and a pyramid with a surplus coarsest level; top-left crop after fusion[3]"
