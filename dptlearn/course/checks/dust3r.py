"""Checks of notebook 06: DUSt3R's head from its parts, and DUSt3R's checkpoint layout.

``dust3r_forward`` gets a stand-in head (``probe.StandInDUSt3RHead``): the same attributes as
a ``DUSt3RHead`` whose parts compute simple non-DPT maps. The expected answer comes from the
*real* wiring: a ``DUSt3RHead`` whose reassemble stage, fusion blocks and regression head are
replaced by the same stand-ins, called as a whole.
"""
from __future__ import annotations

import re

import torch
from einops import rearrange

from ... import dust3r as ref_dust3r
from ... import postprocess as ref_post
from ..probe import build_standin
from .fusion import standin_blocks, wiring
from .harness import INF, Case, Check, call, generator, randomize_, same_tensor, standin, up

ENC, DEC, DEC_DEPTH, FEATURE_DIM, LAST_DIM, LAYER_DIMS = 8, 6, 10, 8, 6, (3, 4, 5, 6)
FACTORS = (4, 2, 1, 0.5)


def small_head(g: torch.Generator) -> "ref_dust3r.DUSt3RHead":
    head = ref_dust3r.dust3r_dpt_head(enc_embed_dim=ENC, dec_embed_dim=DEC, dec_depth=DEC_DEPTH,
                                      feature_dim=FEATURE_DIM, last_dim=LAST_DIM, layer_dims=LAYER_DIMS, device="cpu")
    return randomize_(head, g)


