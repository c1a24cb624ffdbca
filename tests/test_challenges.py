"""The challenge exercises of issue #23 item 3: find the bug (solutions/12) and predict (solutions/13).

- find the bug: the notebook's given cell is the check's ``BUGGY`` code and its solution the check's
  ``FIXED``; the fix passes, the given code fails, and planted wrong answers (a wrong fix, a change
  to a line that was right, the given code unchanged) fail with a message that names the mistake;
- predict: the checks' expected values are closed forms, tested here against numbers worked out by
  hand and against an independent count (a traced head, ``sum(p.numel())``); none of them is printed
  by a lecture; planted slips are named;
- transfer (solutions/09): Depth Anything V2-S's head from the solutions' parts equals transformers'
  DepthAnythingForDepthEstimation (random weights); planted mistakes (hooks, the crop, the last ReLU,
  the head's upsample, the CLS token, widths, a broken part) are named;
- through the real grader (``dptlearn-grade``), the solution notebooks score full marks (09 beside
  the solutions of 01-05) and notebooks with planted mistakes lose exactly those exercises, named.
"""
from __future__ import annotations

import json
import linecache
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from dptlearn.course import checks
from dptlearn.course.checks import bugs, predict
from dptlearn.course.checks.harness import CheckFailed
from dptlearn.course.exercises import BEGIN, END

from _helpers import ROOT, run_grader, submission_reports

BUGS_NB, PREDICT_NB = ROOT / "solutions" / "12_find_the_bug.ipynb", ROOT / "solutions" / "13_predict.ipynb"
BUG_CHECKS = [bugs.BugGrid, bugs.BugAlign, bugs.BugCrop, bugs.BugReadout, bugs.BugExp, bugs.BugInplace]
_N = [0]


def define(source: str, name: str):
    """``source`` run as if typed in a notebook cell (its text registered, so inspect.getsource works)."""
    _N[0] += 1
    filename = f"<challenge-test-{_N[0]}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    ns = {"torch": torch, "F": F, "nn": nn, "rearrange": rearrange}
    exec(compile(source, filename, "exec"), ns)  # noqa: S102 - the tests' own code
    return ns[name]


def cells(path: Path, ex: str) -> dict[str, str]:
    """role -> source of exercise ``ex``'s cells (given, solution with the markers removed, check)."""
    out = {}
    for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
        tags = cell["metadata"].get("tags", [])
        if f"ex:{ex}" in tags:
            src = "".join(cell["source"])
            for role in ("given", "solution", "check"):
                if role in tags:
                    out[role] = "\n".join(ln for ln in src.splitlines() if ln.strip() not in (BEGIN, END))
    return out


def verdict(check, obj) -> str:
    with pytest.raises(CheckFailed) as e:
        check(obj, device="cpu")
    return str(e.value)


# ------------------------------------------------------------------ find the bug

@pytest.mark.parametrize("cls", BUG_CHECKS, ids=lambda c: c.name)
def test_the_notebook_hands_out_the_checks_code_and_its_fix_passes(cls, capsys):
    c = cls()
    nb = cells(BUGS_NB, c.name)
    assert nb["given"] == c.BUGGY and nb["solution"] == c.FIXED
    assert nb["check"] == f"checks.{c.name}({c.function})" and checks.CHECKS[c.name] is not None
    assert len(c.bug) in (1, 2) and c.given[min(c.bug)] != bugs.statements(bugs.function_def(c.FIXED, c.function))[
        min(c.bug)]
    c(define(c.FIXED, c.function), device="cpu")
    assert capsys.readouterr().out.startswith(f"✓ {c.name}: passed")
    assert "still the code you were given" in verdict(c, define(c.BUGGY, c.function))


def test_comments_and_spacing_do_not_count_as_changes(capsys):
    c = bugs.BugCrop()
    fixed = c.FIXED.replace("    h, w = levels[2].shape[-2:]", "    # the finer level's size\n    h,w = levels[2].shape[ -2: ]")
    c(define(fixed, c.function), device="cpu")
    assert "passed" in capsys.readouterr().out


