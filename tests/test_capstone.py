"""The capstone (exercise 06) runs the learner's own head, built from their answers to 01-05.

- the solution notebooks pass both capstone checks, through the three phases too;
- a wrong part in a sibling notebook (a copy of solutions/ with one part broken by a cell appended
  to its notebook, as a learner's later edit would) fails both checks, naming the part and its notebook;
- mistakes of the assembly itself, and of the converter, are named;
- a lone 06 fails clearly (MissingAnswers, listing the missing notebooks), also when graded;
- one grading run: a student with the six solution notebooks gets full marks on 06, a student
  with only 06 gets 0 with that message and no traceback.
"""
from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from dptlearn import checks
from dptlearn.course import probe
from dptlearn.course.answers import PARTS, MissingAnswers, Parts, load_answers, load_parts
from dptlearn.course.checks import CHECKS, CheckFailed

from _helpers import ROOT, code_cell, run_grader, submission_reports

SOLUTIONS = ROOT / "solutions"
CAPSTONE = ("MyDUSt3RHead", "convert_dust3r_state_dict")


@pytest.fixture(scope="module")
def good() -> dict:
    """The solutions' answers to 01-05, loaded once (each load runs the notebook's cells)."""
    return {nb: load_answers(nb, SOLUTIONS) for nb in PARTS}


def capstone(parts, **replace) -> dict:
    """What 06's check cells hand in: the parts, and 06's solution cells run with ``mine = parts``."""
    ns = {"math": math, "re": re, "torch": torch, "F": F, "nn": nn, "rearrange": rearrange, "mine": parts}
    nb = json.loads((SOLUTIONS / "06_dust3r_head.ipynb").read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        if "solution" in cell["metadata"].get("tags", []):
            exec("".join(cell["source"]), ns)  # noqa: S102 - our own solution notebook
    ns.update(replace)
    return {"parts": parts, "head": ns["MyDUSt3RHead"], "convert": ns["convert_dust3r_state_dict"]}


def run_check(name: str, obj: dict) -> None:
    getattr(checks, name)(obj, device="cpu")


def test_the_solutions_pass_both_checks(good, capsys):
    obj = capstone(Parts(good, {}, []))
    for name in CAPSTONE:
        run_check(name, obj)
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in out] == [f"✓ {name}" for name in CAPSTONE], out
    assert "your 14 parts from 01-05 pass their checks" in out[0]


def test_a_secret_seed_passes_through_the_three_phases(good):
    obj = capstone(Parts(good, {}, []))
    check = CHECKS["MyDUSt3RHead"]
    case = check.case(123456789)
    results = probe.execute(obj, case.plan, "cpu")
    assert check.judge(case, results).startswith("your 14 parts from 01-05 pass their checks")
    with pytest.raises(CheckFailed, match=r"^MyDUSt3RHead: your \w+ from 0\d_\w+\.ipynb is wrong"):
        check.judge(check.case(1), results)          # answers recorded for another seed


# A part broken in its own notebook: the cell appended to the copy redefines it, as a learner's edit would.
BROKEN = {
    "FusionBlock without the skip": ("04_refinenet_fusion", "FusionBlock", '''
_Right = FusionBlock
class FusionBlock(_Right):
    def forward(self, x, skip=None):
        out = F.interpolate(self.unit(x), scale_factor=2, mode="bilinear", align_corners=True)
        return self.out_conv(out)
'''),
    "tokens_to_grid as a plain reshape": ("02_rearrange", "tokens_to_grid", '''
def tokens_to_grid(tokens, nh, nw):
    return tokens.reshape(tokens.shape[0], tokens.shape[2], nh, nw)
'''),
    "head without align_corners": ("05_head_and_postprocess", "RegressionHead", '''
_Right = RegressionHead
class RegressionHead(_Right):
    def forward(self, x):
        x = F.interpolate(self.reduce(x), scale_factor=2, mode="bilinear", align_corners=False)
        return self.predict(F.relu(self.refine(x)))
'''),
    "Reassemble coarsest-first": ("03_reassemble", "Reassemble", '''
_Right = Reassemble
class Reassemble(_Right):
    def forward(self, grids):
        return super().forward(grids)[::-1]
'''),
    "hooks off by one": ("01_tokens_and_hooks", "hook_indices", '''
def hook_indices(dec_depth):
    return [0, 2 * dec_depth // 4, 3 * dec_depth // 4, dec_depth - 1]
'''),
    "FusionBlock is dptlearn's": ("04_refinenet_fusion", "FusionBlock", '''
import dptlearn.fusion
FusionBlock = dptlearn.fusion.FusionBlock
'''),
    "residual unit in ResNet order (FusionBlock uses it too)": ("04_refinenet_fusion", "ResidualConvUnit", '''
_Right = ResidualConvUnit
class ResidualConvUnit(_Right):
    def forward(self, x):
        return F.relu(x + self.conv2(F.relu(self.conv1(x))))
'''),
}


