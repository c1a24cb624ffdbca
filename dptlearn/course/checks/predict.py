"""Checks of the predict challenges (solutions/13_predict.ipynb), written down before anything runs:
every shape of DUSt3R's head on a portrait 336x512 image (W x H: the lectures trace the landscape
512x336, so no lecture output holds these), and the parameter counts of DPT-Large's head (the
lectures count DUSt3R's).

The expected values are closed forms of the configuration (``dust3r_shapes``, ``head_params``),
not recordings of the code's output; tests/test_challenges.py checks them against a traced
head, against ``sum(p.numel())`` and against numbers worked out by hand. The learner hands in a
dict; the probe records it as data (``{"op": "value"}``) and the judge compares it exactly,
naming known slips (rows and columns swapped, the stride-2 conv's rounding, the crop's place,
biases, the coarsest block's skip unit) without giving the right number.
"""
from __future__ import annotations

import math
import numbers

from .harness import Case, Check

# DUSt3R's head (DUSt3R_ViTLarge_BaseDecoder_512_dpt) on a portrait 336x512 (W x H) image, batch 1
CONFIG = {"H": 512, "W": 336, "B": 1, "enc": 1024, "dec": 768, "dec_depth": 12, "dims": (96, 192, 384, 768),
          "D": 256, "last": 128, "patch": 16, "out": 4}
# DPT-Large's head as dptlearn.dpt_large builds it (Intel/dpt-large; fusion[3] without a skip unit)
DPT_LARGE = {"widths": (1024,) * 4, "dims": (256, 512, 1024, 1024), "D": 256, "last": 32, "out": 1,
             "readout": 1024}


def _conv(c_in: int, c_out: int, k: int, bias: bool = True) -> int:
    return c_out * c_in * k * k + (c_out if bias else 0)