# (check, a planted wrong answer: (old, new) replacements of the given code, the message it must give).
# The behaviour is judged first: while it is wrong, the message gives the evidence only.
STILL = "the bug is still there"
PLANTED = [
    (bugs.BugGrid, [('"b (nw nh) c -> b c nh nw", nh=nh, nw=nw)', '"b (nh nw) c -> b c nh nw", nh=nh, nw=nw)'),
                    ("for h in hooks:", "for h in list(hooks):")], "you also changed `for h in hooks:`, which was right"),
    (bugs.BugGrid, [('grids.append(rearrange(t, "b (nw nh) c -> b c nh nw", nh=nh, nw=nw))',
                     "grids.append(t.reshape(t.shape[0], t.shape[2], nh, nw))")], "reshape instead of moving"),
    (bugs.BugGrid, [('"b (nw nh) c -> b c nh nw", nh=nh, nw=nw)', '"b (nh nw) c -> b c nh nw", nh=nh, nw=nw)'),
                    ("    H, W = image_size", "    B = len(tokens)\n    H, W = image_size")],
     "you also added `B = len(tokens)`"),
    (bugs.BugAlign, [('mode="bilinear")', 'mode="nearest")')], "nearest-neighbour upsampling"),
    (bugs.BugAlign, [('mode="bilinear")', 'mode="bilinear", align_corners=True)'), ("padding=1)\n        return",
                                                                                 "padding=1)\n        return 1.0 *")],
     "you also changed `return t + out`, which was right"),
    (bugs.BugCrop, [("path[..., -h:, -w:]", "path[..., -h:, :w]")], "you dropped the first row(s)"),
    (bugs.BugCrop, [("path[..., -h:, -w:]", "F.interpolate(path, size=(h, w), mode='bilinear', align_corners=True)")],
     "you resized the coarse path"),
    (bugs.BugReadout, [("F.gelu(F.linear(pairs, weight, bias))", "F.linear(torch.cat([patches, readout.expand_as("
                                                                  "patches)], dim=-1), weight, bias)")],
     "missing GELU after the Linear layer"),
    (bugs.BugReadout, [("[readout.expand_as(patches), patches]", "[patches, readout.expand_as(patches)]"),
                       ("F.gelu(F.linear", "F.relu(F.linear")], "ReLU where DPT uses GELU"),
    (bugs.BugReadout, [("[readout.expand_as(patches), patches]", "[patches, readout.expand_as(patches)]"),
                       ("readout = tokens[:, :1]", "readout = tokens[:, 0:1]")],
     "you also changed `readout = tokens[:, :1]`, which was right"),
    (bugs.BugExp, [("torch.exp(d)", "d")], "that is depth mode 'linear'"),
    (bugs.BugExp, [("torch.exp(d)", "torch.log1p(d)")], "log1p (ln(1 + d)) where DUSt3R uses expm1"),
    (bugs.BugExp, [("torch.exp(d)", "torch.expm1(d)"), ("raw.permute(0, 2, 3, 1)", "raw.permute(0, 2, 3, 1) * 1")],
     "you also changed `fmap = raw.permute(0, 2, 3, 1)`, which was right"),
    (bugs.BugExp, [("direction * torch.exp(d)", "xyz * torch.expm1(d)")], "you scaled the vector itself"),
    (bugs.BugInplace, [("F.conv2d(act(x), w1", "F.conv2d(x, w1")], "missing pre-activation"),
    (bugs.BugInplace, [("nn.ReLU(inplace=True)", "nn.LeakyReLU()")], "LeakyReLU where DUSt3R's unit uses ReLU"),
    (bugs.BugInplace, [("return x + out", "return x.clone() + out")], STILL),
    (bugs.BugInplace, [("nn.ReLU(inplace=True)", "nn.ReLU()"), ("return x + out", "return out + x")],
     "you also changed `return x + out`, which was right"),
]


@pytest.mark.parametrize("cls,edits,message", PLANTED, ids=[f"{c.name}-{i}" for i, (c, *_) in enumerate(PLANTED)])
def test_a_planted_wrong_answer_is_named(cls, edits, message):
    c = cls()
    src = c.BUGGY
    for old, new in edits:
        assert old in src, old
        src = src.replace(old, new)
    msg = verdict(c, define(src, c.function))
    assert message in msg and "the bug is elsewhere" not in msg


