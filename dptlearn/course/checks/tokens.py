"""Checks of notebook 01: hook indices, hooked layers, readout (ignore / add / project)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ... import tokens as ref_tokens
from .harness import Case, Check, build, call, generator, load, randomize_, same_tensor, shape


class HookIndices(Check):
    """``student(dec_depth) -> [0, 2L//4, 3L//4, L]``, ValueError for dec_depth <= 9."""

    name = "hook_indices"
    forbidden = ("dptlearn.tokens.dust3r_hook_indices",)

    def make_case(self, seed):
        extra = int(torch.randint(15, 64, (1,), generator=generator(self.name, seed, 0)))
        depths = [12, 24, 10, 13, 14, extra]
        plan = [call(L, what=f"hook_indices({L})") for L in depths]
        plan += [call(L, what=f"dec_depth={L}") for L in (9, 8)]
        return Case(plan, {"depths": depths})

    def verify(self, case, results):
        depths = case.data["depths"]
        for i, L in enumerate(depths):
            got = self.value(case, results, i)
            if not isinstance(got, (list, tuple)):
                self.fail(f"hook_indices({L}) should return a list of 4 ints, got {self.kind(got)}")
            if any(isinstance(h, float) for h in got):
                self.fail(f"hook_indices({L}) returned floats {list(got)}: use integer division // so the hooks "
                          f"can index the token list")
            got = list(got)
            want = ref_tokens.dust3r_hook_indices(L)
            if got == want:
                continue
            known = [
                ([0, 4, 6, 8], "[0, 4, 6, 8] are the hooks of CroCo's default 8-block decoder (which DUSt3R "
                               "rejects): the hooks must follow dec_depth"),
                ([2, 5, 8, 11], "[2, 5, 8, 11] are the original DPT's hooks on a 12-block ViT-B; DUSt3R reads "
                                "the encoder output and three points of its decoder, from dec_depth (lecture 01, "
                                "section 4)"),
                ([0, 2 * L // 4, 3 * L // 4, L - 1], "off by one: the head gets [encoder_out, dec_1, ..., dec_L] "
                                                    "(L + 1 entries), so the last decoder block is index L, not L - 1"),
                ([0, 2 * L // 4 - 1, 3 * L // 4 - 1, L - 1], "off by one: index 0 is the encoder output, so "
                                                            "decoder block k sits at index k — do not subtract 1"),
                ([L // 4, 2 * L // 4, 3 * L // 4, L], "the first hook is index 0 (the encoder's output), not L//4"),
                ([0, 2 * (L // 4), 3 * (L // 4), L], "rounding: you floor-divided before multiplying, which "
                                                    "lands early when L is not a multiple of 4"),
            ]
            diag = next((msg for k, msg in known if got == k), None)
            self.fail(f"dec_depth={L}: expected {want}, got {got}" + (f" — {diag}" if diag else ""))
        for i in range(len(depths), len(case.plan)):
            self.expect_value_error(case, results, i, "DUSt3R's DPT head requires dec_depth > 9")
        return f"dec_depth {', '.join(map(str, sorted(depths)))}; ValueError for 8 and 9"


class SelectHookedTokens(Check):
    """``student(tokens, hooks) -> [tokens[h] for h in hooks]``; ValueError when the list is too short."""

    name = "select_hooked_tokens"
    forbidden = ("dptlearn.tokens.select_hooked_tokens",)
    L, HOOKS = 10, [0, 5, 7, 10]

    def make_case(self, seed):
        g = generator(self.name, seed, 0)
        tokens = [torch.randn(2, 6, 8 if i == 0 else 6, generator=g) for i in range(self.L + 1)]
        plan = [call(kind(tokens), list(self.HOOKS), what=f"select_hooked_tokens(<{kind.__name__} of "
                                                          f"{self.L + 1} tensors>, {self.HOOKS})")
                for kind in (list, tuple)]
        plan.append(call(tokens[:9], list(self.HOOKS), what=f"a 9-layer list with hooks {self.HOOKS}"))
        return Case(plan, {"tokens": tokens})

    def verify(self, case, results):
        tokens, hooks = case.data["tokens"], self.HOOKS
        for i in range(2):
            got = self.value(case, results, i)
            if isinstance(got, torch.Tensor):
                self.fail(f"return a list of 4 tensors, not one tensor {shape(got)}: the encoder output (C=8) is "
                          f"wider than the decoder's (C=6), so the hooked layers cannot be stacked")
            if not isinstance(got, (list, tuple)) or len(got) != len(hooks):
                self.fail(f"expected a list of {len(hooks)} tensors (one per hook), got {self.kind(got)}"
                          + (f" of length {len(got)}" if isinstance(got, (list, tuple)) else ""))
            for j, (h, t) in enumerate(zip(hooks, got)):
                t = self.as_tensor(t, f"item {j}")
                if same_tensor(t, tokens[h]):
                    continue
                same = [k for k, s in enumerate(tokens) if same_tensor(t, s)]
                if same and same[0] == h - 1:
                    self.fail(f"item {j} is tokens[{h - 1}], expected tokens[{h}] — off by one: index 0 of the "
                              f"list is the encoder output, so hook h is simply tokens[h]")
                if same:
                    self.fail(f"item {j} is tokens[{same[0]}], expected tokens[{h}] (hooks {hooks}, in order)")
                self.fail(f"item {j} should be tokens[{h}] unchanged, (B, N, C) = {shape(tokens[h])}; got a "
                          f"tensor of shape {shape(t)} that equals none of the layers")
        self.expect_value_error(case, results, 2, f"saying the hooks need {max(hooks) + 1} layers",
                                returned=self.kind)
        return f"hooks {hooks} over {self.L + 1} layers, list or tuple input; ValueError when too short"


class ApplyReadout(Check):
    """``student(x, mode, n_prefix)`` for modes 'ignore' and 'add': (B, n_prefix + N, C) -> (B, N, C)."""

    name = "apply_readout"
    forbidden = ("dptlearn.tokens.Readout",)
    B, N, C = 2, 6, 5

    def make_case(self, seed):
        plan, data = [], []
        for n_prefix in (1, 2):
            x = torch.randn(self.B, n_prefix + self.N, self.C, generator=generator(self.name, seed, n_prefix))
            for mode in ("ignore", "add"):
                plan.append(call(x, mode, n_prefix, what=f"apply_readout(x, {mode!r}, n_prefix={n_prefix})"))
                data.append((x, mode, n_prefix, ref_tokens.Readout(mode, self.C, n_prefix)(x)))
        return Case(plan, {"runs": data})

    def verify(self, case, results):
        B, N, C = self.B, self.N, self.C
        for i, (x, mode, n_prefix, want) in enumerate(case.data["runs"]):
            got = self.value(case, results, i)
            self.unchanged(results, i, "you modified the input x in place; return a new tensor")
            pre, pat = x[:, :n_prefix], x[:, n_prefix:]
            self.compare(got, want, label=f"mode {mode!r}, n_prefix={n_prefix}", dims="(B, N, C)", result=results[i],
                         shape_hints={(B, N + n_prefix, C): "the prefix tokens are still there: the output has only "
                                                            "the N patch tokens",
                                      (B, N - n_prefix, C): "you dropped too many tokens"},
                         candidates=[
                             ("you dropped the last n_prefix tokens; the prefix (CLS/register) tokens come first",
                              lambda: x[:, :-n_prefix] + (pre.mean(1, keepdim=True) if mode == "add" else 0)),
                             ("you dropped the last n_prefix tokens; the prefix (CLS/register) tokens come first",
                              lambda: x[:, :-n_prefix]),
                             ("mode 'add' must add the readout (mean of the prefix tokens) to every patch token; "
                              "you only dropped them", lambda: pat),
                             ("you summed the prefix tokens; the readout is their mean",
                              lambda: pat + pre.sum(1, keepdim=True)),
                             ("you used only the first prefix token; average all n_prefix of them (e.g. CLS + "
                              "register tokens)", lambda: pat + pre[:, :1]),
                             ("mode 'ignore' drops the prefix tokens and adds nothing",
                              lambda: pat + pre.mean(1, keepdim=True)),
                         ])
        return "modes 'ignore' and 'add' with 1 and 2 prefix tokens"


def _readout_project(x, lin_w, lin_b, order="patches_first", act="gelu", readout_index=0):
    pat = x[:, 1:]
    ro = x[:, readout_index:readout_index + 1].expand_as(pat)
    y = F.linear(torch.cat([pat, ro] if order == "patches_first" else [ro, pat], dim=-1), lin_w, lin_b)
    return {"gelu": F.gelu, "relu": F.relu, "none": lambda t: t}[act](y)


class ReadoutProjectCheck(Check):
    """``student_cls(dim)`` with ``project = nn.Sequential(nn.Linear(2*dim, dim), nn.GELU())``."""

    name = "ReadoutProject"
    forbidden = ("dptlearn.tokens.Readout",)
    B, N, C = 2, 6, 5

    def make_case(self, seed):
        ref = randomize_(ref_tokens.Readout("project", self.C, 1), generator(self.name, seed, 0))
        x = torch.randn(self.B, 1 + self.N, self.C, generator=generator(self.name, seed, 1))
        plan = [build(self.C, what=f"ReadoutProject({self.C})"), load(ref.state_dict()),
                call(x, fn="m", what="your forward")]
        return Case(plan, {"x": x, "want": ref(x), "w": ref.project[0].weight, "b": ref.project[0].bias})

    def verify(self, case, results):
        B, N, C = self.B, self.N, self.C
        self.weights_loaded(case, results, 0, 1, bias_note="nn.Linear has a bias by default",
                            hint=lambda m, u, s: "the check loads the Linear's weights as project.0.weight and "
                                                 "project.0.bias: an attribute `project` whose first layer maps "
                                                 "2*dim -> dim")
        got = self.value(case, results, 2)
        x, w, b = case.data["x"], case.data["w"], case.data["b"]
        self.compare(got, case.data["want"], label="output", dims="(B, N, C)", result=results[2],
                     shape_hints={(B, N + 1, C): "the readout token is still there: the output has only the N "
                                                 "patch tokens",
                                  (B, N, 2 * C): "apply the Linear(2C -> C) projection after concatenating"},
                     candidates=[
                         ("concatenation order: [patch tokens, readout token] along the channels (patch features "
                          "first)", lambda: _readout_project(x, w, b, order="readout_first")),
                         ("missing GELU after the Linear layer", lambda: _readout_project(x, w, b, act="none")),
                         ("ReLU where DPT uses GELU", lambda: _readout_project(x, w, b, act="relu")),
                         ("you used the last token as the readout; the readout (CLS) token is the first one",
                          lambda: _readout_project(x, w, b, readout_index=N)),
                     ])
        return "Linear(2C -> C) + GELU on [patches, readout], weights loaded into project.0"
