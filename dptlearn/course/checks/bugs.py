"""Checks of the find-the-bug challenges (solutions/12_find_the_bug.ipynb).

Each exercise hands out a plausible function (``BUGGY``, the notebook's given cell, kept equal to
it by tests/test_challenges.py) with one silent bug of a kind the other checks name. The learner
fixes it; the check judges in this order, so that it is no oracle for where the bug is:

1. **the behaviour**: the function runs on seeded inputs (secret when grading) whose shapes make
   the bug visible, and its output must equal dptlearn's reference. While it does not, the
   verdict names only the evidence (which input shows it: "your output on <input> is still the
   given code's", or a known wrong fix by name), never which statements are right;
2. **one change in one place**: only once the behaviour is right, the probe's record of the
   learner's source is compared with the given code, statement by statement (AST, unparsed:
   comments, blank lines, docstrings and trivial spellings such as ``list()`` for ``[]`` do not
   count). The same rule for all six: *the fix* is one run of changed statements in one place
   (one statement rewritten, lines added next to it, or both), anywhere in the function; every
   change elsewhere is named ("you also changed `...`, which was right as given: put it back").
"""
from __future__ import annotations

import ast
import copy
import difflib
import math

import torch
import torch.nn.functional as F
from einops import rearrange

from ... import fusion as ref_fusion
from ... import grid as ref_grid
from ... import postprocess as ref_post
from ... import tokens as ref_tokens
from .. import probe
from .fusion import CROP_MISTAKES, NEAREST_MSG, fusion_variant, standin_blocks, wiring
from .harness import Case, Check, call, generator, randomize_, standin

STILL = ("your output on this input is still the given code's: the bug is still there (this input is "
         "the evidence: run your function on one like it and compare with what the card says it must do)")
SOURCE_LIMIT = 20_000
BLOCKS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.For, ast.AsyncFor, ast.While, ast.If,
          ast.With, ast.AsyncWith, ast.Try)


def _is_docstring(st: ast.stmt) -> bool:
    return isinstance(st, ast.Expr) and isinstance(st.value, ast.Constant) and isinstance(st.value.value, str)


EMPTY = {"list": ast.List, "dict": ast.Dict, "tuple": ast.Tuple}


class _Spelling(ast.NodeTransformer):
    """Trivial spellings as one: ``list()``, ``dict()``, ``tuple()`` as ``[]``, ``{}``, ``()``."""

    def visit_Call(self, node):
        self.generic_visit(node)
        if isinstance(node.func, ast.Name) and node.func.id in EMPTY and not node.args and not node.keywords:
            kind = EMPTY[node.func.id]
            return kind(keys=[], values=[]) if kind is ast.Dict else kind(elts=[], ctx=ast.Load())
        return node


def statements(fn: ast.FunctionDef) -> list[str]:
    """The function's signature and statements in source order, each unparsed on one line
    (a block statement by its header: ``for h in hooks:``); docstrings left out, trivial
    spellings made one (``_Spelling``)."""
    fn = _Spelling().visit(copy.deepcopy(fn))
    out = [f"def {fn.name}({ast.unparse(fn.args)})"]

    def walk(body):
        for st in body:
            if _is_docstring(st):
                continue
            if isinstance(st, BLOCKS):
                head = copy.copy(st)
                for attr in ("body", "orelse", "finalbody", "handlers"):
                    if hasattr(head, attr):
                        setattr(head, attr, [ast.Pass()] if attr == "body" else [])
                if hasattr(head, "decorator_list"):
                    head.decorator_list = []
                out.append(ast.unparse(head).splitlines()[0])
                for attr in ("body", "orelse", "finalbody"):
                    walk(getattr(st, attr, []))
                for h in getattr(st, "handlers", []):
                    walk(h.body)
            else:
                out.append(ast.unparse(st))
    walk(fn.body)
    return out


def function_def(source: str, name: str) -> ast.FunctionDef | None:
    """The top-level ``def name`` of ``source`` (dedented), or None."""
    lines = source.splitlines()
    pad = min((len(ln) - len(ln.lstrip()) for ln in lines if ln.strip()), default=0)
    tree = ast.parse("\n".join(ln[pad:] for ln in lines))
    return next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name), None)