# a statement that was right, changed, with the bug left in: the verdict is the behaviour's evidence only
ELSEWHERE = [(bugs.BugGrid, "for h in hooks:", "for h in list(hooks):"),
             (bugs.BugAlign, 'out = unit(out, "resConfUnit2")', 'out = unit(out + 0.0, "resConfUnit2")'),
             (bugs.BugCrop, "for i in (2, 1, 0):", "for i in [2, 1, 0]:"),
             (bugs.BugReadout, "patches = tokens[:, 1:]", "patches = tokens[:, 1:].clone()"),
             (bugs.BugExp, "xyz = fmap[..., :3]", "xyz = fmap[..., 0:3]"),
             (bugs.BugInplace, "return x + out", "return out + x")]


@pytest.mark.parametrize("cls,old,new", ELSEWHERE, ids=[c.name for c, *_ in ELSEWHERE])
def test_changing_a_right_statement_while_the_bug_stays_names_no_statement(cls, old, new):
    c = cls()
    assert old in c.BUGGY
    msg = verdict(c, define(c.BUGGY.replace(old, new), c.function))
    assert STILL in msg and "which was right" not in msg and "`" not in msg, msg
    assert " on a " in msg or " on (" in msg            # the input that shows it


def test_an_answer_that_keeps_the_bug_in_a_rewritten_line_is_told_so():
    c = bugs.BugAlign()      # the bug's line changed, but to the same call: the output is still the given code's
    src = c.BUGGY.replace('mode="bilinear")', 'mode="bilinear", align_corners=False)')
    assert "your output on this input is still the given code's" in verdict(c, define(src, c.function))


@pytest.mark.parametrize("cls,old,new", [
    (bugs.BugGrid, "grids = []", "grids = list()"),                       # a trivial spelling is no change
    (bugs.BugInplace, "F.conv2d(act(x), w1", "F.conv2d(F.relu(x), w1"),  # the one change, at the ReLU's first use
    (bugs.BugReadout, "F.linear(pairs, weight, bias)",                     # the one change: the weight's halves
     "F.linear(pairs, weight.roll(weight.shape[1] // 2, dims=1), bias)"),
])
def test_one_change_in_one_place_that_fixes_the_behaviour_passes(cls, old, new, capsys):
    c = cls()
    src = (c.FIXED if old == "grids = []" else c.BUGGY).replace(old, new)
    assert src != c.BUGGY
    c(define(src, c.function), device="cpu")
    assert "passed" in capsys.readouterr().out


def test_an_input_changed_in_place_is_named():
    from dptlearn.course import probe

    c = bugs.BugInplace()
    ok = define(c.FIXED, c.function)
    case = c.case(0)
    results = probe.execute(ok, case.plan, "cpu")
    results[1]["mutated"] = [0]                   # right values, but x overwritten in place
    with pytest.raises(CheckFailed, match="still changes its input x in place"):
        c.judge(case, results)


def test_a_fix_that_calls_dptlearns_reference_is_flagged():
    c = bugs.BugExp()
    src = c.BUGGY.replace("return direction * torch.exp(d)",
                          "import dptlearn.postprocess\n    return dptlearn.postprocess.depth_activation(xyz, ('exp',))")
    with pytest.raises(CheckFailed) as e:
        c(define(src, c.function), device="cpu")
    assert "reference" in e.value.flags and "uses dptlearn.postprocess.depth_activation" in str(e.value)


def test_a_non_function_and_another_name_are_refused():
    c = bugs.BugExp()
    assert "hand in the function itself" in verdict(c, 3)
    assert "defines no `def points_from_raw`" in verdict(c, define(c.FIXED.replace("def points_from_raw",
                                                                                  "def pts"), "pts"))


# ------------------------------------------------------------------ predict

def solution_value(path: Path, ex: str, name: str):
    ns: dict = {}
    exec(cells(path, ex)["solution"], ns)  # noqa: S102 - our own solution notebook
    return ns[name]


def test_the_shapes_closed_form_matches_hand_values_and_a_traced_head():
    from dptlearn.dust3r import dust3r_dpt_head
    from dptlearn.export import example_tokens
    from dptlearn.viz.trace import trace_head

    want = predict.dust3r_shapes(**predict.CONFIG)
    # by hand: 512 / 16 = 32 rows, 336 / 16 = 21 columns; ceil(21 / 2) = 11; 2 * 11 = 22 columns, crop to 21
    assert want["tokens[12]"] == (1, 672, 768) and want["reassemble.branches.3"] == (1, 768, 16, 11)
    assert want["fusion.3"] == (1, 256, 32, 22) and want["crop"] == (1, 256, 32, 21)
    assert want["fusion.0"] == (1, 256, 256, 168) and want["pts3d"] == (1, 512, 336, 3) and len(want) == 26
    head = dust3r_dpt_head(device="cpu")
    rows = {r.name: r.output for r in trace_head(head, example_tokens(head, (512, 336)), (512, 336)).rows}
    traced = {k: tuple(rows[k] if k in rows else rows["postprocess"][k]) for k in want}
    assert traced == want


