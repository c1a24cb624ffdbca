"""Checks of notebook 02: the patch grid, tokens -> grid and back."""
from __future__ import annotations

import torch
from einops import rearrange

from ... import grid as ref_grid
from .harness import Case, Check, call, generator, same_tensor


class PatchGrid(Check):
    """``student((H, W), patch_size) -> (nh, nw)``; ValueError when H or W is not a multiple."""

    name = "patch_grid"
    forbidden = ("dptlearn.grid.patch_grid", "dptlearn.grid.check_image_size")

    def make_case(self, seed):
        nh, nw = (int(v) for v in torch.randint(5, 40, (2,), generator=generator(self.name, seed, 0)))
        sizes = [((336, 512), 16), ((384, 512), 16), ((224, 224), 16), ((518, 392), 14), ((14 * nh, 14 * nw), 14)]
        bad = [((500, 512), 16), ((384, 500), 16)]
        plan = [call(size, p, what=f"patch_grid({size}, {p})") for size, p in sizes + bad]
        return Case(plan, {"sizes": sizes, "bad": bad})

    def verify(self, case, results):
        sizes = case.data["sizes"]
        for i, (size, p) in enumerate(sizes):
            got = self.value(case, results, i)
            want = ref_grid.patch_grid(size, p)
            if not isinstance(got, (tuple, list)) or len(got) != 2:
                self.fail(f"patch_grid({size}, {p}) should return a pair (nh, nw), got {got!r}")
            if any(isinstance(v, float) for v in got):
                self.fail(f"patch_grid({size}, {p}) returned {tuple(got)}: use integer division // (a grid has an "
                          f"integer number of rows and columns)")
            got = tuple(got)
            if got == want:
                continue
            if got == want[::-1]:
                self.fail(f"patch_grid({size}, {p}): expected (nh, nw) = {want}, got {got} — nh and nw swapped: "
                          f"image_size is (H, W), rows first, and nh counts rows")
            self.fail(f"patch_grid({size}, {p}): expected (nh, nw) = {want}, got {got}")
        for i, (size, p) in enumerate(case.data["bad"], start=len(sizes)):
            self.expect_value_error(case, results, i, f"{size[0] if size[0] % p else size[1]} is not a multiple "
                                                      f"of {p}",
                                    tail=": rounding down silently would give an output smaller than the image")
        return (f"{', '.join(str(s) for s, _ in sizes[:3])} with p=16, {sizes[3][0]} and {sizes[4][0]} with p=14; "
                f"ValueError for non-multiples")


class TokensToGrid(Check):
    """``student(tokens, nh, nw)``: (B, N, C) -> (B, C, nh, nw), row-major."""

    name = "tokens_to_grid"
    forbidden = ("dptlearn.grid.tokens_to_grid", "dptlearn.dpt.TokensToGrid")
    B, C, GRIDS = 2, 4, ((3, 5), (4, 2), (1, 6))

    def make_case(self, seed):
        runs = [(torch.randn(self.B, nh * nw, self.C, generator=generator(self.name, seed, k)), nh, nw)
                for k, (nh, nw) in enumerate(self.GRIDS)]
        plan = [call(t, nh, nw, what=f"tokens_to_grid(tokens {(self.B, nh * nw, self.C)}, nh={nh}, nw={nw})")
                for t, nh, nw in runs]
        return Case(plan, {"runs": runs})

    def verify(self, case, results):
        B, C = self.B, self.C
        for i, (t, nh, nw) in enumerate(case.data["runs"]):
            got = self.value(case, results, i)
            self.compare(got, ref_grid.tokens_to_grid(t, nh, nw), label=f"grid for nh={nh}, nw={nw}",
                         dims="(B, C, nh, nw)", result=results[i],
                         shape_hints={(B, C, nw, nh): "nh and nw swapped: the grid is (B, C, nh, nw) = rows, then "
                                                      "columns",
                                      (B, nh, nw, C): "channels last: move C to dim 1 — (B, C, nh, nw)",
                                      (B, nw, nh, C): "channels last and nh/nw swapped: (B, C, nh, nw)"},
                         candidates=[
                             ("reshape instead of moving the channel axis: a reshape of (B, N, C) to (B, C, nh, nw) "
                              "keeps the memory order and mixes channels with positions (lecture 02 shows it on a "
                              "readable tensor)", lambda: t.reshape(B, C, nh, nw)),
                             ("rows and columns swapped in the split of N: tokens are row-major (the row index "
                              "varies slowest), and in an einops group the slowest axis comes first",
                              lambda: rearrange(t, "b (nw nh) c -> b c nh nw", nh=nh, nw=nw)),
                         ])
        return "3x5, 4x2 and 1x6 grids, B=2, C=4; row-major order"


class GridToTokens(Check):
    """``student(grid)``: (B, C, nh, nw) -> (B, nh * nw, C), the inverse of tokens_to_grid.

    This direction is tested on its own: the round trip starts from a grid folded by the reference,
    never by the learner's ``tokens_to_grid`` (whose own check tests the other direction), so a
    wrong fold can neither hide nor cause a failure here.
    """

    name = "grid_to_tokens"
    forbidden = ("dptlearn.grid.grid_to_tokens",)
    B, C, GRIDS = 2, 4, ((3, 5), (4, 2))

    def make_case(self, seed):
        grids = [torch.randn(self.B, self.C, nh, nw, generator=generator(self.name, seed, k))
                 for k, (nh, nw) in enumerate(self.GRIDS)]
        t = torch.randn(self.B, 15, self.C, generator=generator(self.name, seed, 9))
        plan = [call(g, what=f"grid_to_tokens(grid {tuple(g.shape)})") for g in grids]
        plan.append(call(rearrange(t, "b (nh nw) c -> b c nh nw", nh=3, nw=5),
                         what="grid_to_tokens(t folded to a 3x5 grid by the reference)"))
        return Case(plan, {"grids": grids, "t": t})

    def verify(self, case, results):
        B, C = self.B, self.C
        for i, g in enumerate(case.data["grids"]):
            got = self.value(case, results, i)
            nh, nw = g.shape[-2:]
            N = nh * nw
            self.compare(got, ref_grid.grid_to_tokens(g), label=f"tokens for a {nh}x{nw} grid", dims="(B, N, C)",
                         result=results[i],
                         shape_hints={(B, C, N): "got (B, C, N): the channel axis must come last — (B, N, C)",
                                      (B, C, nh, nw): "still a grid: flatten the two spatial axes into N"},
                         candidates=[
                             ("reshape instead of moving the channel axis: a reshape of (B, C, nh, nw) to "
                              "(B, N, C) keeps the memory order and mixes channels with positions",
                              lambda: g.reshape(B, N, C)),
                             ("rows and columns swapped when merging: token k must come from row k // nw, column "
                              "k % nw (row-major)", lambda: rearrange(g, "b c nh nw -> b (nw nh) c")),
                         ])
        back = self.value(case, results, len(case.data["grids"]))
        if not same_tensor(back, case.data["t"]):
            self.fail("grid_to_tokens of t folded row-major to a 3x5 grid (by the reference, not by your "
                      "tokens_to_grid) should give t back exactly")
        return ("3x5 and 4x2 grids, B=2, C=4, this direction on its own; t back exactly from its reference fold "
                "(your tokens_to_grid has its own check)")