class FindTheBug(Check):
    """A given function with one bug: the behaviour first, then the fix must be one change in one place."""

    function = ""                 # the given function's name
    BUGGY = FIXED = ""            # the handed-out code and a fix (the bug's statements are where they differ)
    dims = ""

    def __init__(self):
        self.given = statements(function_def(self.BUGGY, self.function))
        fixed = statements(function_def(self.FIXED, self.function))
        ops = difflib.SequenceMatcher(None, self.given, fixed, autojunk=False).get_opcodes()
        self.bug = {i for tag, i1, i2, *_ in ops if tag != "equal" for i in range(i1, i2)}

    # ------------------------------------------------------------------ the three phases

    def make_case(self, seed):
        runs = self.runs(seed)
        plan = [{"op": "source", "what": f"reading the source of your {self.function}"}]
        plan += [call(*args, what=what) for what, args, *_ in runs]
        return Case(plan, {"runs": runs})

    def verify(self, case, results):
        r = results[0]
        if "raised" in r:
            self.fail(f"could not read the source of your {self.function} ({r['raised']}: {r.get('message', '')}): "
                      f"hand in the function itself, defined with `def` in a cell of this notebook")
        got = self.learner_statements(r["value"])
        if got == self.given:
            self.fail("your function is still the code you were given, statement for statement: the bug is still "
                      "there — find it (the card says what the function must do; compare with the lecture)")
        for i, (what, args, want, cands) in enumerate(case.data["runs"], start=1):   # 1. the behaviour
            out = self.value(case, results, i)
            self.judge_output(results, i, what, out, want, cands)
        self.behaviour(case, results)
        self.one_change(got)                                                         # 2. one place
        return self.passed

    def behaviour(self, case, results) -> None:
        """Further behaviour a fix must show (the in-place bug: the input left untouched)."""

    def judge_output(self, results, i, what, got, want, cands):
        if isinstance(want, list):
            if not isinstance(got, (list, tuple)) or len(got) != len(want):
                self.fail(f"{what} should return a list of {len(want)} tensors, got {self.kind(got)}")
            for k, (g, w) in enumerate(zip(got, want)):
                self.compare(g, w, label=f"{what}, item {k}", dims=self.dims, result=results[i],
                             candidates=[(m, lambda f=f, k=k: f()[k]) for m, f in cands])
        else:
            self.compare(got, want, label=what, dims=self.dims, result=results[i], candidates=cands)

    def learner_statements(self, source) -> list[str]:
        if not isinstance(source, str) or len(source) >= SOURCE_LIMIT:
            self.fail(f"the recorded source of your {self.function} is not a function's text")
        try:
            fn = function_def(source, self.function)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            fn = None
        if fn is None:
            self.fail(f"hand in the given function `{self.function}`, fixed: your answer's source defines no "
                      f"`def {self.function}` (keep its name and signature)")
        return statements(fn)

    def one_change(self, got: list[str]) -> None:
        """The behaviour is right: the fix must be one run of changes in one place; name any other."""
        ops = difflib.SequenceMatcher(None, self.given, got, autojunk=False).get_opcodes()
        changes = [op for op in ops if op[0] != "equal"]
        if len(changes) <= 1:
            return
        # the extra change: the first one off the planted bug's statements (the second if all touch them)
        def near_bug(op):
            return bool(set(range(op[1], max(op[2], op[1] + 1))) & self.bug)
        tag, i1, i2, j1, j2 = next((op for op in changes if not near_bug(op)), changes[1])
        head = "your output is right now, but you also"
        if tag == "insert":
            self.fail(f"{head} added `{got[j1]}`, away from your fix: the fix is one change in one place "
                      f"(the card says so): take that line out")
        self.fail(f"{head} changed `{self.given[i1]}`, which was right as given: put it back (the fix is one "
                  f"change in one place; an equivalent rewrite still counts as a change)")

    # ------------------------------------------------------------------ per exercise

    passed = ""

    def runs(self, seed) -> list:
        """``[(what, args, want, [(diagnosis, thunk), ...]), ...]``: the given code's output comes first."""
        raise NotImplementedError


# ============================================================================ the exercises

GRID_BUGGY = '''def hooked_grids(tokens, hooks, image_size, patch_size=16):
    """The hooked layers' tokens as image grids: one (B, C, nh, nw) per hook."""
    H, W = image_size
    nh, nw = H // patch_size, W // patch_size
    grids = []
    for h in hooks:
        t = tokens[h]                                                     # (B, N, C), N = nh * nw
        grids.append(rearrange(t, "b (nw nh) c -> b c nh nw", nh=nh, nw=nw))  # (B, C, nh, nw)
    return grids'''
GRID_FIXED = GRID_BUGGY.replace('"b (nw nh) c', '"b (nh nw) c')