def test_the_params_closed_form_matches_hand_values_and_the_head():
    from dptlearn.dpt_large import dpt_large_head

    want = predict.head_params(**predict.DPT_LARGE)
    # by hand: Linear(2048 -> 1024) per hooked layer; lecture 09 prints 8,392,704 for the four
    assert want["readout"] == 4 * (2048 * 1024 + 1024) == 8_392_704
    assert want["head"] == 128 * 256 * 9 + 128 + 32 * 128 * 9 + 32 + 32 + 1 == 331_969
    assert want["fusion"] == 7 * 2 * (256 * 256 * 9 + 256) + 4 * (256 * 256 + 256) == 8_524_288
    state = dpt_large_head(device="cpu").state_dict()
    for part in ("readout", "reassemble.branches", "reassemble.project", "fusion", "head"):
        assert want[part] == sum(v.numel() for k, v in state.items() if k.startswith(f"dpt.{part}.")), part
    assert want["total"] == sum(v.numel() for v in state.values()) == 38_159_553


def test_no_lecture_prints_the_predicted_values():
    """The portrait shapes and DPT-Large's part counts are in no lecture's text or stored output
    (lecture 09 prints DPT-Large's total and its readout's count; the card says so)."""
    text = "".join(p.read_text(encoding="utf-8") for p in (ROOT / "notebooks").glob("*.ipynb"))
    want = predict.head_params(**predict.DPT_LARGE)
    for needle in ("256, 32, 22", "768, 16, 11", "256, 256, 168", "128, 512, 336", "512, 336, 3"):
        assert needle not in text, needle
    for part in ("reassemble.branches", "reassemble.project", "fusion", "head"):
        for spelled in (f"{want[part]:,}", f"{want[part]:_}", str(want[part])):
            assert spelled not in text, (part, spelled)


def test_the_predict_plans_are_one_value_step_under_every_seed():
    for check in (checks.predict_shapes, checks.predict_params):
        assert check.case(0).plan == check.case(12345).plan == [{"op": "value", "what": check.case(0).plan[0]["what"]}]


def test_the_predict_solutions_pass(capsys):
    checks.predict_shapes(solution_value(PREDICT_NB, "predict_shapes", "predicted_shapes"), device="cpu")
    checks.predict_params(solution_value(PREDICT_NB, "predict_params", "predicted_params"), device="cpu")
    out = capsys.readouterr().out
    assert "✓ predict_shapes: passed" in out and "✓ predict_params: passed" in out


def planted_shapes(**changes):
    return {**predict.dust3r_shapes(**predict.CONFIG), **changes}


@pytest.mark.parametrize("changes,message", [
    ({"to_grid.0": (1, 1024, 21, 32)}, "rows and columns swapped"),
    ({"reassemble.branches.3": (1, 768, 16, 10), "reassemble.project.3": (1, 256, 16, 10)}, "rounds up, not down"),
    ({"fusion.3": (1, 256, 32, 21)}, "fusion.3 only doubles the coarsest level"),
    ({"pts3d": (1, 3, 512, 336)}, "moves the channels last"),
    ({"tokens[0]": (1, 673, 1024)}, "no CLS token"),
    ({"fusion.2": (1, 384, 64, 42)}, "feature_dim channels"),
    ({"head": (1, 3, 512, 336)}, "3 coordinates and a confidence"),
    ({"crop": (1, 256, 32.0, 21)}, "a tuple of ints"),
])
def test_planted_shape_slips_are_named(changes, message):
    msg = verdict(checks.predict_shapes, planted_shapes(**changes))
    assert message in msg
    assert "(1, 256, 32, 22)" not in msg and "(1, 768, 16, 11)" not in msg      # the right values stay unsaid


def test_a_missing_stage_is_listed():
    shapes = planted_shapes()
    del shapes["crop"]
    assert "1 stage(s) missing from your dict: crop" in verdict(checks.predict_shapes, shapes)