@pytest.mark.parametrize("broken", sorted(BROKEN))
def test_a_wrong_part_fails_the_capstone_naming_the_part(broken, good, tmp_path):
    nb_name, part, cell = BROKEN[broken]
    folder = tmp_path / "student"
    shutil.copytree(SOLUTIONS, folder)
    path = folder / f"{nb_name}.ipynb"
    nb = json.loads(path.read_text(encoding="utf-8"))
    nb["cells"].append(code_cell(cell))
    path.write_text(json.dumps(nb), encoding="utf-8")
    mine = Parts({**good, nb_name: load_answers(nb_name, folder)}, {}, [])    # only the broken one is re-run
    assert mine[part] is not good[nb_name].__getattr__(part)
    names = CAPSTONE if broken == "FusionBlock without the skip" else CAPSTONE[:1]    # the same parts come first
    for name in names:
        with pytest.raises(CheckFailed) as info:
            run_check(name, capstone(mine))
        assert str(info.value).startswith(f"{name}: your {part} from {nb_name}.ipynb is wrong: "), info.value
        assert ("reference" in info.value.flags) == ("dptlearn's" in broken), info.value.flags


def test_a_lone_06_says_which_notebooks_it_needs(tmp_path, capsys):
    shutil.copy(SOLUTIONS / "06_dust3r_head.ipynb", tmp_path)
    mine = load_parts(tmp_path)
    assert repr(mine).count("✗ not in this folder") == 5
    with pytest.raises(MissingAnswers) as info:
        mine.FusionBlock
    assert info.value._render_traceback_() == [f"✗ MissingAnswers: {info.value}"]
    for name in CAPSTONE:
        with pytest.raises(CheckFailed, match=f"^{name}: 06_dust3r_head needs your answers from "
                                              r"01_tokens_and_hooks.ipynb, 02_rearrange.ipynb, .*05_head_and_"
                                              r"postprocess.ipynb in the same folder"):
            run_check(name, capstone(mine))


def test_a_part_the_notebook_does_not_define_is_named(good, tmp_path):
    broken = Parts({**good, "03_reassemble": load_answers("03_reassemble", _without(tmp_path, "Reassemble"))}, {}, [])
    with pytest.raises(CheckFailed, match=r"03_reassemble.ipynb defines no `Reassemble`"):
        run_check("MyDUSt3RHead", capstone(broken))


def _without(tmp_path: Path, name: str) -> Path:
    """A copy of 03_reassemble whose cell defining ``name`` is gone."""
    nb = json.loads((SOLUTIONS / "03_reassemble.ipynb").read_text(encoding="utf-8"))
    nb["cells"] = [c for c in nb["cells"] if f"class {name}(" not in "".join(c["source"])]
    (tmp_path / "03_reassemble.ipynb").write_text(json.dumps(nb), encoding="utf-8")
    return tmp_path


# ------------------------------------------------------------------ mistakes of 06's own code

class _Head(nn.Module):
    """MyDUSt3RHead written from the parts with one mistake switched on."""

    def __init__(self, parts, mistake, enc, dec, depth, feature_dim, last_dim, layer_dims, patch_size=16):
        super().__init__()
        self.parts, self.mistake, self.patch_size = parts, mistake, patch_size
        self.hooks = parts.hook_indices(depth)
        widths = [dec] * 4 if mistake == "widths" else [enc if h == 0 else dec for h in self.hooks]
        self.reassemble = parts.Reassemble(widths, layer_dims, feature_dim)
        self.fusion = nn.ModuleList(parts.FusionBlock(feature_dim, with_skip=i < 3 or mistake == "skip")
                                    for i in range(4))
        self.head = parts.RegressionHead(feature_dim, last_dim, 4)

    def forward(self, tokens, image_size):
        p = self.parts
        nh, nw = p.patch_grid(image_size, self.patch_size)
        grids = [p.tokens_to_grid(t, nh, nw) for t in p.select_hooked_tokens(tokens, self.hooks)]
        raw = self.head(p.fuse_pyramid(self.reassemble(grids), self.fusion))
        depth = ("linear" if self.mistake == "linear" else "exp", -math.inf, math.inf)
        return p.postprocess(raw, depth, ("exp", 0 if self.mistake == "conf" else 1, math.inf))


HEAD_MISTAKES = {
    "skip": "fusion[3] gets one input, so it has no skip unit",
    "widths": "the first hooked layer is the encoder's output",
    "linear": "the depth mode is not DUSt3R's",
    "conf": "the confidence mode is not DUSt3R's",
}


@pytest.mark.parametrize("mistake", [None] + sorted(HEAD_MISTAKES))
def test_a_wrong_assembly_is_named(mistake, good, capsys):
    mine = Parts(good, {}, [])
    obj = {**capstone(mine), "head": lambda *args: _Head(mine, mistake, *args)}
    if mistake is None:                     # the same head without a mistake passes
        run_check("MyDUSt3RHead", obj)
        assert capsys.readouterr().out.startswith("✓ MyDUSt3RHead: passed")
        return
    with pytest.raises(CheckFailed, match=re.escape(HEAD_MISTAKES[mistake])):
        run_check("MyDUSt3RHead", obj)