class BugGrid(FindTheBug):
    name, function, dims = "bug_hooked_grids", "hooked_grids", "(B, C, nh, nw)"
    forbidden = ("dptlearn.grid", "dptlearn.dpt.TokensToGrid", "dptlearn.tokens.select_hooked_tokens")
    BUGGY, FIXED = GRID_BUGGY, GRID_FIXED
    passed = "the grids of 4 hooked layers on two non-square patch grids; one change in one place"

    def runs(self, seed):
        g = generator(self.name, seed, 0)
        out = []
        for k, p in enumerate((16, 14)):
            nh = int(torch.randint(2, 6, (1,), generator=g))
            nw = nh + int(torch.randint(1, 4, (1,), generator=g))
            tokens = [torch.randn(2, nh * nw, 4, generator=g) for _ in range(7)]
            hooks = [0, 2, 4, 6] if k == 0 else [1, 3, 5, 6]
            want = [ref_grid.tokens_to_grid(tokens[h], nh, nw) for h in hooks]
            cands = [(STILL, lambda t=tokens, h=hooks, a=nh, b=nw: [
                          rearrange(t[i], "b (nw nh) c -> b c nh nw", nh=a, nw=b) for i in h]),
                     ("reshape instead of moving the channel axis: a reshape of (B, N, C) to (B, C, nh, nw) mixes "
                      "channels with positions (lecture 02)", lambda t=tokens, h=hooks, a=nh, b=nw: [
                          t[i].reshape(2, 4, a, b) for i in h])]
            out.append((f"hooked_grids on a {nh}x{nw} grid of {p}-pixel patches", (tokens, hooks, (p * nh, p * nw), p),
                        want, cands))
        return out


ALIGN_BUGGY = '''def fusion_block(x, skip, p):
    """DUSt3R's fusion block as a function: path x, level skip (B, D, h, w) -> (B, D, 2h, 2w).

    p holds the block's weights under DUSt3R's names: resConfUnit1 (the level's unit),
    resConfUnit2 (the unit after the add) and out_conv.
    """
    def unit(t, name):
        out = F.conv2d(F.relu(t), p[name + ".conv1.weight"], p[name + ".conv1.bias"], padding=1)
        out = F.conv2d(F.relu(out), p[name + ".conv2.weight"], p[name + ".conv2.bias"], padding=1)
        return t + out

    out = x + unit(skip, "resConfUnit1")                         # (B, D, h, w)
    out = unit(out, "resConfUnit2")                              # (B, D, h, w)
    out = F.interpolate(out, scale_factor=2, mode="bilinear")    # (B, D, 2h, 2w)
    return F.conv2d(out, p["out_conv.weight"], p["out_conv.bias"])'''
ALIGN_FIXED = ALIGN_BUGGY.replace('mode="bilinear")', 'mode="bilinear", align_corners=True)')


def dust3r_block_weights(ref) -> dict:
    """A dptlearn FusionBlock's weights under DUSt3R's names (resConfUnit1 = skip_unit)."""
    names = {"skip_unit": "resConfUnit1", "unit": "resConfUnit2", "out_conv": "out_conv"}
    return {names[k.split(".", 1)[0]] + "." + k.split(".", 1)[1]: v.clone() for k, v in ref.state_dict().items()}


class BugAlign(FindTheBug):
    name, function, dims = "bug_fusion_block", "fusion_block", "(B, D, 2h, 2w)"
    forbidden = ("dptlearn.fusion", "dptlearn.fast")
    BUGGY, FIXED = ALIGN_BUGGY, ALIGN_FIXED
    passed = "a fusion block on 3x5 and 4x4 maps with DUSt3R-layout weights; one change in one place"

    def runs(self, seed):
        out = []
        for k, (h, w) in enumerate(((3, 5), (4, 4))):
            g = generator(self.name, seed, k)
            ref = randomize_(ref_fusion.FusionBlock(4), g)
            x, skip = (torch.randn(2, 4, h, w, generator=g) for _ in range(2))
            v = lambda ref=ref, x=x, skip=skip, **kw: (lambda: fusion_variant(ref, x, skip, **kw))  # noqa: E731
            cands = [(STILL, v(align=False)), (NEAREST_MSG, v(mode="nearest")),
                     ("the x2 upsample comes after the residual units, just before out_conv; you moved it",
                      v(up_first=True))]
            out.append((f"fusion_block on a {h}x{w} map", (x, skip, dust3r_block_weights(ref)), ref(x, skip), cands))
        return out