@pytest.mark.parametrize("slip,message", [
    ({"bias": False}, "you left out the biases"),
    ({"unused_unit": True}, "skip unit for fusion[3]"),
    ({"one_readout": True}, "readout projection of its own"),
    ({"readout_in": 1}, "2C inputs"),
    ({"project_bias": True}, "reassemble.project's 3x3 convs have no bias"),
])
def test_planted_param_slips_are_named(slip, message):
    got = predict.head_params(**{**predict.DPT_LARGE, **slip})
    msg = verdict(checks.predict_params, got)
    assert message in msg and f"{predict.head_params(**predict.DPT_LARGE)['total']:,}" not in msg


def test_a_total_that_is_not_the_sum_is_named():
    got = predict.head_params(**predict.DPT_LARGE)
    got["total"] += 1
    assert "the total is not their sum" in verdict(checks.predict_params, got)


def test_the_first_wrong_shape_and_the_count_are_named_not_the_others():
    msg = verdict(checks.predict_shapes, planted_shapes(**{"to_grid.0": (1, 1024, 21, 32), "conf": (1, 336, 512),
                                                           "head": (1, 3, 512, 336)}))
    assert "3 of 26 shapes are wrong; the first, to_grid.0" in msg
    assert "conf" not in msg and "head" not in msg.split("—")[0]
    assert "1 of 26 shapes is wrong; the first, conf" in verdict(checks.predict_shapes,
                                                                 planted_shapes(conf=(1, 336, 512)))


TRACE_CELLS = [   # lecture 00's way to the shapes, and lecture 09's to the counts, typed into the kernel
    "import dptlearn\nfrom dptlearn import checks",
    "from dptlearn.dust3r import dust3r_dpt_head\n\ndef trace_head(W, H):\n    head = dust3r_dpt_head()\n"
    "    return {}\n",
    "predicted_shapes = trace_head(336, 512)",
]
PARAM_CELLS = ["import dptlearn.dpt_large",
               "m = dptlearn.dpt_large.dpt_large_head()\npredicted_params = {'total': sum(p.numel() for p in m.parameters())}"]


@pytest.mark.parametrize("name,cells_run,used", [
    ("predict_shapes", TRACE_CELLS, "dptlearn.dust3r.dust3r_dpt_head"),
    ("predict_params", PARAM_CELLS, "dptlearn.dpt_large.dpt_large_head"),
])
def test_an_answer_worked_out_with_dptlearns_head_fails_the_notebook_check(monkeypatch, name, cells_run, used):
    """The value handed in is right (the solution's), but the kernel computed it with the head: the check
    cell says what the grader will (its stub raises ReferenceUseError "uses dptlearn.<mod>.<name>, ...")."""
    from dptlearn.course.checks import kernel
    monkeypatch.setattr(kernel, "kernel_cells", lambda: cells_run)
    answer = solution_value(PREDICT_NB, name, checks.CHECKS[name].kernel_answer)
    with pytest.raises(CheckFailed) as e:
        checks.CHECKS[name](answer, device="cpu")
    assert f"uses {used}, the reference for this exercise" in str(e.value) and "reference" in e.value.flags


def test_head_use_is_read_from_the_cells_as_they_ran():
    from dptlearn.course.checks.kernel import head_uses
    assert head_uses(TRACE_CELLS, "predicted_shapes") == [(1, "dust3r.dust3r_dpt_head")]
    assert head_uses(["from dptlearn.dust3r import dust3r_dpt_head", "predicted_shapes = {}"], "predicted_shapes") == []
    # after the answer's last assignment a cell may run the head (to compare): the grader scores the answer alone
    assert head_uses(["predicted_shapes = {}", "import dptlearn\ndptlearn.dust3r_dpt_head()"], "predicted_shapes") == []
    assert head_uses(["import dptlearn.grid as g\nx = g.patch_grid", "y = dptlearn.get_device()",
                      "from dptlearn.course import checks\nchecks.predict_shapes"], None) == [(0, "grid.patch_grid")]


def test_the_predict_check_passes_when_the_kernel_worked_it_out_by_hand(monkeypatch, capsys):
    from dptlearn.course.checks import kernel
    monkeypatch.setattr(kernel, "kernel_cells", lambda: TRACE_CELLS[:1] + ["predicted_shapes = {}"])
    checks.predict_shapes(solution_value(PREDICT_NB, "predict_shapes", "predicted_shapes"), device="cpu")
    assert "✓ predict_shapes: passed" in capsys.readouterr().out


