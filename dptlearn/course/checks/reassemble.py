"""Checks of notebook 03: one reassemble branch, and the whole stage (branches + projections)."""
from __future__ import annotations

import math

import torch

from ... import reassemble as ref_reassemble
from .harness import Case, Check, build, call, generator, load, randomize_

FACTORS = ref_reassemble.REASSEMBLE_FACTORS


def resampler_hint(factor) -> str:
    """What the factor-``factor`` resampler must do on a 3-row grid, and where to look (no layer given)."""
    return {4: "a transposed conv whose stamps tile the output (3 rows -> 12)",
            2: "a transposed conv whose stamps tile the output (3 rows -> 6)",
            1: "no resampler at all (the 1x1 conv alone)",
            0.5: "a strided conv that rounds up (3 rows -> 2, 21 -> 11)"}[factor]


def branch_shape_hints(B, D, nh, nw, factor) -> dict:
    hints = {}
    for k in (4, 2, 1, 0.5, 8, 0.25):
        if k != factor:
            hints.setdefault((B, D, math.ceil(nh * k), math.ceil(nw * k)),
                             f"wrong resampling factor: this branch must resample x{factor} "
                             f"({resampler_hint(factor)}), yours resampled x{k} — recompute its output size "
                             f"with lecture 03's formulas")
    if factor == 0.5:
        hints[(B, D, nh // 2, nw // 2)] = ("the x1/2 branch rounds down (3 rows -> 1): it must round up on odd "
                                           "grids (3 -> 2, as DUSt3R's 512x336 gives 21 -> 11) — with DUSt3R's "
                                           "kernel 3, which padding centres the window? (lecture 03, section 3)")
    return hints


class ReassembleBranchCheck(Check):
    """``student(in_dim, out_dim, factor) -> nn.Module`` with ``[0]`` 1x1 conv and ``[1]`` the resampler."""

    name = "reassemble_branch"
    forbidden = ("dptlearn.reassemble",)
    B, CIN, COUT, NH, NW = 2, 6, 4, 3, 5

    def make_case(self, seed):
        x = torch.randn(self.B, self.CIN, self.NH, self.NW, generator=generator(self.name, seed, 0))
        plan, wants = [], []
        for i, factor in enumerate(FACTORS):
            ref = randomize_(ref_reassemble.ReassembleBranch(self.CIN, self.COUT, factor),
                             generator(self.name, seed, 1 + i))
            plan += [build(self.CIN, self.COUT, factor, slot=f"b{i}",
                           what=f"reassemble_branch({self.CIN}, {self.COUT}, {factor})"),
                     load(ref.state_dict(), slot=f"b{i}"),
                     call(x, fn=f"b{i}", what=f"the factor-{factor} branch's forward")]
            wants.append(ref(x))
        return Case(plan, {"wants": wants})

    def verify(self, case, results):
        for i, (factor, want) in enumerate(zip(FACTORS, case.data["wants"])):
            def hint(missing, unexpected, mismatched, factor=factor):
                if "0.weight" in [k for k, *_ in mismatched]:
                    return ("index 0 is the 1x1 conv in_dim -> out_dim; the resampler comes second, at index 1, "
                            "on out_dim channels")
                if factor != 1 and "1.weight" in missing:
                    return (f"no learned resampler at index 1: DPT resamples x{factor} with {resampler_hint(factor)}; "
                            f"F.interpolate / nn.Upsample have no weights to load")
                if factor == 1 and any(k.startswith("1.") for k in unexpected):
                    return "factor 1 has no resampler: the branch is just the 1x1 conv"
                if "1.weight" in [k for k, *_ in mismatched]:
                    why = (" — and with that kernel, stride and padding must round up on odd grids (3 rows -> 2)"
                           if factor == 0.5 else "")
                    return (f"the x{factor} resampler's weight has the wrong shape: check transposed or not, in -> "
                            f"out channels, and DUSt3R's kernel size (the card gives it){why}")
                return None
            self.weights_loaded(case, results, 3 * i, 3 * i + 1, hint=hint,
                                bias_note="DUSt3R's act_postprocess convs all have a bias (nn.Conv2d's default)")
            got = self.value(case, results, 3 * i + 2)
            self.compare(got, want, label=f"factor {factor} on a {self.NH}x{self.NW} grid", dims="(B, out_dim, h, w)",
                         result=results[3 * i + 2],
                         shape_hints=branch_shape_hints(self.B, self.COUT, self.NH, self.NW, factor))
        return "factors 4, 2, 1, 1/2 on an odd 3x5 grid, weights loaded as [0] and [1]"


class ReassembleCheck(Check):
    """``student_cls(dim_tokens, layer_dims, feature_dim)``: ``branches`` + ``project``; forward(grids) -> 4 maps."""

    name = "Reassemble"
    forbidden = ("dptlearn.reassemble",)
    DIMS, LAYER_DIMS, D, B, NH, NW = (8, 6, 6, 6), (3, 4, 5, 6), 7, 2, 3, 5

    def make_case(self, seed):
        ref = randomize_(ref_reassemble.Reassemble(self.DIMS, self.LAYER_DIMS, self.D), generator(self.name, seed, 0))
        grids = [torch.randn(self.B, c, self.NH, self.NW, generator=generator(self.name, seed, 1 + i))
                 for i, c in enumerate(self.DIMS)]
        plan = [build(self.DIMS, self.LAYER_DIMS, self.D, what=f"Reassemble({self.DIMS}, {self.LAYER_DIMS}, {self.D})"),
                load(ref.state_dict()), call(grids, fn="m", what="your forward(grids)")]
        return Case(plan, {"wants": ref(grids)})

    def verify(self, case, results):
        def hint(missing, unexpected, mismatched):
            keys = [k for k, *_ in mismatched]
            if any(k.startswith("branches.") for k in keys):
                return ("the branches resample by (4, 2, 1, 1/2) in this order: branch 0 (the encoder output) is "
                        "the finest, x4; branch 3 the coarsest, x1/2")
            if any(k.startswith("project.") for k in keys):
                return "project[i] takes branch i's width (layer_dims[i]) to feature_dim with a 3x3 window"
            return None
        self.weights_loaded(case, results, 0, 1, hint=hint,
                            no_bias_note="the 3x3 projections (DUSt3R's scratch.layer_rn) are built with bias=False")
        got = self.value(case, results, 2)
        if not isinstance(got, (list, tuple)) or len(got) != 4:
            self.fail(f"forward should return a list of 4 feature maps (fine to coarse), got {self.kind(got)}")
        B, D = self.B, self.D
        wants = case.data["wants"]
        sizes = [tuple(g.shape) if isinstance(g, torch.Tensor) else None for g in got]
        if sizes != [tuple(w.shape) for w in wants] and sorted(map(str, sizes)) == sorted(str(tuple(w.shape))
                                                                                          for w in wants):
            self.fail(f"the levels are all there but in the wrong order: got sizes "
                      f"{[s[2:] for s in sizes]}, expected {[tuple(w.shape[2:]) for w in wants]} — forward returns "
                      f"them finest first (level i = branch i, the x4 one first), as fusion indexes them")
        for i, (g, w, f) in enumerate(zip(got, case.data["wants"], FACTORS)):
            hints = branch_shape_hints(B, D, self.NH, self.NW, f)
            hints[(B, self.LAYER_DIMS[i]) + tuple(w.shape[2:])] = ("the level still has branch i's width: each "
                                                                   "level goes through project[i] after its branch")
            self.compare(g, w, label=f"level {i} (factor {f})", dims="(B, feature_dim, h_i, w_i)", result=results[2],
                         shape_hints=hints)
        return "4 branches x4, x2, x1, x1/2 + 3x3 projections without bias on an odd 3x5 grid"