CROP_BUGGY = '''def fuse_levels(levels, fusion):
    """Coarse-to-fine fusion of 4 levels (finest first) -> (B, D, 8nh, 8nw)."""
    path = fusion[3](levels[3])                 # (B, D, 2 ceil(nh/2), 2 ceil(nw/2))
    h, w = levels[2].shape[-2:]
    path = path[..., -h:, -w:]                  # (B, D, nh, nw)
    for i in (2, 1, 0):
        path = fusion[i](path, levels[i])       # x2 each
    return path'''
CROP_FIXED = CROP_BUGGY.replace("path[..., -h:, -w:]", "path[..., :h, :w]")


class BugCrop(FindTheBug):
    name, function, dims = "bug_fuse_levels", "fuse_levels", "(B, D, 8nh, 8nw)"
    forbidden = ("dptlearn.fusion",)
    BUGGY, FIXED = CROP_BUGGY, CROP_FIXED
    passed = "stand-in blocks on odd and even patch grids; one change in one place"

    def runs(self, seed):
        g = generator(self.name, seed, 0)
        blocks = standin_blocks(3, g)
        fusion = probe.build_standin("fusion_blocks", blocks)
        out = []
        for nh, nw in ((3, 5), (5, 7), (4, 6)):
            sizes = [(4 * nh, 4 * nw), (2 * nh, 2 * nw), (nh, nw), (math.ceil(nh / 2), math.ceil(nw / 2))]
            levels = [torch.randn(2, 3, *s, generator=g) for s in sizes]
            want = ref_fusion.fuse_pyramid(levels, fusion)
            cands = [(STILL, lambda lv=levels: wiring(lv, fusion, CROP_MISTAKES[0][1]))]
            cands += [(m, lambda lv=levels, c=c: wiring(lv, fusion, c)) for m, c in CROP_MISTAKES[1:]]
            out.append((f"fuse_levels on a {nh}x{nw} grid", (levels, standin("fusion_blocks", blocks)),
                        want, cands))
        return out


READOUT_BUGGY = '''def readout_project(tokens, weight, bias):
    """DPT's readout 'project': (B, 1 + N, C), the CLS token first -> (B, N, C).

    weight (C, 2C) and bias (C,) are the Linear(2C -> C) that mixes each patch with the CLS token.
    """
    readout = tokens[:, :1]                                            # (B, 1, C)
    patches = tokens[:, 1:]                                            # (B, N, C)
    pairs = torch.cat([readout.expand_as(patches), patches], dim=-1)   # (B, N, 2C)
    return F.gelu(F.linear(pairs, weight, bias))                       # (B, N, C)'''
READOUT_FIXED = READOUT_BUGGY.replace("[readout.expand_as(patches), patches]", "[patches, readout.expand_as(patches)]")


def _readout(x, w, b, first="patches", act=F.gelu):
    readout, patches = x[:, :1].expand_as(x[:, 1:]), x[:, 1:]
    pairs = torch.cat([patches, readout] if first == "patches" else [readout, patches], dim=-1)
    return act(F.linear(pairs, w, b))


class BugReadout(FindTheBug):
    name, function, dims = "bug_readout_project", "readout_project", "(B, N, C)"
    forbidden = ("dptlearn.tokens",)
    BUGGY, FIXED = READOUT_BUGGY, READOUT_FIXED
    passed = "readout 'project' with DPT's weight layout on two token sets; one change in one place"

    def runs(self, seed):
        out = []
        for k, (n, c) in enumerate(((6, 5), (4, 8))):
            g = generator(self.name, seed, k)
            ref = randomize_(ref_tokens.Readout("project", c, 1), g)
            x = torch.randn(2, 1 + n, c, generator=g)
            w, b = ref.project[0].weight.clone(), ref.project[0].bias.clone()
            cands = [(STILL, lambda x=x, w=w, b=b: _readout(x, w, b, first="readout")),
                     ("missing GELU after the Linear layer (DPT's project is Linear + GELU)",
                      lambda x=x, w=w, b=b: _readout(x, w, b, act=lambda t: t)),
                     ("ReLU where DPT uses GELU", lambda x=x, w=w, b=b: _readout(x, w, b, act=F.relu))]
            out.append((f"readout_project on (2, 1 + {n}, {c})", (x, w, b), ref(x), cands))
        return out


EXP_BUGGY = '''def points_from_raw(raw):
    """DUSt3R's 3D points from the head's raw map, depth mode 'exp': (B, 4, H, W) -> (B, H, W, 3)."""
    fmap = raw.permute(0, 2, 3, 1)              # (B, H, W, 4)
    xyz = fmap[..., :3]                         # (B, H, W, 3)
    d = xyz.norm(dim=-1, keepdim=True)          # (B, H, W, 1)
    direction = xyz / d.clamp(min=1e-8)         # (B, H, W, 3)
    return direction * torch.exp(d)             # (B, H, W, 3)'''
