"""The optional GPU path, `make test-gpu` (Makefile): what can be checked without a GPU, and the
grading part that it runs on one.

- Without CUDA, `make test-gpu` stops before any test with a message that says why.
- tests/nbval_sanitize_gpu.cfg (appended to tests/nbval_sanitize.cfg, as make test-gpu does)
  makes a GPU-like output equal to the stored CPU one where they differ by round-off only, and
  keeps real differences visible.
- On CUDA (`-m cuda`): the solutions graded with `--device cuda` score full marks.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from nbval.plugin import get_sanitize_patterns

from _helpers import ROOT

TESTS = ROOT / "tests"
STAMP = ROOT / ".venv" / ".dptlearn-installed"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_make_test_gpu_without_cuda_stops_at_once_and_says_why():
    # -o: take the install step as done (this test must not reinstall the venv it runs in)
    proc = subprocess.run(["make", "--no-print-directory", "-o", str(STAMP), "test-gpu",
                           f"BIN={Path(sys.executable).parent}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "make test-gpu: no CUDA device" in proc.stderr
    assert "torch.cuda.is_available() is False" in proc.stderr and "make test" in proc.stderr
    assert "mkdir -p" not in proc.stdout and "pytest" not in proc.stdout, proc.stdout   # nothing ran


def sanitizer():
    rules = get_sanitize_patterns((TESTS / "nbval_sanitize.cfg").read_text()
                                  + (TESTS / "nbval_sanitize_gpu.cfg").read_text())
    assert len(rules) == 5          # nbval skips a rule it cannot parse (e.g. `replace:` with no space)

    def clean(text: str) -> str:
        for regex, replace in rules:            # in order, as nbval applies them
            text = re.sub(regex, replace, text)
        return text
    return clean


@pytest.mark.parametrize("cpu, gpu", [
    ("max |wrong - right| = 2.6133", "max |wrong - right| = 2.6134"),
    ("exp   : new length  147.4132   pts3d = [88.4479, 117.9305, 0.0]",
     "exp   : new length  147.4131   pts3d = [88.4478, 117.9306, 0.0]"),
    ("dptlearn 0.1.0 | device: cpu", "dptlearn 0.1.0 | device: cuda:0"),
    ("tensor([0.5000, 1.2500])", "tensor([0.5000, 1.2500], device='cuda:0')"),
])
def test_round_off_and_device_differences_are_sanitized(cpu, gpu):
    clean = sanitizer()
    assert cpu != gpu and clean(cpu) == clean(gpu)


@pytest.mark.parametrize("cpu, gpu", [
    ("max |wrong - right| = 2.6133", "max |wrong - right| = 2.6233"),       # the 2nd decimal
    ("pre-activation: min -2.590", "pre-activation: min -2.591"),
    ("share of zeros after the ReLU: 0.35", "share of zeros after the ReLU: 0.36"),
    ("(1, 768, 24, 32)", "(1, 768, 24, 33)"),
    ("max |difference| to the five steps < 1e-5: True", "max |difference| to the five steps < 1e-5: False"),
    ("total: 93.4 GMACs", "total: 93.5 GMACs"),
])
def test_real_differences_stay_visible(cpu, gpu):
    clean = sanitizer()
    assert clean(cpu) != clean(gpu)


@pytest.mark.cuda
@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (make test-gpu)")
def test_solutions_graded_on_cuda_score_full_marks(tmp_path):
    report = tmp_path / "report"
    proc = subprocess.run([str(Path(sys.executable).parent / "dptlearn-grade"), str(ROOT / "solutions"),
                           "--device", "cuda", "--jobs", "2", "--report-dir", str(report)],
                          capture_output=True, text=True, timeout=1800, env=dict(os.environ))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = [json.loads(p.read_text()) for p in sorted(report.glob("*.json"))
               if p.name != "dptlearn-report.json"]
    assert len(results) == len(list((ROOT / "solutions").glob("*.ipynb")))
    for r in results:
        lost = [(e["id"], e["message"]) for e in r["exercises"]
                if not e["passed"] and not e.get("unscored")]      # written answers: by hand
        assert r["error"] is None and r["score"] == r["max_score"] > 0 and not lost, (r["submission"], lost)