def dust3r_shapes(H, W, B, enc, dec, dec_depth, dims, D, last, patch, out) -> dict[str, tuple]:
    """Every tensor of the head, in closed form (lecture 00's trace names)."""
    L = dec_depth
    hooks = [0, L // 2, 3 * L // 4, L]
    nh, nw = H // patch, W // patch
    widths = [enc, dec, dec, dec]
    s = {f"tokens[{h}]": (B, nh * nw, c) for h, c in zip(hooks, widths)}
    s.update({f"to_grid.{i}": (B, c, nh, nw) for i, c in enumerate(widths)})
    # stride-2 3x3 conv with padding 1: floor((n + 2 - 3) / 2) + 1 = ceil(n / 2)
    sizes = [(4 * nh, 4 * nw), (2 * nh, 2 * nw), (nh, nw), (math.ceil(nh / 2), math.ceil(nw / 2))]
    for i, (h, w) in enumerate(sizes):
        s[f"reassemble.branches.{i}"] = (B, dims[i], h, w)
        s[f"reassemble.project.{i}"] = (B, D, h, w)
    s["fusion.3"] = (B, D, 2 * sizes[3][0], 2 * sizes[3][1])
    s["crop"] = (B, D, nh, nw)
    s.update({f"fusion.{i}": (B, D, 2 ** (3 - i) * nh, 2 ** (3 - i) * nw) for i in (2, 1, 0)})
    s["head.reduce"] = (B, last, 8 * nh, 8 * nw)
    s["head.upsample"] = (B, last, 16 * nh, 16 * nw)
    s["head"] = (B, out, 16 * nh, 16 * nw)
    s["pts3d"] = (B, H, W, 3)
    s["conf"] = (B, H, W)
    return s


def head_params(widths, dims, D, last, out, readout=None, bias=True, project_bias=False, unused_unit=False,
                out_conv_k=1, one_readout=False, readout_in=2) -> dict[str, int]:
    """Parameter counts of a DPT head by part (its coarsest fusion block without a skip unit); the
    switches give known slips."""
    b = bias
    resample = {0: lambda d: _conv(d, d, 4, b), 1: lambda d: _conv(d, d, 2, b),   # ConvTranspose 4x4 s4, 2x2 s2
                2: lambda d: 0, 3: lambda d: _conv(d, d, 3, b)}                   # none, Conv 3x3 s2
    branches = sum(_conv(c, d, 1, b) + resample[i](d) for i, (c, d) in enumerate(zip(widths, dims)))
    project = sum(_conv(d, D, 3, b and project_bias) for d in dims)
    unit = 2 * _conv(D, D, 3, b)
    fusion = 4 * (unit + _conv(D, D, out_conv_k, b)) + 3 * unit + (unit if unused_unit else 0)
    head = _conv(D, D // 2, 3, b) + _conv(D // 2, last, 3, b) + _conv(last, out, 1, b)
    parts = {"reassemble.branches": branches, "reassemble.project": project, "fusion": fusion, "head": head}
    if readout:
        parts = {"readout": (1 if one_readout else 4) * _conv(readout_in * readout, readout, 1, b), **parts}
    return {**parts, "total": sum(parts.values())}


def _ints(v) -> tuple | None:
    if isinstance(v, (list, tuple)) and all(isinstance(n, numbers.Integral) and not isinstance(n, bool) for n in v):
        return tuple(int(n) for n in v)
    return None


class PredictShapes(Check):
    """``student``: a dict, stage name -> the shape of its output on a 336x512 (W x H) image, batch 1."""

    name = "predict_shapes"
    kernel_answer = "predicted_shapes"

    def make_case(self, seed):
        return Case([{"op": "value", "what": "your predicted shapes"}], {"want": dust3r_shapes(**CONFIG)})

    def diagnose(self, key, got, want) -> str:
        c = CONFIG
        grid = (c["H"] // c["patch"], c["W"] // c["patch"])
        if len(got) == len(want) == 4 and got[:2] == want[:2] and got[2:] == want[:1:-1] and want[2] != want[3]:
            return ("rows and columns swapped: 336x512 is width x height (a portrait image), and shapes are "
                    "(B, C, rows, columns)")
        if len(got) == len(want) == 4 and got[:1] + got[3:] + got[1:3] == want:
            return "channels last where the head's maps are channels first (B, C, h, w)"
        if key == "pts3d" and got == (c["B"], 3, c["H"], c["W"]):
            return "post-processing moves the channels last: (B, H, W, 3)"
        if key.startswith("tokens") and len(got) == 3 and got[1] == want[1] + 1:
            return "DUSt3R's tokens carry no CLS token: N is the number of patches alone"
        if key.endswith(".3") and key.startswith("reassemble") and got[-2:] == tuple(n // 2 for n in grid) \
                and got[-2:] != want[-2:]:
            return ("the stride-2 3x3 conv (padding 1) rounds up, not down: an odd count n gives ceil(n / 2)")
        if key == "fusion.3" and got[-2:] == dust3r_shapes(**c)["crop"][-2:]:
            return "fusion.3 only doubles the coarsest level; the crop to the next level's size comes after it"
        if key.startswith(("fusion", "reassemble.project", "crop")) and got[1] != want[1]:
            return "after reassemble.project every level has the fusion width feature_dim channels"
        if key.startswith("reassemble.branches") and got[1] != want[1]:
            return "each branch's 1x1 conv maps the tokens to that level's own width (layer_dims)"
        if key == "head" and len(got) == 4 and got[1] == 3:
            return "DUSt3R's head predicts 3 coordinates and a confidence per pixel"
        return "look at that stage again (lecture 00's traced forward lists the stages in order)"

    def verify(self, case, results):
        got = self.value(case, results, 0)
        want = case.data["want"]
        if not isinstance(got, dict) or set(got) <= {"type", "len"}:
            self.fail(f"hand in a dict: stage name -> shape, got {self.kind(got)}")
        missing = [k for k in want if k not in got]
        if missing:
            self.fail(f"{len(missing)} stage(s) missing from your dict: {', '.join(missing)} (the card lists all "
                      f"{len(want)})")
        extra = [str(k) for k in got if k not in want]
        if extra:
            self.fail(f"unknown stage name(s) {', '.join(extra)}: use the names on the card")
        shapes = {k: _ints(got[k]) for k in want}
        bad = [k for k, v in shapes.items() if v is None]
        if bad:
            self.fail(f"{bad[0]}: write a shape as a tuple of ints, got {got[bad[0]]!r}")
        wrong = [k for k in want if shapes[k] != want[k]]
        if wrong:
            k = wrong[0]
            are = "is" if len(wrong) == 1 else "are"
            self.fail(f"{len(wrong)} of {len(want)} shapes {are} wrong; the first, {k}: you wrote {shapes[k]} — "
                      f"{self.diagnose(k, shapes[k], want[k])}")
        return f"all {len(want)} shapes of DUSt3R's head on a 336x512 (W x H) image, exactly"


PARAM_SLIPS = (   # (diagnosis, switches of head_params)
    ("you left out the biases: every conv here has one (out_channels more parameters) except "
     "reassemble.project's", {"bias": False}),
    ("reassemble.project's 3x3 convs have no bias (DUSt3R builds them with bias=False)", {"project_bias": True}),
    ("you counted a skip unit for fusion[3]: your head's coarsest block has none (DUSt3R's checkpoint carries one "
     "it never uses, lecture 04, section 5)", {"unused_unit": True}),
    ("each block's out_conv is 1x1, not 3x3", {"out_conv_k": 3}),
    ("each of the four hooked layers has a readout projection of its own", {"one_readout": True}),
    ("the readout's Linear reads a patch token and the CLS token side by side: 2C inputs", {"readout_in": 1}),
)


class PredictParams(Check):
    """``student``: a dict with the parameter counts of DPT-Large's head, by part, and their total."""

    name = "predict_params"
    kernel_answer = "predicted_params"

    def make_case(self, seed):
        return Case([{"op": "value", "what": "your predicted parameter counts"}],
                    {"want": head_params(**DPT_LARGE)})

    def verify(self, case, results):
        got = self.value(case, results, 0)
        want = case.data["want"]
        if not isinstance(got, dict) or set(got) <= {"type", "len"}:
            self.fail(f"hand in a dict: part -> parameter count, got {self.kind(got)}")
        if set(got) != set(want):
            self.fail(f"hand in exactly the keys {', '.join(want)}, got {', '.join(str(k) for k in got)}")
        for k in want:
            if not isinstance(got[k], numbers.Integral) or isinstance(got[k], bool):
                self.fail(f"{k}: a parameter count is an int, got {got[k]!r}")
        parts = [k for k in want if k != "total"]
        if got["total"] != sum(got[k] for k in parts) and all(got[k] == want[k] for k in parts):
            self.fail(f"your parts are right but the total is not their sum ({sum(got[k] for k in parts)})")
        for k in want:
            if got[k] == want[k]:
                continue
            slips = [msg for msg, kw in PARAM_SLIPS if head_params(**{**DPT_LARGE, **kw})[k] == got[k]]
            why = slips[0] if slips else "count each conv's weight (out x in x k x k) and bias again"
            self.fail(f"{k}: you wrote {got[k]:,}, which is not the head's count — {why}")
        return f"{len(want)} parameter counts of DPT-Large's head, exactly (total {want['total']:,})"