@pytest.mark.slow
def test_the_grader_scores_an_answer_worked_out_with_dptlearns_head_0(tmp_path):
    subs = tmp_path / "subs"
    (subs / "cy").mkdir(parents=True)
    planted = json.loads(PREDICT_NB.read_text(encoding="utf-8"))
    _plant(planted, "predict_params", "predicted_params = {",
           "from dptlearn.dpt_large import dpt_large_head\n_n = sum(p.numel() for p in dpt_large_head().parameters())"
           "\npredicted_params = {")
    (subs / "cy" / PREDICT_NB.name).write_text(json.dumps(planted), encoding="utf-8")
    out = run_grader(str(subs), "--jobs", "1", "--report-dir", str(tmp_path / "report"))
    assert out.returncode == 0, out.stderr
    (report,) = [json.loads(p.read_text()) for p in submission_reports(tmp_path / "report")]
    ex = {e["id"]: e for e in report["exercises"]}
    assert ex["predict_params"]["points"] == 0 and ex["predict_shapes"]["points"] == 3, report
    assert "uses dptlearn.dpt_large.dpt_large_head, the reference for this exercise" in ex["predict_params"]["message"]


# ------------------------------------------------------------------ through the real grader

def _plant(nb: dict, ex: str, old: str, new: str) -> None:
    for cell in nb["cells"]:
        tags = cell["metadata"].get("tags", [])
        if f"ex:{ex}" in tags and "solution" in tags:
            src = "".join(cell["source"])
            assert old in src, (ex, old)
            cell["source"] = src.replace(old, new).splitlines(True)


@pytest.mark.slow
def test_the_grader_gives_the_solutions_full_marks_and_names_planted_mistakes(tmp_path):
    subs = tmp_path / "subs"
    (subs / "ada").mkdir(parents=True)
    (subs / "bob").mkdir()
    for nb in (ROOT / "solutions").glob("0[1-5]_*.ipynb"):      # 09 builds its head from 01-05
        shutil.copy(nb, subs / "ada")
    shutil.copy(ROOT / "solutions" / "09_transfer.ipynb", subs / "ada")
    for nb in (BUGS_NB, PREDICT_NB):
        shutil.copy(nb, subs / "ada")
        planted = json.loads(nb.read_text(encoding="utf-8"))
        if nb == BUGS_NB:
            _plant(planted, "bug_fuse_levels", "path[..., :h, :w]", "path[..., -h:, :w]")
            _plant(planted, "bug_fusion_block", 'mode="bilinear", align_corners=True)', 'mode="nearest")')
        else:
            _plant(planted, "predict_shapes", '"fusion.3": (1, 256, 2 * 16, 2 * 11)', '"fusion.3": (1, 256, 32, 21)')
            _plant(planted, "predict_params", "fusion = 3 * (2 * unit + out_conv) + (unit + out_conv)",
                   "fusion = 4 * (2 * unit + out_conv)")
        (subs / "bob" / nb.name).write_text(json.dumps(planted), encoding="utf-8")
    out = run_grader(str(subs), "--jobs", "2", "--report-dir", str(tmp_path / "report"))
    assert out.returncode == 0, out.stderr
    reports = {(r["student"], r["assignment"]): r for r in
               (json.loads(p.read_text()) for p in submission_reports(tmp_path / "report"))}
    for name, full in (("12_find_the_bug", 12), ("13_predict", 6), ("09_transfer", 10)):
        ada = reports["ada", name]
        assert ada["score"] == ada["max_score"] == full, ada
        assert not any(e["flags"] for e in ada["exercises"]), ada
    bob = {e["id"]: e for name in ("12_find_the_bug", "13_predict") for e in reports["bob", name]["exercises"]}
    assert reports["bob", "12_find_the_bug"]["score"] == 8 and reports["bob", "13_predict"]["score"] == 0
    assert "you dropped the first row(s)" in bob["bug_fuse_levels"]["message"]
    assert "nearest-neighbour upsampling" in bob["bug_fusion_block"]["message"]
    assert "fusion.3 only doubles the coarsest level" in bob["predict_shapes"]["message"]
    assert "skip unit for fusion[3]" in bob["predict_params"]["message"]


# ------------------------------------------------------------------ transfer (09): Depth Anything V2-S

TRANSFER_NB = ROOT / "solutions" / "09_transfer.ipynb"


