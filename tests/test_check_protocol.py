"""The checks' three-phase protocol: ``Check.case(seed)`` (trusted) -> ``probe.execute`` (kernel)
-> ``Check.judge`` (trusted), as a grader uses it.

- every check passes the solution code of solutions/*.ipynb, under seed 0 and under another seed;
- plans and results are pure data: they survive torch.save / torch.load(weights_only=True);
- forged results fail: wrong length, wrong types, random tensors, another seed's answers;
- a different seed gives different inputs;
- probe.py imports nothing from dptlearn, and runs standalone (``record`` included);
- every way of delegating to dptlearn's reference fails with the flag "reference";
- the stand-ins make wrong wirings visible (fuse_pyramid).
"""
from __future__ import annotations

import ast
import importlib.util
import io
import json
import linecache
import math
import re
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from dptlearn import checks
from dptlearn import fusion as fu
from dptlearn import grid as gr
from dptlearn.course import probe
from dptlearn.course.answers import PARTS, Answers, Parts
from dptlearn.course.checks import CHECKS, CheckFailed
from dptlearn.course.grading.checkcells import parse_check_cell

from _helpers import ROOT


def solution_objects() -> dict:
    """Every exercise's object, from the solution cells of solutions/*.ipynb (one namespace per notebook):
    what its check cell hands to the check, e.g. ``{"parts": mine, "head": MyDUSt3RHead}`` in 06, where
    ``mine`` is what the capstone's ``load_parts()`` gives (a ``Parts``): each part from the namespace of
    its own notebook's solution cells (a notebook not run yet: ``MissingAnswers`` when one of its parts is used)."""
    found, answers = {}, {}
    for path in sorted((ROOT / "solutions").glob("*.ipynb")):
        later = [nb for nb in PARTS if nb not in answers]
        mine = Parts(dict(answers), {nb: f"{nb} is run after {path.stem}" for nb in later}, [])
        ns = {"math": math, "re": re, "torch": torch, "F": F, "nn": nn, "rearrange": rearrange, "mine": mine}
        if "01_tokens_and_hooks" in answers:    # 09's set-up cell loads 01's ReadoutProject for DPT-Large
            ns["ReadoutProject"] = answers["01_tokens_and_hooks"].ReadoutProject
        checked = []
        for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
            tags = cell.get("metadata", {}).get("tags", [])
            if "solution" in tags:   # registered like a notebook cell: find-the-bug checks read the source
                name = f"<{path.stem} cell {len(linecache.cache)}>"
                src = "".join(cell["source"])
                linecache.cache[name] = (len(src), None, src.splitlines(True), name)
                exec(compile(src, name, "exec"), ns)  # noqa: S102 - our own solution notebooks
            if "check" in tags:
                checked.append(parse_check_cell("".join(cell["source"])))
        found.update({c.check: eval(c.answer, ns) for c in checked})  # noqa: S307 - our own check cells
        if path.stem in PARTS:
            answers[path.stem] = Answers(path.stem, path, ns, [])
    assert set(answers) == set(PARTS), "a notebook of the capstone's parts is missing from solutions/"
    return found


SOLUTIONS = solution_objects()


def roundtrip(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def run(name: str, student, seed: int = 0):
    check = CHECKS[name]
    case = check.case(seed)
    return check, case, probe.execute(student, roundtrip(case.plan), "cpu")


def test_solutions_cover_every_check():
    assert set(SOLUTIONS) == set(CHECKS) and len(CHECKS) == 31     # 21 + 10 challenges (09, 12, 13)


@pytest.mark.parametrize("seed", [0, 987654321])
@pytest.mark.parametrize("name", sorted(CHECKS))
def test_solution_passes_through_the_three_phases(name, seed):
    check, case, results = run(name, SOLUTIONS[name], seed)
    what = check.judge(case, roundtrip(results))
    assert isinstance(what, str) and what


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_plan_and_results_are_pure_data(name):
    check, case, results = run(name, SOLUTIONS[name])
    for data in (case.plan, results):
        buf = io.BytesIO()
        torch.save(data, buf)
        buf.seek(0)
        torch.load(buf, weights_only=True)      # raises on anything that is not plain data
    assert all(isinstance(r, dict) and "calls" in r for r in results)
    assert all(t.device.type == "cpu" for t in _tensors(results))


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)