EXP_FIXED = EXP_BUGGY.replace("torch.exp(d)", "torch.expm1(d)")


class BugExp(FindTheBug):
    name, function, dims = "bug_points_from_raw", "points_from_raw", "(B, H, W, 3)"
    forbidden = ("dptlearn.postprocess",)
    BUGGY, FIXED = EXP_BUGGY, EXP_FIXED
    passed = "pts3d of raw maps with small and large vectors, zero vectors included; one change in one place"

    def runs(self, seed):
        g = generator(self.name, seed, 0)
        raw = torch.randn(2, 4, 3, 5, generator=g) * 0.3
        raw[0, :3, 0, 0] = 0.0                                   # a zero vector: expm1 keeps it at the centre
        raw[1, :3, 2] *= 8                                       # far points
        xyz = raw.permute(0, 2, 3, 1)[..., :3]
        d = xyz.norm(dim=-1, keepdim=True)
        direction = xyz / d.clamp(min=1e-8)
        want = ref_post.depth_activation(xyz, ("exp", -math.inf, math.inf))
        cands = [(STILL, lambda: direction * torch.exp(d)),
                 ("log1p (ln(1 + d)) where DUSt3R uses expm1 (e^d − 1): the inverse of the right remap, so far points come out far too close (lecture 05: why expm1)", lambda: direction * torch.log1p(d)),
                 ("that is depth mode 'linear' (the vector as it is): 'exp' remaps its length d to e^d - 1",
                  lambda: xyz.clone()),
                 ("that is depth mode 'square' (length d^2): 'exp' remaps the length d to e^d - 1",
                  lambda: direction * d.square()),
                 ("you scaled the vector itself, not its direction: the new length must be e^d - 1, so multiply "
                  "the unit vector", lambda: xyz * torch.expm1(d))]
        return [("points_from_raw on a (2, 4, 3, 5) raw map", (raw,), want, cands)]


INPLACE_BUGGY = '''def residual_unit(x, w1, b1, w2, b2):
    """DUSt3R's pre-activation residual conv unit: (B, D, h, w) -> (B, D, h, w)."""
    act = nn.ReLU(inplace=True)                       # one ReLU module, used before both convs
    out = F.conv2d(act(x), w1, b1, padding=1)         # (B, D, h, w)
    out = F.conv2d(act(out), w2, b2, padding=1)       # (B, D, h, w)
    return x + out'''
INPLACE_FIXED = INPLACE_BUGGY.replace("nn.ReLU(inplace=True)", "nn.ReLU()")


class BugInplace(FindTheBug):
    name, function, dims = "bug_residual_unit", "residual_unit", "(B, D, h, w)"
    forbidden = ("dptlearn.fusion", "dptlearn.fast")
    BUGGY, FIXED = INPLACE_BUGGY, INPLACE_FIXED
    passed = "the unit on two maps, input left untouched; one change in one place"

    def runs(self, seed):
        from .fusion import rcu
        out = []
        for k, (h, w) in enumerate(((3, 5), (4, 4))):
            g = generator(self.name, seed, k)
            x = torch.randn(2, 4, h, w, generator=g)
            w1, w2 = (torch.randn(4, 4, 3, 3, generator=g) / 6 for _ in range(2))
            b1, b2 = (torch.randn(4, generator=g) * 0.5 for _ in range(2))
            args = (x, w1, b1, w2, b2)
            cands = [(STILL, lambda a=args: rcu(*a, skip_is_relu=True)),
                     ("missing pre-activation: the unit's first ReLU comes before conv1",
                      lambda a=args: rcu(*a, pre=False)),
                     ("ReLU after the residual add: DUSt3R's unit ends with the add",
                      lambda a=args: rcu(*a, final_relu=True)),
                     ("LeakyReLU where DUSt3R's unit uses ReLU: negative values become 0, not 0.01 x",
                      lambda a=args: rcu(*a, leaky=True))]
            out.append((f"residual_unit on a {h}x{w} map", args, rcu(*args), cands))
        return out

    def behaviour(self, case, results):
        for i in range(1, len(results)):
            self.unchanged(results, i, "your residual_unit still changes its input x in place: the caller's x is "
                                       "overwritten (the bug is still there)")


__all__ = ["FindTheBug", "BugGrid", "BugAlign", "BugCrop", "BugReadout", "BugExp", "BugInplace", "statements"]