def standin_head_params(g: torch.Generator) -> dict:
    """Parameters of a stand-in DUSt3R head shaped like ``small_head``'s (see ``probe.StandInDUSt3RHead``)."""
    dims = (ENC, DEC, DEC, DEC)
    branches = [{"mix": torch.randn(d, c, generator=g) / c ** 0.5, "bias": torch.randn(d, generator=g) * 0.5,
                 "factor": f} for c, d, f in zip(dims, LAYER_DIMS, FACTORS)]
    project = [torch.randn(FEATURE_DIM, d, 1, 1, generator=g) / d ** 0.5 for d in LAYER_DIMS]
    head = {"mix": torch.randn(4, FEATURE_DIM, generator=g) * 0.5 / FEATURE_DIM ** 0.5,
            "bias": torch.randn(4, generator=g) * 0.3}
    dpt = {"hooks": [0, 2 * DEC_DEPTH // 4, 3 * DEC_DEPTH // 4, DEC_DEPTH], "patch_size": 16,
           "reassemble": {"branches": branches, "project": project},
           "fusion": standin_blocks(FEATURE_DIM, g), "head": head}
    return {"dpt": dpt, "depth_mode": ("exp", -INF, INF), "conf_mode": ("exp", 1, INF)}


def real_wiring(params: dict, tokens: list, image_size) -> dict:
    """The expected answer: ``DUSt3RHead.forward`` (DPTHead's order + post-processing) over the stand-ins."""
    head = ref_dust3r.dust3r_dpt_head(enc_embed_dim=ENC, dec_embed_dim=DEC, dec_depth=DEC_DEPTH,
                                      feature_dim=FEATURE_DIM, last_dim=LAST_DIM, layer_dims=LAYER_DIMS, device="cpu")
    parts = build_standin("dust3r_head", params).dpt
    head.dpt.reassemble, head.dpt.fusion, head.dpt.head = parts.reassemble, parts.fusion, parts.head
    return head(tokens, image_size)


def variant(dpt, modes, tokens, image_size, hooks=None, to_grid=None, **mistake):
    """The forward pass from the parts of the stand-in ``dpt`` with one known mistake switched on
    (``mistake``: a crop or a swap for ``fusion.wiring``)."""
    H, W = image_size
    nh, nw = H // dpt.patch_size, W // dpt.patch_size
    to_grid = to_grid or (lambda t: rearrange(t, "b (nh nw) c -> b c nh nw", nh=nh, nw=nw))
    levels = dpt.reassemble([to_grid(tokens[h]) for h in (hooks or dpt.hooks)])
    return ref_post.postprocess(dpt.head(wiring(levels, dpt.fusion, **mistake)), *modes)


class Dust3rForward(Check):
    """``student(head, tokens, image_size) -> {'pts3d', 'conf'}`` from the head's parts (not ``head(...)``)."""

    name = "dust3r_forward"
    forbidden = ("dptlearn",)       # the whole head: this exercise is all of it
    B, H, W = 2, 48, 80             # an odd 3x5 patch grid

    def make_case(self, seed):
        params = standin_head_params(generator(self.name, seed, 0))
        g = generator(self.name, seed, 1)
        tokens = [torch.randn(self.B, (self.H // 16) * (self.W // 16), ENC if i == 0 else DEC, generator=g)
                  for i in range(DEC_DEPTH + 1)]
        plan = [call(standin("dust3r_head", params), tokens, (self.H, self.W),
                     what=f"dust3r_forward(head, tokens, {(self.H, self.W)})")]
        return Case(plan, {"params": params, "tokens": tokens, "want": real_wiring(params, tokens, (self.H, self.W))})

    def verify(self, case, results):
        B, H, W, L = self.B, self.H, self.W, DEC_DEPTH
        nh, nw = H // 16, W // 16
        r = results[0]
        if r.get("raised") == "PartsOnly":
            self.fail("implement it yourself — call the parts (head.dpt.reassemble, head.dpt.fusion[i], "
                      "head.dpt.head), not the assembled head(...) or head.dpt(...)")
        if r.get("raised") == "ValueError" and "same shape" in r.get("message", ""):
            self.fail(f"missing crop on odd grids: {H}x{W} pixels give a 3x5 patch grid; the x1/2 level has 2x3 "
                      f"cells, fusion[3] doubles that to 4x6, which must be cropped (top-left) to 3x5 before "
                      f"fusion[2] ({r['raised']}: {r['message']})")
        got = self.mapping(self.value(case, results, 0), {"pts3d", "conf"},
                           "return the post-processed dict {'pts3d': (B, H, W, 3), 'conf': (B, H, W)}")
        dpt = build_standin("dust3r_head", case.data["params"]).dpt
        modes = (case.data["params"]["depth_mode"], case.data["params"]["conf_mode"])
        tokens, want = case.data["tokens"], case.data["want"]

        def v(**kw):
            return lambda: variant(dpt, modes, tokens, (H, W), **kw)["pts3d"]
        self.compare(got["pts3d"], want["pts3d"], label="pts3d", dims="(B, H, W, 3)", result=r,
                     shape_hints={(B, W, H, 3): "image_size is (H, W): nh = H // 16 rows, nw = W // 16 columns",
                                  (B, 3, H, W): "channels last: post-process the raw map"},
                     candidates=[
                         ("reshape instead of rearrange: tokens.reshape(B, C, nh, nw) mixes channels and positions; "
                          "use rearrange(t, 'b (nh nw) c -> b c nh nw')",
                          v(to_grid=lambda t: t.reshape(t.shape[0], t.shape[2], nh, nw))),
                         ("swapped nh/nw in the token-to-grid pattern: tokens are row-major, 'b (nh nw) c'",
                          v(to_grid=lambda t: rearrange(t, "b (nw nh) c -> b c nh nw", nh=nh, nw=nw))),
                         (f"wrong hooks: use head.dpt.hooks = {list(dpt.hooks)} ([0, 2L//4, 3L//4, L] over the "
                          f"{L + 1}-entry token list); the last decoder block is index L, not L - 1",
                          v(hooks=[0, 2 * L // 4, 3 * L // 4, L - 1])),
                         (f"wrong hooks: use head.dpt.hooks = {list(dpt.hooks)}, not the last four layers",
                          v(hooks=[L - 3, L - 2, L - 1, L])),
                         ("you kept the bottom-right of the coarse path; DUSt3R's odd-grid crop keeps the top-left",
                          v(crop=lambda p, s: p[..., -s[0]:, -s[1]:])),
                         ("you resized the coarse path instead of cropping it (top-left slice, path[..., :h, :w])",
                          v(crop=lambda p, s: up(p, True, size=s))),
                         ("path and level swapped: a fusion block takes the path first, then its pyramid level as "
                          "the skip — dpt.fusion[i](path, levels[i])", v(swap=True)),
                     ])
        self.compare(got["conf"], want["conf"], label="conf", dims="(B, H, W)", result=r,
                     shape_hints={(B, H, W, 1): "conf has no channel dimension"})
        return "hooks [0, 5, 7, 10] of 11 layers, odd 3x5 grid (48x80), pts3d and conf from the parts"


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
        return ("resConfUnit1 is the skip unit (fusion.i.skip_unit: it refines the pyramid level before the add), "
                "resConfUnit2 the unit after the add (fusion.i.unit)")
    if theirs.startswith("dpt.head.") and expected_theirs.startswith("dpt.head."):
        return "head.0 / head.2 / head.4 are reduce / refine / predict (head.1, head.3: upsample and ReLU, no weights)"
    if "act_postprocess" in theirs or "layer_rn" in theirs:
        return ("act_postprocess.{i}.{j} -> reassemble.branches.{i}.{j} and scratch.layer_rn.{i} -> "
                "reassemble.project.{i}, same i")
    return ""


class ConvertDust3rStateDict(Check):
    """``student(dust3r_sd) -> state dict`` that ``DUSt3RHead.load_state_dict(..., strict=True)`` accepts."""

    name = "convert_dust3r_state_dict"
    forbidden = ("dptlearn.dust3r",)

    def make_case(self, seed):
        src = small_head(generator(self.name, seed, 0))
        sd = ref_dust3r.dust3r_state_dict(src)                   # with the aliases and the unused zeros
        g = generator(self.name, seed, 1)
        tokens = [torch.randn(1, 6, ENC if i == 0 else DEC, generator=g) for i in range(DEC_DEPTH + 1)]
        mapping = {"dpt." + ours: "dpt." + theirs for theirs, ours in ref_dust3r._key_map(src.dpt).items()}
        return Case([call(dict(sd), what="convert_dust3r_state_dict(sd)")],
                    {"sd": sd, "ours": src.state_dict(), "mapping": mapping, "tokens": tokens,
                     "want": src(tokens, (32, 48))})

    def verify(self, case, results):
        sd, ours, mapping = case.data["sd"], case.data["ours"], case.data["mapping"]
        got = self.value(case, results, 0)
        if not isinstance(got, dict) or self.kind(got) != "dict":
            self.fail(f"return a dict {{our key: tensor}}, got {self.kind(got)}")
        for k, t in got.items():
            if not isinstance(t, torch.Tensor):
                self.fail(f"{k!r} maps to a {self.kind(t)}, expected a tensor")
        unused = [k for k in sd if "refinenet4.resConfUnit1" in k]
        for k in ours:              # expected keys holding the wrong tensor: say which DUSt3R key they came from
            if k in got and not same_tensor(got[k], ours[k]):
                src = which_source(got[k], sd)
                if src and all(s in unused for s in src):
                    self.fail(f"{k} holds zeros from the never-used {src[0]}: refinenet4's resConfUnit1 is "
                              f"dropped; its resConfUnit2 is fusion.3.unit")
                if src:
                    hint = mapping_hint(src[0], mapping[k])
                    self.fail(f"{k} holds DUSt3R's {src[0]}, expected {mapping[k]}" + (f" — {hint}" if hint else ""))
                self.fail(f"{k} should be DUSt3R's {mapping[k]} unchanged (shape {list(ours[k].shape)}), got a "
                          f"tensor of shape {list(got[k].shape)} that equals none of the checkpoint's tensors")
        for k in got:               # keys the head does not have
            if k in ours:
                continue
            src = which_source(got[k], sd)
            if src and all(s in unused for s in src):
                self.fail(f"unexpected key {k!r}: refinenet4.resConfUnit1 is never used (the coarsest block gets "
                          f"one input); drop its 4 tensors")
            if any(ALIAS_RE.fullmatch(s) for s in src):
                self.fail(f"unexpected key {k!r}: scratch.layerN_rn are aliases of scratch.layer_rn.{{N-1}} (one "
                          f"tensor stored twice); map layer_rn and drop the aliases (after checking they are equal)")
            if "fusion.4" in k:
                self.fail(f"unexpected key {k!r}: there are only fusion.0..3 — refinenet{{k}} is fusion.{{k-1}}")
            if not k.startswith("dpt."):
                self.fail(f"unexpected key {k!r}: keep the 'dpt.' prefix (a DUSt3RHead's keys look like "
                          f"'dpt.reassemble.branches.0.0.weight')")
            self.fail(f"unexpected key {k!r}" + (f" (it holds DUSt3R's {src[0]})" if src else "")
                      + f"; the head's keys are like {list(ours)[:3]}")
        missing = [k for k in ours if k not in got]
        if missing:
            self.fail(f"missing {len(missing)} key(s), e.g. {missing[:3]} (DUSt3R's {mapping[missing[0]]})")
        dst = small_head(torch.Generator().manual_seed(1))
        try:
            dst.load_state_dict(got, strict=True)
        except Exception as e:  # noqa: BLE001
            self.fail(f"DUSt3RHead.load_state_dict(strict=True) rejected your dict: {e}")
        out = dst(case.data["tokens"], (32, 48))
        self.compare(out["pts3d"], case.data["want"]["pts3d"], label="pts3d after loading", dims="(B, H, W, 3)")
        return (f"{len(sd)} DUSt3R keys (aliases and the unused refinenet4.resConfUnit1 dropped) -> {len(ours)} head "
                f"keys; outputs match")