def _flat(obj) -> list:
    """Every leaf of plan data, tensors as lists of numbers."""
    if isinstance(obj, torch.Tensor):
        return obj.flatten().tolist()
    if isinstance(obj, dict):
        return [x for k in sorted(obj, key=str) for x in [k] + _flat(obj[k])]
    if isinstance(obj, (list, tuple)):
        return [x for v in obj for x in _flat(v)]
    return [obj]


# the predict challenges (13) have no inputs: their answer is a fact of DUSt3R's or DPT-Large's head, the same
# under every seed (tests/test_challenges.py: their plan is one "value" step)
SEEDED = sorted(set(CHECKS) - {"predict_shapes", "predict_params"})


@pytest.mark.parametrize("name", SEEDED)
def test_a_different_seed_gives_different_inputs_and_the_same_seed_the_same(name):
    check = CHECKS[name]
    assert _flat(check.case(0).plan) == _flat(check.case(0).plan)
    assert _flat(check.case(0).plan) != _flat(check.case(1).plan)


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_forged_results_fail(name):
    check, case, results = run(name, SOLUTIONS[name])
    forged = [
        results[:-1],                                           # one step short
        results + [results[-1]],                                # one step too many
        [{"value": "✓ passed"} for _ in results],               # wrong types
        [{"calls": []} for _ in results],                       # neither value nor exception
        "passed",
    ]
    for bad in forged:
        with pytest.raises(CheckFailed) as info:
            check.judge(case, bad)
        assert str(info.value).startswith(f"{name}: ")
    if any(True for _ in _tensors(results)):
        g = torch.Generator().manual_seed(0)
        noisy = _map_tensors(results, lambda t: torch.randn(t.shape, generator=g).to(t.dtype)
                             if t.is_floating_point() else t)
        with pytest.raises(CheckFailed):
            check.judge(case, noisy)


def _map_tensors(obj, fn):
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map_tensors(v, fn) for v in obj)
    if isinstance(obj, dict):
        return {k: _map_tensors(v, fn) for k, v in obj.items()}
    return obj


@pytest.mark.parametrize("name", SEEDED)
def test_answers_recorded_for_another_seed_fail(name):
    check = CHECKS[name]
    _, _, other = run(name, SOLUTIONS[name], seed=1)
    with pytest.raises(CheckFailed):
        check.judge(check.case(0), other)


def test_learner_mode_is_the_three_phases_with_seed_0(capsys):
    checks.tokens_to_grid(SOLUTIONS["tokens_to_grid"], device="cpu")
    check, case, results = run("tokens_to_grid", SOLUTIONS["tokens_to_grid"])
    assert capsys.readouterr().out == f"✓ tokens_to_grid: passed ({check.judge(case, results)})\n"
    assert issubclass(CheckFailed, AssertionError)


# ------------------------------------------------------------------ probe.py stands alone

def test_probe_imports_only_torch_and_the_standard_library():
    tree = ast.parse((ROOT / "dptlearn/course/probe.py").read_text(encoding="utf-8"))
    tops = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            tops |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "probe.py must not import relatively (that is dptlearn)"
            tops.add(node.module.split(".")[0])
    assert not {t for t in tops if t not in sys.stdlib_module_names and t not in ("torch", "__future__")}, tops