@pytest.fixture(scope="module")
def parts():
    from dptlearn.course.answers import PARTS, Parts, load_answers
    return Parts({nb: load_answers(nb, ROOT / "solutions") for nb in PARTS}, {}, [])


def transfer(parts, *edits) -> dict:
    """What 09's check cell hands in, with the solution cells edited by ``(old, new)`` pairs."""
    src = "\n".join(ln for cell in json.loads(TRANSFER_NB.read_text(encoding="utf-8"))["cells"]
                    if "solution" in cell["metadata"].get("tags", []) for ln in "".join(cell["source"]).splitlines())
    for old, new in edits:
        assert old in src, old
        src = src.replace(old, new)
    ns = {"torch": torch, "F": F, "nn": nn, "rearrange": rearrange, "mine": parts,
          "ReadoutProject": parts._loaded["01_tokens_and_hooks"].ReadoutProject}
    exec(src, ns)  # noqa: S102 - our own solution notebook
    return {"parts": parts, "head": ns["MyDepthAnythingHead"], "dpt_large": ns["MyDPTLargeHead"],
            "readout": ns["ReadoutProject"]}


def dpt_large(obj: dict) -> dict:
    return {"parts": obj["parts"], "readout": obj["readout"], "head": obj["dpt_large"]}


def test_the_transfer_solutions_match_transformers(parts, capsys):
    checks.transfer_depth_anything(transfer(parts), device="cpu")
    checks.transfer_dpt_large(dpt_large(transfer(parts)), device="cpu")
    out = capsys.readouterr().out
    assert "✓ transfer_depth_anything: passed" in out and "transformers' DepthAnythingForDepthEstimation" in out
    assert "✓ transfer_dpt_large: passed" in out and "transformers' DPTForDepthEstimation" in out


@pytest.mark.parametrize("edits,message", [
    ([("(5, 11, 17, 23), 16", "(4, 10, 16, 22), 16")], "one block early"),
    ([("(5, 11, 17, 23), 16", "(2, 5, 8, 11), 16")], "DPT-Base's"),
    ([("if level.shape[-2:] != path.shape[-2:]:", "if False:"),
      ("path = self.fusion[3](levels[3])", "path = self.fusion[3](levels[3])[..., :levels[2].shape[-2], "
                                           ":levels[2].shape[-1]]")], "transformers' DPT does not crop"),
    ([("return F.relu(self.head(path)).squeeze(1)", "return self.head(path).squeeze(1)")], "ends with a ReLU"),
    ([('mode="bilinear", align_corners=False)\n            path = self.fusion[i]',
       'mode="bilinear", align_corners=True)\n            path = self.fusion[i]')],
     "the skip's resize uses align_corners=True"),
    ([("grids = [mine.tokens_to_grid(r(t), nh, nw)", "grids = [mine.tokens_to_grid(t[:, 1:], nh, nw)")],
     "each hooked layer has a ReadoutProject of its own"),
])
def test_planted_dpt_large_mistakes_are_named(parts, edits, message):
    obj = transfer(parts, *edits)
    if message == "each hooked layer has a ReadoutProject of its own":     # no readout modules at all
        obj = transfer(parts, *edits, ("self.readout = nn.ModuleList(ReadoutProject(hidden_size) for _ in range(4))",
                                       "self.readout = None"))
    assert message in verdict(checks.transfer_dpt_large, dpt_large(obj))


def test_the_readout_order_mistake_is_named(parts):
    """The learner's ReadoutProject (from 01) joined the other way round: its own check names it first."""
    from dptlearn.course.answers import Answers, Parts
    right = parts._loaded["01_tokens_and_hooks"].ReadoutProject

    class Flipped(right):
        def forward(self, x):
            patches = x[:, 1:]
            return self.project(torch.cat([x[:, :1].expand_as(patches), patches], dim=-1))
    obj = dpt_large(transfer(parts))
    msg = verdict(checks.transfer_dpt_large, {**obj, "readout": Flipped})
    assert msg.startswith("transfer_dpt_large: your ReadoutProject from 01_tokens_and_hooks.ipynb is wrong")
    assert "concatenation order" in msg


