"""Checks of notebook 06, the capstone: DUSt3R's head built from the learner's own parts.

The learner hands in a dict, ``{"parts": load_parts(), "head": MyDUSt3RHead}`` (plus
``"convert": convert_dust3r_state_dict`` for the second exercise), where ``load_parts``
(``dptlearn.course.answers``) reads the answers of notebooks 01-05 from the learner's folder.
A capstone plan is every part's own check plan (``Capstone.part_checks``, run on
``learner["parts"][name]``; see ``scoped``) followed by steps on the learner's head: build it
at a small DUSt3R configuration, give it seeded weights, run it on an odd and an even patch
grid. The plan holds only tensors, numbers and the learner's objects' names: the probe needs
nothing of dptlearn's head. The judge goes through the parts in order and stops at the first
that fails, naming it and its notebook; then it compares the head with dptlearn's DUSt3R head
carrying the same weights.
"""
from __future__ import annotations

import itertools
import re

import torch
from einops import rearrange

from ... import dust3r as ref_dust3r
from ... import fusion as ref_fusion
from ... import postprocess as ref_post
from ..answers import PART_NOTEBOOK
from .harness import INF, Case, Check, CheckFailed, build, call, generator, load, randomize_, same_tensor

ENC, DEC, DEC_DEPTH, FEATURE_DIM, LAST_DIM, LAYER_DIMS = 8, 6, 10, 8, 6, (3, 4, 5, 6)
CONFIG = (ENC, DEC, DEC_DEPTH, FEATURE_DIM, LAST_DIM, LAYER_DIMS)   # MyDUSt3RHead's arguments, in order
SIZES = ((48, 80), (64, 96))      # 3x5 patches (odd: the crop acts) and 4x6
B = 2


def small_head(g: torch.Generator) -> "ref_dust3r.DUSt3RHead":
    """dptlearn's DUSt3R head at the capstone's configuration, seeded weights (the reference order: the
    only one dptlearn's stages compute)."""
    head = ref_dust3r.dust3r_dpt_head(enc_embed_dim=ENC, dec_embed_dim=DEC, dec_depth=DEC_DEPTH,
                                      feature_dim=FEATURE_DIM, last_dim=LAST_DIM, layer_dims=LAYER_DIMS, device="cpu")
    return randomize_(head, g)


def head_state(head) -> dict:
    """The parameters a learner's head gets: dptlearn's ``DPTHead`` keys (``reassemble.…``, ``fusion.…``, …)."""
    return {k.removeprefix("dpt."): v for k, v in head.state_dict().items()}