def _convert_wrong(kind):
    def convert(sd):
        out = {}
        for key, value in sd.items():
            k = key.removeprefix("dpt.")
            if kind == "head_swap" and k.startswith("head."):
                k = {"head.0": "head.4", "head.4": "head.0"}.get(k[:6], k[:6]) + k[6:]
            if kind == "swap_units":
                k = k.replace("resConfUnit1", "X").replace("resConfUnit2", "resConfUnit1").replace("X", "resConfUnit2")
            ours = _map(k, kind)
            if ours is not None:
                out[("dpt." if kind == "prefix" else "") + ours] = value
        return out
    return convert


def _map(k, kind):
    if re.fullmatch(r"scratch\.layer\d_rn\.weight", k):
        return f"reassemble.alias.{k[13]}.weight" if kind == "keep_alias" else None
    if k.startswith("scratch.refinenet4.resConfUnit1.") and kind not in ("keep_unused", "swap_units"):
        return None
    if kind == "swap_units" and k.startswith("scratch.refinenet4.resConfUnit2."):
        return None
    if m := re.fullmatch(r"act_postprocess\.(.*)", k):
        return f"reassemble.branches.{m[1]}"
    if m := re.fullmatch(r"scratch\.layer_rn\.(.*)", k):
        return f"reassemble.project.{m[1]}"
    if m := re.fullmatch(r"scratch\.refinenet(\d)\.(\w+)\.(.*)", k):
        unit = {"resConfUnit1": "skip_unit", "resConfUnit2": "unit", "out_conv": "out_conv"}[m[2]]
        if kind == "swap_units" and unit == "skip_unit" and m[1] == "4":
            unit = "unit"                               # refinenet4's unit after the add, renamed by the swap
        return f"fusion.{int(m[1]) - (0 if kind == 'off_by_one' else 1)}.{unit}.{m[3]}"
    m = re.fullmatch(r"head\.(\d)\.(.*)", k)
    return f"head.{ {'0': 'reduce', '2': 'refine', '4': 'predict'}[m[1]]}.{m[2]}"


CONVERT_MISTAKES = {
    "keep_unused": "refinenet4.resConfUnit1 is never used",
    "keep_alias": "aliases of scratch.layer_rn",
    "off_by_one": "refinenet{k} is fusion.{k-1}",
    "swap_units": "resConfUnit1 is the skip unit",
    "head_swap": "reduce / refine / predict",
    "prefix": "your head's keys have no 'dpt.' prefix",
}


@pytest.mark.parametrize("kind", sorted(CONVERT_MISTAKES))
def test_a_wrong_conversion_is_named(kind, good):
    obj = capstone(Parts(good, {}, []))
    with pytest.raises(CheckFailed, match=re.escape(CONVERT_MISTAKES[kind])):
        run_check("convert_dust3r_state_dict", {**obj, "convert": _convert_wrong(kind)})


def test_right_weights_in_a_wrong_head_blame_the_head(good):
    mine = Parts(good, {}, [])
    obj = {**capstone(mine), "head": lambda *args: _Head(mine, "conf", *args)}
    with pytest.raises(CheckFailed, match=r"^convert_dust3r_state_dict: your converted weights are right, but conf "
                                          r"on the 3x5 patch grid .* comes from your MyDUSt3RHead"):
        run_check("convert_dust3r_state_dict", obj)


# ------------------------------------------------------------------ one grading run

def test_grading_a_student_folder_and_a_lone_06(tmp_path):
    """Two students in one run (--jobs 2): alice hands in all six solutions, bob only 06."""
    subs = tmp_path / "subs"
    (subs / "alice").mkdir(parents=True)
    (subs / "bob").mkdir()
    for nb in SOLUTIONS.glob("*.ipynb"):
        shutil.copy(nb, subs / "alice")
    shutil.copy(SOLUTIONS / "06_dust3r_head.ipynb", subs / "bob")
    out = run_grader(str(subs), "--jobs", "2", "--report-dir", str(tmp_path / "report"))
    assert out.returncode == 0, out.stderr
    reports = {(r["student"], r["assignment"]): r for r in
               (json.loads(p.read_text()) for p in submission_reports(tmp_path / "report"))}
    alice, bob = reports["alice", "06_dust3r_head"], reports["bob", "06_dust3r_head"]
    assert alice["score"] == alice["max_score"] == 10, alice
    assert all(r["score"] == r["max_score"] and not any(e["flags"] for e in r["exercises"])
               for r in reports.values() if r["student"] == "alice")
    assert bob["score"] == 0 and bob["error"] is None, bob
    for ex in bob["exercises"]:
        assert ex["message"].startswith(f"{ex['id']}: 06_dust3r_head needs your answers from "
                                        "01_tokens_and_hooks.ipynb"), ex
        assert "Traceback" not in ex["message"] and "File \"" not in ex["message"] and not ex["flags"], ex