def test_the_transfer_reference_is_transformers_itself():
    """The expected depth is model.neck + model.head of transformers' model; dptlearn's copy of the same weights
    (what the known mistakes run on) agrees with it to float32 round-off, and the maps are not degenerate."""
    from dptlearn.course.checks import transfer as tr
    case = checks.transfer_depth_anything.case(7)
    for tokens, size, want in case.data["runs"]:
        positive = (want > 0).float().mean()       # both sides of the last ReLU occur: a missing ReLU shows
        assert want.shape == (2, *size) and 0.2 < positive < 0.8 and want.std() > 1e-3 * want.abs().max()
        with torch.no_grad():
            ours = case.data["ref"]([tokens[h] for h in tr.DA_HOOKS], size)
        # float32, ~20 layers deep: allow 1e-4 of the map's largest value (eps is 1.2e-7)
        assert (ours - want).abs().max() <= 1e-4 * want.abs().max()


@pytest.mark.parametrize("edits,message", [
    ([("(2, 5, 8, 11), 14", "(0, 5, 8, 11), 14")], "DUSt3R's rule"),
    ([("(2, 5, 8, 11), 14", "(1, 4, 7, 10), 14")], "one block early"),
    ([("path = fuse(3, levels[3], None, levels[2].shape[-2:])",
       "path = fuse(3, levels[3], None, (2 * levels[3].shape[-2], 2 * levels[3].shape[-1]))"
       "[..., :levels[2].shape[-2], :levels[2].shape[-1]]")], "you cropped the doubled coarsest path"),
    ([("depth = F.relu(self.head.predict(", "depth = (self.head.predict(")], "ends with a ReLU"),
    ([("size=tuple(image_size), mode", "scale_factor=2, mode")], "not x2"),
    ([("layers = [t[:, 1:] for t in", "layers = [t for t in")], "CLS token first"),
    ([("mine.Reassemble([384] * 4, (48, 96, 192, 384), 64)", "mine.Reassemble([384] * 4, (96, 192, 384, 768), 64)")],
     "check the widths against lecture 09's table"),
])
def test_planted_transfer_mistakes_are_named(parts, edits, message):
    assert message in verdict(checks.transfer_depth_anything, transfer(parts, *edits))


def test_a_broken_part_is_named_with_its_notebook(parts):
    from dptlearn.course.answers import Answers, Parts
    right = parts["FusionBlock"]

    class Swapped(right):          # 04's known mistake: the path goes through skip_unit, the level does not
        def forward(self, x, skip=None):
            return super().forward(x) if skip is None else super().forward(skip, x)
    loaded = dict(parts._loaded)
    a = loaded["04_refinenet_fusion"]
    loaded["04_refinenet_fusion"] = Answers(a.assignment, a.path, {**a._ns, "FusionBlock": Swapped}, [])
    msg = verdict(checks.transfer_depth_anything, transfer(Parts(loaded, {}, [])))
    assert msg.startswith("transfer_depth_anything: your FusionBlock from 04_refinenet_fusion.ipynb is wrong")
    assert "swapped" in msg


def test_log1p_for_expm1_and_a_leaky_relu_are_named_by_the_exercise_checks():
    """#23 learner: the likely slips of 05's depth_activation and 04's residual_conv_unit, named as such."""
    def log1p_depth(xyz, mode):
        if mode[1:] != (-float("inf"), float("inf")):
            raise ValueError("bounded")
        d = xyz.norm(dim=-1, keepdim=True)
        u = xyz / d.clamp(min=1e-8)
        return {"linear": xyz, "square": u * d.square(), "exp": u * torch.log1p(d)}[mode[0]]

    def leaky_unit(x, w1, b1, w2, b2):
        out = F.conv2d(F.leaky_relu(x), w1, b1, padding=1)
        return x + F.conv2d(F.leaky_relu(out), w2, b2, padding=1)

    assert "log1p (ln(1 + d)) where DUSt3R uses expm1" in verdict(checks.depth_activation, log1p_depth)
    assert "LeakyReLU where DUSt3R's unit uses ReLU" in verdict(checks.residual_conv_unit, leaky_unit)


def test_the_transfer_checks_import_transformers_without_tqdms_ipywidgets_notice():
    """The 09 check cells printed tqdm's "IProgress not found" (transformers imports tqdm.auto in a kernel
    without ipywidgets); the filter is scoped to that import, so other warnings still show."""
    import warnings

    from dptlearn.course.checks import transfer as tr
    before = list(warnings.filters)
    assert tr._transformers().__name__ == "transformers"
    assert warnings.filters == before
    assert "IProgress" not in TRANSFER_NB.read_text(encoding="utf-8")