def seeded_tokens(g: torch.Generator, size) -> list:
    n = (size[0] // 16) * (size[1] // 16)
    return [torch.randn(B, n, ENC if i == 0 else DEC, generator=g) for i in range(DEC_DEPTH + 1)]


def assembled(head, tokens, size, hooks=None, depth_mode=None, conf_mode=None) -> dict:
    """The head's forward pass written out from dptlearn's stages, with one known mistake switched on."""
    dpt = head.dpt
    nh, nw = size[0] // dpt.patch_size, size[1] // dpt.patch_size
    grids = [rearrange(tokens[h], "b (nh nw) c -> b c nh nw", nh=nh, nw=nw) for h in hooks or dpt.hooks]
    raw = dpt.head(ref_fusion.fuse_pyramid(dpt.reassemble(grids), dpt.fusion))   # (B, 4, H, W)
    return ref_post.postprocess(raw, depth_mode or head.depth_mode, conf_mode or head.conf_mode)


def scoped(plan: list, name: str) -> list:
    """Part ``name``'s own check plan, run on ``learner["parts"][name]``; its slots renamed ``name/slot``."""
    def rename(x):
        if isinstance(x, dict) and "$slot" in x:
            return {"$slot": f"{name}/{x['$slot']}"}
        if isinstance(x, dict):
            return {k: rename(v) for k, v in x.items()}
        if type(x) in (list, tuple):
            return type(x)(rename(v) for v in x)
        return x

    steps = []
    for step in plan:
        step = {k: rename(v) if k in ("args", "kwargs", "state") else v for k, v in step.items()}
        for key in ("slot", "fn", "keep"):
            if step.get(key) is not None:
                step[key] = f"{name}/{step[key]}"
        steps.append({**step, "of": ["parts", name]})
    return steps


class Capstone(Check):
    """The parts first (each judged by its own check), then the learner's head; see the module docstring."""

    forbidden = ("dptlearn",)       # the whole head: every part of it is the learner's by now
    notebook_of = PART_NOTEBOOK     # part -> the notebook it comes from, for messages

    def __init__(self, part_checks: dict[str, Check]):
        """``part_checks``: each part's own check by name, in the order of PARTS (the registry's instances)."""
        self.part_checks = part_checks

    part_names: tuple[str, ...] = tuple(PART_NOTEBOOK)     # the parts judged first, in this order

    def part_steps(self, name: str, sub: Case) -> list:
        """The plan steps of part ``name``'s own case, scoped to that part."""
        return scoped(sub.plan, name)

    def part_plans(self, seed: int) -> tuple[list, list]:
        plan, parts = [], []
        for name in self.part_names:
            sub = self.part_checks[name].case(seed)
            parts.append((name, sub, len(plan), len(plan) + len(sub.plan)))
            plan += self.part_steps(name, sub)
        return plan, parts

    def _base(self, seed: int) -> tuple[list, list, dict]:
        """What both capstones share: the parts' plans, dptlearn's head with seeded weights (``data['ref']``),
        and the forward steps on both grids with their expected outputs."""
        plan, parts = self.part_plans(seed)
        ref = small_head(generator(self.name, seed, 0))
        steps, tokens = self.head_steps(generator(self.name, seed, 1))
        return plan, steps, {"parts": parts, "ref": ref, "tokens": tokens,
                             "want": [ref(t, size) for t, size in zip(tokens, SIZES)]}

    def _no_reference(self, results: list) -> None:
        """Done in ``judge_parts``, part by part, so that a failure names the part."""

    def judge_parts(self, case: Case, results: list) -> int:
        """Fail at the first part that fails its own check; return the index of the head's first step."""
        end = 0
        for name, sub, lo, end in case.data["parts"]:
            segment = results[lo:end]
            missing = next((r for r in segment if r.get("raised") == "MissingAnswers"), None)
            if missing is not None:
                self.fail(str(missing.get("message", "")))
            try:
                self.part_checks[name].judge(sub, segment)
            except CheckFailed as e:
                where = f"your {name} from {self.notebook_of[name]}.ipynb"
                why = str(e).removeprefix(f"{name}: ")
                if why.startswith("not implemented yet"):
                    self.fail(f"{where} is not written yet (it raises NotImplementedError): write it there, save "
                              f"it, and run this notebook again from the top", *e.flags)
                self.fail(f"{where} is wrong: {why} — fix it there, save it, and run this notebook again from the "
                          f"top", *e.flags)
        Check._no_reference(self, results[end:])
        return end

    def head_steps(self, g: torch.Generator) -> tuple[list, list]:
        """Forward steps on the odd and the even grid, and their seeded tokens."""
        tokens = [seeded_tokens(g, size) for size in SIZES]
        steps = [call(t, size, fn="head", what=f"your head(tokens, {size})") for t, size in zip(tokens, SIZES)]
        return steps, tokens

    def build_head(self) -> dict:
        return {**build(*CONFIG, what=f"MyDUSt3RHead{CONFIG}", slot="head"), "of": ["head"]}

    def forward_raised(self, what: str, r: dict, hooks: list) -> None:
        """Name the hooks, widths or fusion order behind an exception of the learner's forward pass."""
        message, L = str(r.get("message", "")), DEC_DEPTH
        said = f"{what} raised {r['raised']}: {message}"
        asked = re.search(r"\[(\d+), (\d+), (\d+), (\d+)\]", message)
        if "index out of range" in message or (asked and [int(n) for n in asked.groups()] != hooks):
            self.fail(f"wrong hooks: {said} — the head gets dec_depth + 1 = {L + 1} token tensors, and DUSt3R's "
                      f"hooks at dec_depth = {L} are {hooks} (not ViT-B's [2, 5, 8, 11]): take them from your "
                      f"hook_indices(dec_depth)")
        if re.search(r"expected input\S* to have \d+ channels, but got \d+ channels", message):
            self.fail(f"wrong hooks or widths: {said} — a reassemble branch got a layer of another width: "
                      f"hooked layer 0 is the encoder's output (enc_embed_dim wide), the other hooks {hooks[1:]} are "
                      f"decoder layers (dec_embed_dim), in this order")
        if "'NoneType' object is not callable" in message:
            self.fail(FUSION_ORDER.format(what=f"{said}: a block without a skip unit got a skip input"))
        if "The size of tensor a" in message or "cannot crop" in message or "same shape" in message:
            self.fail(FUSION_ORDER.format(what=f"{said}: a block met a level of another size"))

    def outputs(self, case: Case, results: list, start: int, diagnose: bool) -> None:
        """The head's outputs on both grids against dptlearn's head (``case.data['want']``)."""
        ref, tokens = case.data["ref"], case.data["tokens"]
        L = DEC_DEPTH
        hooks = list(ref.dpt.hooks)
        for j, size in enumerate(SIZES):
            r, (H, W) = results[start + j], size
            if "raised" in r:
                self.forward_raised(case.plan[start + j]["what"], r, hooks)
            got = self.mapping(self.value(case, results, start + j), {"pts3d", "conf"},
                               "your head should return {'pts3d': (B, H, W, 3), 'conf': (B, H, W)}")
            want = case.data["want"][j]
            grid = f"{H // 16}x{W // 16} patch grid"

            def v(key, **mistake):
                return lambda: assembled(ref, tokens[j], size, **mistake)[key]
            pts_candidates = [
                (f"wrong hooks: these are the outputs of hooks [0, 2L//4, 3L//4, L - 1]: the token list is "
                 f"[encoder_out, dec_1, ..., dec_L], so the last decoder block is index L = {L}",
                 v("pts3d", hooks=[0, 2 * L // 4, 3 * L // 4, L - 1])),
                ("wrong hooks: these are the outputs of the first four layers: the head reads the hooked layers, "
                 "from your hook_indices(dec_depth)", v("pts3d", hooks=[0, 1, 2, 3])),
            ] + [(f"wrong hooks: your head reads layers {list(h)}; DUSt3R's head reads {hooks} at dec_depth = {L} "
                  f"(your hook_indices(dec_depth) gives them: take the hooks from it rather than writing them out)",
                  v("pts3d", hooks=list(h))) for h in other_hooks(L, hooks)] + [
                ("the depth mode is not DUSt3R's ('exp', -inf, inf): you post-processed with 'linear'",
                 v("pts3d", depth_mode=("linear", -INF, INF))),
                ("the depth mode is not DUSt3R's ('exp', -inf, inf): you post-processed with 'square'",
                 v("pts3d", depth_mode=("square", -INF, INF))),
            ] if diagnose else []
            self.compare(got["pts3d"], want["pts3d"], label=f"pts3d on the {grid}", dims="(B, H, W, 3)",
                         result=r, candidates=pts_candidates,
                         shape_hints={(B, W, H, 3): "image_size is (H, W): nh = H // 16 rows, nw = W // 16 columns"})
            conf_candidates = [
                (f"the confidence mode is not DUSt3R's ('exp', 1, inf): DUSt3R's confidence is at least 1, "
                 f"yours at least {vmin}", v("conf", conf_mode=("exp", vmin, INF))) for vmin in (0, 2)
            ] if diagnose else []
            self.compare(got["conf"], want["conf"], label=f"conf on the {grid}", dims="(B, H, W)", result=r,
                         candidates=conf_candidates)


def other_hooks(L: int, hooks: list) -> list[tuple]:
    """Every other increasing choice of 4 hooks that starts at the encoder's output (index 0): the only ones
    a head with DUSt3R's widths can run (hook 0 is enc_embed_dim wide, the decoder layers are not)."""
    return [(0, *h) for h in itertools.combinations(range(1, L + 1), 3) if [0, *h] != hooks]


FUSION_ORDER = ("wrong fusion order: {what} — the blocks run coarse to fine: fusion[3] (the coarsest, DUSt3R's "
                "refinenet4, without a skip unit) first on levels[3] alone, then fusion[2], fusion[1], fusion[0], "
                "each with its own level; both lists are indexed finest first (your fuse_pyramid does this)")


def width_hint(mismatched: list) -> str | None:
    """Name the configuration width behind a parameter of the wrong shape."""
    src = {"reassemble.branches": "layer_dims[i]", "reassemble.project": "feature_dim", "fusion": "feature_dim",
           "head.reduce": "feature_dim // 2", "head.refine": "last_dim", "head.predict": "4 (x, y, z, conf)"}
    for k, want, have in mismatched:
        if re.fullmatch(r"reassemble\.branches\.\d\.0\.weight", k) and want[1] != have[1]:
            i = int(k.split(".")[2])
            layer = "the encoder's output, enc_embed_dim" if i == 0 else "a decoder layer, dec_embed_dim"
            return (f"wrong widths: branch {i} reads {have[1]} channels, but hooked layer {i} is {layer} = "
                    f"{want[1]} wide (the first hooked layer is the encoder's output, enc_embed_dim wide; the other "
                    f"three are decoder layers, dec_embed_dim wide)")
        for prefix, name in src.items():
            if k.startswith(prefix + ".") and want != have:
                return (f"wrong widths: {k} has shape {have}, expected {want} — its output width is {name} = "
                        f"{want[0]} (MyDUSt3RHead{CONFIG} takes enc_embed_dim, dec_embed_dim, dec_depth, "
                        f"feature_dim, last_dim, layer_dims)")
    return None


def state_hint(missing: list, unexpected: list, mismatched: list) -> str | None:
    """What a mismatch of the head's parameter names or shapes most likely means."""
    if (any(k.startswith("fusion.3.skip_unit.") for k in unexpected)
            and any(k.startswith("fusion.0.skip_unit.") for k in missing)):
        return FUSION_ORDER.format(what="your fusion list has the block without a skip unit first, as fusion[0]")
    if any(k.startswith("fusion.3.skip_unit.") for k in unexpected):
        return ("fusion[3] gets one input, so it has no skip unit (DUSt3R builds refinenet4.resConfUnit1 but never "
                "runs it): build the coarsest block without one")
    have = {k.split(".")[0] for k in unexpected}
    gone = [top for top in ("reassemble", "fusion", "head") if any(k.startswith(top + ".") for k in missing)
            and top not in have]
    if gone:
        return (f"your head has no parameters under {gone[0]!r}: keep the attribute names reassemble, fusion and head "
                f"(their keys are what a DUSt3R checkpoint converts to)")
    for k, _, _ in mismatched:
        if k.startswith("head.predict."):
            return "the head predicts 4 channels: x, y, z and the confidence"
    return width_hint(mismatched)


class MyDUSt3RHeadCheck(Capstone):
    """``{"parts": ..., "head": MyDUSt3RHead}``: the parts pass their checks, and the head built from them,
    loaded with seeded weights under dptlearn's names, gives DUSt3R's outputs."""

    name = "MyDUSt3RHead"

    def make_case(self, seed):
        plan, steps, data = self._base(seed)
        plan += [self.build_head(), load(head_state(data["ref"]), slot="head")] + steps
        return Case(plan, data)

    def verify(self, case, results):
        i = self.judge_parts(case, results)
        self.weights_loaded(case, results, i, i + 1, hint=state_hint)
        self.outputs(case, results, i + 2, diagnose=True)
        hooks = list(case.data["ref"].dpt.hooks)
        return (f"your {len(PART_NOTEBOOK)} parts from 01-05 pass their checks; your head (dec_depth {DEC_DEPTH}, "
                f"hooks {hooks}) gives DUSt3R's pts3d and conf on a 3x5 and a 4x6 patch grid")


ALIAS_RE = re.compile(r"dpt\.scratch\.layer\d_rn\.weight")


def which_source(t: torch.Tensor, sources: dict) -> list[str]:
    return [k for k, s in sources.items() if same_tensor(t, s)]


def mapping_hint(theirs: str, expected_theirs: str) -> str:
    rn = re.compile(r"refinenet(\d)\.(resConfUnit\d|out_conv)")
    a, b = rn.search(theirs), rn.search(expected_theirs)
    if a and b and a.group(1) != b.group(1):
        return ("refinenet{k} is fusion.{k-1}: refinenet1 is the finest block (fusion.0), refinenet4 the "
                "coarsest (fusion.3)")
    if a and b and a.group(2) != b.group(2):
        return ("resConfUnit1 is the skip unit (it refines the pyramid level before the add), resConfUnit2 the "
                "unit after the add")
    if theirs.startswith("dpt.head.") and expected_theirs.startswith("dpt.head."):
        return "head.0 / head.2 / head.4 are reduce / refine / predict (head.1, head.3: upsample and ReLU, no weights)"
    if "act_postprocess" in theirs or "layer_rn" in theirs:
        return ("act_postprocess.{i}.{j} -> reassemble.branches.{i}.{j} and scratch.layer_rn.{i} -> "
                "reassemble.project.{i}, same i")
    return ""


def dust3r_layout(ref, g: torch.Generator) -> dict:
    """``ref``'s weights under DUSt3R's keys, aliases included; the never-used unit gets seeded values too."""
    sd = ref_dust3r.dust3r_state_dict(ref)
    for k in sd:
        if "refinenet4.resConfUnit1" in k:
            sd[k] = torch.randn(sd[k].shape, generator=g) * 0.1
    return dict(sd)


class ConvertDust3rStateDict(Capstone):
    """``{"parts": ..., "head": MyDUSt3RHead, "convert": convert_dust3r_state_dict}``: the converted
    DUSt3R-layout weights load (strict) into the learner's head, which then gives DUSt3R's outputs."""

    name = "convert_dust3r_state_dict"

    def make_case(self, seed):
        plan, steps, data = self._base(seed)
        ref = data["ref"]
        sd = dust3r_layout(ref, generator(self.name, seed, 2))
        plan += [self.build_head(),
                 {**call(sd, what="convert_dust3r_state_dict(sd)"), "of": ["convert"], "keep": "converted"},
                 {"op": "load", "slot": "head", "state": {"$slot": "converted"},
                  "what": "loading your converted dict into your head (strict)"}] + steps
        mapping = {ours: "dpt." + theirs for theirs, ours in ref_dust3r._key_map(ref.dpt).items()}
        return Case(plan, {**data, "sd": sd, "ours": head_state(ref), "mapping": mapping})

    def verify(self, case, results):
        i = self.judge_parts(case, results)
        ours = case.data["ours"]
        rec = self.module(case, results, i)
        if set(rec["state"]) != set(ours):
            self.fail("your MyDUSt3RHead's parameter names are not the prescribed ones (reassemble.…, fusion.…, "
                      "head.…), so no converter can fill them: make MyDUSt3RHead's check pass first")
        self.converted(case, self.value(case, results, i + 1))
        r = results[i + 2]
        if "raised" in r:
            self.fail(f"loading your converted dict into your head (strict) failed: {r['raised']}: "
                      f"{r.get('message', '')}")
        try:
            self.outputs(case, results, i + 3, diagnose=False)
        except CheckFailed as e:
            why = str(e).removeprefix(self.name + ": ")
            self.fail(f"your converted weights are right, but {why} — the difference comes from your MyDUSt3RHead "
                      f"(its own check names it)", *e.flags)
        return (f"{len(case.data['sd'])} DUSt3R keys (aliases and the unused refinenet4.resConfUnit1 dropped) -> "
                f"{len(ours)} keys of your head, loaded strictly; your head gives DUSt3R's outputs with them")

    def converted(self, case: Case, got) -> None:
        """The converted dict holds exactly the head's keys, each with its DUSt3R tensor unchanged."""
        sd, ours, mapping = case.data["sd"], case.data["ours"], case.data["mapping"]
        if self.kind(got) != "dict":
            self.fail(f"return a dict {{your head's key: tensor}}, got {self.kind(got)}")
        for k, t in got.items():
            if not isinstance(t, torch.Tensor):
                self.fail(f"{k!r} maps to a {self.kind(t)}, expected a tensor")
        unused = [k for k in sd if "refinenet4.resConfUnit1" in k]
        for k in ours:              # expected keys holding the wrong tensor: say which DUSt3R key they came from
            if k in got and not same_tensor(got[k], ours[k]):
                src = which_source(got[k], sd)
                if src and all(s in unused for s in src):
                    self.fail(f"{k} holds the never-used {src[0]}: refinenet4's resConfUnit1 is dropped; its "
                              f"resConfUnit2 is fusion.3.unit")
                if src:
                    hint = mapping_hint(src[0], mapping[k])
                    self.fail(f"{k} holds DUSt3R's {src[0]}, expected {mapping[k]}" + (f" — {hint}" if hint else ""))
                self.fail(f"{k} should be DUSt3R's {mapping[k]} unchanged (shape {list(ours[k].shape)}, "
                          f"{ours[k].dtype}), got a {got[k].dtype} tensor of shape {list(got[k].shape)} that equals "
                          f"none of the checkpoint's tensors")
        for k in got:               # keys the head does not have
            if k in ours:
                continue
            if k.startswith("dpt.") and k.removeprefix("dpt.") in ours:
                self.fail(f"unexpected key {k!r}: your head's keys have no 'dpt.' prefix (DUSt3R's do): "
                          f"drop it, e.g. {next(iter(ours))!r}")
            src = which_source(got[k], sd)
            if src and all(s in unused for s in src):
                self.fail(f"unexpected key {k!r}: refinenet4.resConfUnit1 is never used (the coarsest block gets "
                          f"one input); drop its 4 tensors")
            if any(ALIAS_RE.fullmatch(s) for s in src):
                self.fail(f"unexpected key {k!r}: scratch.layerN_rn are aliases of scratch.layer_rn.{{N-1}} (one "
                          f"tensor stored twice); map layer_rn and drop the aliases (after checking they are equal)")
            if "fusion.4" in k:
                self.fail(f"unexpected key {k!r}: there are only fusion.0..3 — refinenet{{k}} is fusion.{{k-1}}")
            self.fail(f"unexpected key {k!r}" + (f" (it holds DUSt3R's {src[0]})" if src else "")
                      + f"; your head's keys are like {list(ours)[:3]}")
        missing = [k for k in ours if k not in got]
        if missing:
            self.fail(f"missing {len(missing)} key(s), e.g. {missing[:3]} (DUSt3R's {mapping[missing[0]]})")