def test_probe_records_standalone_without_dptlearn(tmp_path):
    # The grading sandbox has probe.py and no dptlearn head: load it from its file, record an answer.
    check = CHECKS["tokens_to_grid"]
    case = check.case(7)
    (tmp_path / "cases").mkdir()
    torch.save(case.plan, tmp_path / "cases" / "ex1.pt")
    script = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('probe', {str(ROOT / 'dptlearn/course/probe.py')!r})\n"
        "probe = importlib.util.module_from_spec(spec); spec.loader.exec_module(probe)\n"
        "from einops import rearrange\n"
        "probe.record('ex1', 'tokens_to_grid', lambda t, nh, nw: rearrange(t, 'b (nh nw) c -> b c nh nw', nh=nh, nw=nw))\n"
        "probe.record('ex2', 'tokens_to_grid', lambda *a: 1 / 0)\n"
        "assert not [m for m in sys.modules if m.startswith('dptlearn')], sys.modules\n")
    (tmp_path / "cases" / "ex2.pt").write_bytes((tmp_path / "cases" / "ex1.pt").read_bytes())
    env = {"DPTLEARN_PROBE_DIR": str(tmp_path), "DPTLEARN_DEVICE": "cpu", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [f"answer recorded for ex{i}; the grader checks it outside the notebook"
                                       for i in (1, 2)]
    good = torch.load(tmp_path / "results" / "ex1.pt", weights_only=True)
    assert good["check"] == "tokens_to_grid"
    assert check.judge(case, good["results"])
    bad = torch.load(tmp_path / "results" / "ex2.pt", weights_only=True)
    assert bad["results"][0]["raised"] == "ZeroDivisionError"
    with pytest.raises(CheckFailed, match="raised ZeroDivisionError"):
        check.judge(case, bad["results"])
    assert not list((tmp_path / "results").glob("*.tmp"))


def test_non_data_values_are_described_and_numbers_made_plain():
    import numpy as np
    plan = [{"op": "call", "fn": None, "args": [], "kwargs": {}, "what": "f()"}]
    [r] = probe.execute(lambda: {"a": nn.ReLU(), "b": (1, "x", None), "c": torch.Size([2, 3]),
                                 "d": [np.int64(4), np.float32(0.5)], np.int64(7): np.zeros(2)}, plan, "cpu")
    assert r["value"] == {"a": {"type": "ReLU"}, "b": (1, "x", None), "c": (2, 3), "d": [4, 0.5],
                          7: {"type": "ndarray"}}
    assert [type(v) for v in r["value"]["d"]] == [int, float]
    assert roundtrip(r) == r


# ------------------------------------------------------------------ using the reference

class _OwnRCU(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, 3, padding=1)
        self.conv2 = nn.Conv2d(dim, dim, 3, padding=1)


class _Subclass(fu.ResidualConvUnit):
    pass


class _BorrowedForward(_OwnRCU):
    forward = fu.ResidualConvUnit.forward


class _HiddenInstance(_OwnRCU):
    """Registers its own convs, runs an unregistered reference copy of them."""

    def __init__(self, dim):
        super().__init__(dim)
        object.__setattr__(self, "_ref", [fu.ResidualConvUnit(dim)])

    def forward(self, x):
        ref = self._ref[0].to(x.device)
        ref.load_state_dict(self.state_dict())
        return ref(x)


def _importlib_copy():
    spec = importlib.util.spec_from_file_location("my_grid", gr.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.tokens_to_grid


def _profile_off(t, nh, nw):
    sys.setprofile(None)
    return gr.tokens_to_grid(t, nh, nw)


class ReferenceUseError(RuntimeError):
    """What the grading sandbox's stubs of the head raise."""


def _stub(*args):   # as the grading view's stub of dptlearn.grid.tokens_to_grid
    raise ReferenceUseError("uses dptlearn.grid.tokens_to_grid, the reference for this exercise: write your own")


DELEGATIONS = {
    "direct": ("tokens_to_grid", gr.tokens_to_grid),
    "wrapper": ("tokens_to_grid", lambda t, nh, nw: gr.tokens_to_grid(t, nh, nw)),
    "subclass": ("ResidualConvUnit", _Subclass),
    "borrowed forward": ("ResidualConvUnit", _BorrowedForward),
    "unregistered instance": ("ResidualConvUnit", _HiddenInstance),
    "importlib-loaded module": ("tokens_to_grid", _importlib_copy()),
    "a part of the exercise": ("fuse_pyramid", lambda lv, f: _fuse_with_crop_to(lv, f)),
    "recorder switched off": ("tokens_to_grid", _profile_off),
    "sandbox stub": ("tokens_to_grid", _stub),
}


def _fuse_with_crop_to(levels, fusion):
    path = fu.crop_to(fusion[3](levels[3]), levels[2].shape[-2:])
    for i in (2, 1, 0):
        path = fusion[i](path, levels[i])
    return path


@pytest.mark.parametrize("form", sorted(DELEGATIONS))
def test_delegating_to_the_reference_fails_with_the_reference_flag(form, capsys):
    name, student = DELEGATIONS[form]
    with pytest.raises(CheckFailed) as info:
        getattr(checks, name)(student, device="cpu")
    message = str(info.value)
    assert "reference" in info.value.flags, message
    assert message.startswith(f"{name}: ") and ("write your own" in message or "leave it alone" in message), message
    assert "✓" not in capsys.readouterr().out


def test_the_reference_message_names_what_the_learner_called():
    with pytest.raises(CheckFailed, match=r"^tokens_to_grid: uses dptlearn\.grid\.tokens_to_grid, the reference for "
                                          r"this exercise: write your own$"):
        checks.tokens_to_grid(lambda t, nh, nw: gr.tokens_to_grid(t, nh, nw), device="cpu")
    with pytest.raises(CheckFailed, match=r"^ResidualConvUnit: uses dptlearn\.fusion\.ResidualConvUnit, "):
        checks.ResidualConvUnit(_Subclass, device="cpu")    # not the helpers it calls inside


def test_a_sandbox_stub_says_what_was_used():
    with pytest.raises(CheckFailed, match=r"^tokens_to_grid: uses dptlearn\.grid\.tokens_to_grid, the reference for "
                                          r"this exercise: write your own$") as info:
        checks.tokens_to_grid(_stub, device="cpu")
    assert info.value.flags == {"reference"}


def test_own_code_next_to_other_dptlearn_parts_is_not_the_reference():
    # dptlearn's crop_to is not part of tokens_to_grid: a stray call to it is not flagged there
    def mine(t, nh, nw):
        fu.crop_to(torch.zeros(1, 1, 2, 2), (1, 1))
        return rearrange(t, "b (nh nw) c -> b c nh nw", nh=nh, nw=nw)
    checks.tokens_to_grid(mine, device="cpu")


# ------------------------------------------------------------------ the stand-ins show wrong wirings

def _fuse(levels, fusion, order=(2, 1, 0), crop="top-left", swap=False, pair=None):
    path = fusion[3](levels[3])
    h, w = levels[2].shape[-2:]
    if crop == "top-left":
        path = path[..., :h, :w]
    elif crop == "bottom-right":
        path = path[..., -h:, -w:]
    elif crop == "resize":
        path = F.interpolate(path, size=(h, w), mode="bilinear", align_corners=True)
    for i in order:
        block = fusion[pair[i] if pair else i]
        path = block(levels[i], path) if swap else block(path, levels[i])
    return path


WRONG_FUSE = {  # wiring -> (student, what the message says)
    "path and skip swapped": (lambda lv, f: _fuse(lv, f, swap=True), "path and level swapped"),
    "missing crop": (lambda lv, f: _fuse(lv, f, crop=None), "missing crop on odd grids"),
    "crop keeps the last rows": (lambda lv, f: _fuse(lv, f, crop="bottom-right"), "bottom-right"),
    "upsampled straight to the skip size": (lambda lv, f: _fuse(lv, f, crop="resize"), "instead of cropping"),
    "blocks in coarsest-first index order": (lambda lv, f: _fuse(lv, f, pair={2: 0, 1: 1, 0: 2}),
                                             "blocks indexed coarsest-first"),
}


@pytest.mark.parametrize("wrong", sorted(WRONG_FUSE))
def test_fuse_pyramid_stand_ins_show_wrong_wirings(wrong, capsys):
    checks.fuse_pyramid(lambda lv, f: _fuse(lv, f), device="cpu")
    assert "✓ fuse_pyramid: passed" in capsys.readouterr().out
    student, says = WRONG_FUSE[wrong]
    with pytest.raises(CheckFailed, match=re.escape(says)):
        checks.fuse_pyramid(student, device="cpu")


# ------------------------------------------------------------------ how a failed check shows in a notebook

def test_a_failed_check_renders_as_one_short_message():
    with pytest.raises(CheckFailed) as info:
        checks.tokens_to_grid(lambda t, nh, nw: t.reshape(t.shape[0], t.shape[2], nh, nw), device="cpu")
    lines = info.value._render_traceback_()
    assert lines[0].startswith("✗ tokens_to_grid: grid for nh=3, nw=5: reshape instead of moving the channel axis")
    assert " ".join(line.strip() for line in lines) == f"✗ {info.value}"      # wrapped, nothing added or lost
    assert all(len(line) <= 100 for line in lines) and 1 < len(lines) <= 5
    assert not any("Traceback" in line or ".py" in line for line in lines)
    assert isinstance(info.value, AssertionError)                            # pytest and nbval see a failure


def test_a_notebook_shows_the_verdict_alone(tmp_path):
    import nbformat
    from nbclient import NotebookClient
    code = ("from dptlearn import checks\n"
            "checks.crop_to(lambda x, size: x[..., x.shape[-2] - size[0]:, x.shape[-1] - size[1]:], device='cpu')")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    [error] = [o for o in nb.cells[0].outputs if o.output_type == "error"]
    shown = "\n".join(error.traceback)               # what Jupyter displays under the cell
    assert (error.ename, error.evalue.split(":")[0]) == ("CheckFailed", "crop_to")
    assert shown.startswith("✗ crop_to: crop to (5, 7): you kept the bottom-right"), shown
    assert "Traceback" not in shown and "dptlearn" + "/" not in shown and ".py" not in shown, shown
    assert len(error.traceback) <= 3

