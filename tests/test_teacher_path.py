"""Every command of docs/teaching.md's section "From a fork to the gradebook" runs, on a small class.

The section's fenced blocks are tagged by what the test does with them:

- ```bash teacher        run as written, with bash, in a stand-in fork (below);
- ```bash teacher-file F the content of file F, written into the fork and checked with `bash -n`;
- ```bash teacher-slurm  run as written, with a stand-in `sbatch` first on PATH that runs each task
                          of the script's `#SBATCH --array` with Slurm's variables, one after
                          another, and a `--wrap` job after its `afterok` dependency;
- ```bash teacher-ci     `bash .ci/run` (checked: it runs `make test`, and test.yml runs it) and
                          `gh workflow run grade.yml -f ...` (checked: actionlint, the inputs; then
                          the workflow's steps are run in order with those inputs, artifacts
                          being folders);
- ```text                 no command (a folder layout).

The stand-in fork is a temporary folder holding `submissions/` (three students of the grading
fixture in tests/grading/: full marks, one mistake, the released stub) and a `.venv/bin` whose
`dptlearn-grade`, `dptlearn-make-exercises` and `python` run the real ones, given the fixture's
solutions (and lectures) instead of the course's; nothing else about a command changes.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from grading import crafted

from dptlearn.course import exercises  # noqa: E402
from dptlearn.course.grading.secret import ENV as SECRET_ENV, Seeds  # noqa: E402
from _helpers import ROOT, WORKFLOWS, actionlint, workflow  # noqa: E402

VENV_BIN = Path(sys.executable).parent
SECTION = "## From a fork to the gradebook"
TAGS = {"teacher", "teacher-file", "teacher-slurm", "teacher-ci"}
# the fixture class: student -> score out of crafted.MAX_SCORE
EXPECTED = {"alice": 6, "bob": 4, "carol": 0}


def teacher_blocks() -> list[tuple[str, str, str]]:
    """(tag, argument, body) of each fenced block of the teacher section (docs/teaching.md), in order."""
    text = (ROOT / "docs" / "teaching.md").read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + 1)
    section = text[start:end if end > 0 else None]
    blocks = []
    for m in re.finditer(r"^```(\S*)[ \t]*([^\n]*)\n(.*?)^```$", section, re.M | re.S):
        lang, info, body = m.groups()
        if lang == "text":
            continue
        tag, _, arg = info.partition(" ")
        assert lang == "bash" and tag in TAGS, f"untested block in the teacher section: ```{lang} {info}"
        blocks.append((tag, arg.strip(), body))
    return blocks


def test_the_section_has_the_whole_path():
    blocks = teacher_blocks()
    tags = [t for t, _, _ in blocks]
    assert tags == ["teacher-ci", "teacher", "teacher", "teacher-ci", "teacher-file", "teacher-slurm",
                    "teacher"]
    text = "\n".join(b for _, _, b in blocks)
    for needle in ["bash .ci/run", "dptlearn-make-exercises", "--jobs 2", "gh workflow run grade.yml",
                   "--array=", "merge reports/shard-*", "gradebook.csv"]:
        assert needle in text


# ----------------------------------------------------------------------------- the stand-in fork

WRAPPER = """#!/bin/bash
# stand-in for the fork's .venv/bin/{name}: the real one, on the grading fixture
{body}
"""


def write_exe(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def make_fork(root: Path) -> Path:
    fork = root / "fork"
    bin_ = fork / ".venv" / "bin"
    bin_.mkdir(parents=True)
    fixture = shlex.quote(str(crafted.SOLUTIONS))
    write_exe(bin_ / "python", WRAPPER.format(name="python", body=f'exec {shlex.quote(sys.executable)} "$@"'))
    write_exe(bin_ / "dptlearn-grade", WRAPPER.format(name="dptlearn-grade", body=(
        f'if [ "${{1:-}}" = merge ]; then exec {shlex.quote(str(VENV_BIN / "dptlearn-grade"))} "$@"; fi\n'
        f'exec {shlex.quote(str(VENV_BIN / "dptlearn-grade"))} "$@" --solutions {fixture} --timeout 30')))
    write_exe(bin_ / "dptlearn-make-exercises", WRAPPER.format(name="dptlearn-make-exercises", body=(
        f'exec {shlex.quote(str(VENV_BIN / "dptlearn-make-exercises"))} "$@" --solutions {fixture} '
        f'--lectures {shlex.quote(str(crafted.LECTURES))} --out exercises')))
    released = root / "released"
    exercises.generate(crafted.SOLUTIONS, released, crafted.LECTURES)
    students = {"alice": crafted.solution_nb(), "bob": crafted.solution_nb(),
                "carol": json.loads((released / f"{crafted.ASSIGNMENT}.ipynb").read_text())}
    crafted.mistake_grid(students["bob"])
    for name, nb in students.items():
        (fork / "submissions" / name).mkdir(parents=True)
        (fork / "submissions" / name / f"{crafted.ASSIGNMENT}.ipynb").write_text(json.dumps(nb))
    return fork


def env_for(home: Path, extra_path: Path | None = None) -> dict:
    """The commands' environment: a HOME of their own (the Slurm recipe keeps the class secret
    there), no class secret of ours, PATH with the stand-ins first."""
    path = os.pathsep.join(([str(extra_path)] if extra_path else []) + [os.environ.get("PATH", "")])
    env = dict(os.environ, PATH=path, PYTHONPATH=str(ROOT), HOME=str(home))
    env.pop(SECRET_ENV, None)
    return env


def bash(script: str, fork: Path, env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=fork, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"$ {script}\n{proc.stdout}\n{proc.stderr}"
    return proc


# ----------------------------------------------------------------------------- Slurm, stood in for

FAKE_SBATCH = r'''#!{python}
"""Stand-in sbatch: runs an array job's tasks one after another, or a --wrap job, right away."""
import os, re, subprocess, sys
args = sys.argv[1:]
opts = dict(a.split("=", 1) if "=" in a else (a, "") for a in args if a.startswith("--") and a != "--wrap")
state = ".sbatch-jobs"                              # the jobs that succeeded, in the submit folder
done = open(state).read().split() if os.path.exists(state) else []
jobid = str(1000 + len(done))
if "--wrap" in args:
    dep = opts.get("--dependency", "")
    assert dep.startswith("afterok:") and dep[8:] in done, f"unmet dependency {{dep!r}} (done: {{done}})"
    with open(f"slurm-{{jobid}}.out", "w") as log:
        wrapped = args[args.index("--wrap") + 1]
        code = subprocess.call(["bash", "-c", wrapped], stdout=log, stderr=subprocess.STDOUT)
else:
    script = [a for a in args if not a.startswith("--")][0]
    text = open(script).read()
    sb = dict(re.findall(r"^#SBATCH --([\w-]+)=(\S+)", text, re.M))
    first, last = map(int, sb["array"].split("-"))
    code = 0
    for task in range(first, last + 1):
        env = dict(os.environ, SLURM_ARRAY_TASK_ID=str(task), SLURM_ARRAY_TASK_COUNT=str(last - first + 1),
                   SLURM_CPUS_PER_TASK=sb.get("cpus-per-task", "1"))
        with open(f"slurm-{{jobid}}_{{task}}.out", "w") as log:     # as Slurm names a task's output
            code = subprocess.call(["bash", script], env=env, stdout=log, stderr=subprocess.STDOUT) or code
if code:
    sys.exit(f"sbatch stand-in: job {{jobid}} failed with {{code}}")
open(state, "a").write(jobid + "\n")
print(jobid if "--parsable" in opts else f"Submitted batch job {{jobid}}")
'''


# ----------------------------------------------------------------------------- CI, stood in for

EXPR = re.compile(r"\$\{\{\s*(inputs|matrix|secrets)\.([\w-]+)\s*\}\}")
CI_SECRETS: dict[str, str] = {}     # what `gh secret set NAME` was given (a repository secret)


def substitute(text: str, values: dict) -> str:
    out = EXPR.sub(lambda m: str(values[m.group(1)][m.group(2)]), text)
    assert "${{" not in out, f"an expression the stand-in does not know: {text}"
    return out


def run_steps(steps: list[dict], fork: Path, values: dict, artifacts: Path, env: dict) -> str:
    """Run a job's steps in the fork: its commands, and artifacts as folders; return GITHUB_OUTPUT."""
    output = fork / ".github_output"
    output.write_text("")
    for step in steps:
        uses = step.get("uses", "")
        if uses.startswith(("actions/checkout@", "actions/setup-python@")):
            continue                                   # the fork and its venv are there already
        if uses.startswith("actions/upload-artifact@"):
            name, path = (substitute(step["with"][k], values) for k in ("name", "path"))
            shutil.copytree(fork / path, artifacts / name)
        elif uses.startswith("actions/download-artifact@"):
            pattern, dest = step["with"]["pattern"], fork / step["with"]["path"]
            for art in sorted(artifacts.glob(pattern)):
                shutil.copytree(art, dest / art.name)
        elif "dptlearn-grade" in step.get("run", "") or "GITHUB_OUTPUT" in step.get("run", ""):
            step_env = {k: substitute(str(v), values) for k, v in step.get("env", {}).items()}
            bash(substitute(step["run"], values), fork, dict(env, GITHUB_OUTPUT=str(output), **step_env))
        else:                                          # the rest only installs
            for line in filter(None, map(str.strip, step["run"].splitlines())):
                assert re.fullmatch(r"make install|sudo apt-get .*|sudo sysctl .*|#.*", line), line
    return output.read_text()


def run_grade_workflow(command: str, fork: Path, env: dict) -> None:
    """`gh workflow run grade.yml ... -f k=v`: check it against the workflow, then run the workflow."""
    argv = shlex.split(command)
    assert argv[:3] == ["gh", "workflow", "run"]
    lint = actionlint(WORKFLOWS / argv[3])
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fields = dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "-f")
    wf = workflow(argv[3])
    inputs = wf["on"]["workflow_dispatch"]["inputs"]
    assert set(fields) <= set(inputs) and {k for k, v in inputs.items() if v.get("required")} <= set(fields)
    values = {"inputs": {k: int(v) if inputs[k]["type"] == "number" else v for k, v in fields.items()},
              "secrets": CI_SECRETS}
    artifacts = fork.parent / "artifacts"
    artifacts.mkdir()
    plan = run_steps(wf["jobs"]["plan"]["steps"], fork, values, artifacts, env)
    shards = json.loads(re.search(r"^shards=(.*)$", plan, re.M).group(1))
    assert shards == list(range(1, values["inputs"]["shards"] + 1))
    for k in shards:
        run_steps(wf["jobs"]["shard"]["steps"], fork, dict(values, matrix={"shard": k}), artifacts, env)
    run_steps(wf["jobs"]["merge"]["steps"], fork, values, artifacts, env)
    shutil.copytree(artifacts / "grading-report", fork / "ci-grading-report")


def check_ci_line(line: str, fork: Path, env: dict) -> None:
    m = re.fullmatch(r"(.*) \| gh secret set (\w+)", line)
    if m:                                              # gh reads the value from its input
        CI_SECRETS[m.group(2)] = bash(m.group(1), fork, env).stdout.strip()
        (step,) = [s for s in workflow("grade.yml")["jobs"]["shard"]["steps"]
                   if "dptlearn-grade" in s.get("run", "")]
        assert step["env"][m.group(2)] == f"${{{{ secrets.{m.group(2)} }}}}"
        return
    if line == "bash .ci/run":
        run = [ln for ln in (ROOT / ".ci" / "run").read_text().splitlines() if ln and not ln.startswith("#")]
        assert run[-1] == "make test"
        assert "bash .ci/run" in (ROOT / ".github" / "workflows" / "test.yml").read_text()
    elif line.startswith("gh workflow run "):
        run_grade_workflow(line, fork, env)
    else:
        raise AssertionError(f"a CI command the test does not know: {line}")


# ----------------------------------------------------------------------------- the path

def gradebook(folder: Path) -> dict[str, str]:
    rows = list(csv.DictReader(io.StringIO((folder / "gradebook.csv").read_text())))
    return {r["Student"]: r["dptlearn total"] for r in rows}


@pytest.mark.slow
def test_every_teacher_command_runs_on_the_fixture_class(tmp_path):
    fork = make_fork(tmp_path)
    fake_bin = tmp_path / "slurm-bin"
    fake_bin.mkdir()
    write_exe(fake_bin / "sbatch", FAKE_SBATCH.format(python=sys.executable))
    home = tmp_path / "home"
    home.mkdir()
    env = env_for(home)
    CI_SECRETS.clear()
    expected = {k: str(v) for k, v in EXPECTED.items()}
    books, blocks = {}, {}
    for tag, arg, body in teacher_blocks():
        blocks[tag] = blocks.get(tag, "") + body
        if tag == "teacher":
            out = bash(body, fork, env).stdout
            if "dptlearn-make-exercises" in body:                      # 2. hand out
                with zipfile.ZipFile(fork / "exercises.zip") as z:
                    assert z.namelist() == [f"{crafted.ASSIGNMENT}.ipynb"]     # the notebooks only
                    assert b"NotImplementedError" in z.read(z.namelist()[0])
            if "summary.md" in body:                                   # 4. grade on one machine
                assert "alice" in out and "carol" in out
                books["local"] = gradebook(fork / "grading-report")
            if "gradebook.csv" in body:                                # 5. the gradebook
                assert out.startswith("Student,ID,SIS User ID,SIS Login ID,Section,")
                assert [ln.split(",")[3] for ln in out.splitlines()[1:]] == ["alice", "bob", "carol"]
        elif tag == "teacher-file":
            (fork / arg).write_text(body)
            syntax = subprocess.run(["bash", "-n", arg], cwd=fork, capture_output=True, text=True)
            assert syntax.returncode == 0, syntax.stderr
        elif tag == "teacher-slurm":
            out = bash(body, fork, env_for(home, fake_bin))
            secret = (home / ".dptlearn-grading-secret").read_text().strip()
            assert len(secret) == 64 and (home / ".dptlearn-grading-secret").stat().st_mode & 0o077 == 0
            logs = [out.stdout, out.stderr] + [p.read_text() for p in fork.glob("slurm-*.out")]
            assert not any(secret in text for text in logs)             # never printed
            assert json.loads((fork / "grading-report" / "dptlearn-report.json").read_text())[
                "secret"] == Seeds(secret.encode()).fingerprint          # every task had it
            assert len((fork / ".sbatch-jobs").read_text().split()) == 2     # the array, the merge
            books["slurm"] = gradebook(fork / "grading-report")
        else:
            for line in body.strip().splitlines():
                check_ci_line(line, fork, env)
            if "gh workflow run" in body:
                books["ci"] = gradebook(fork / "ci-grading-report")
    assert books == {"local": expected, "ci": expected, "slurm": expected}
    manifest = json.loads((fork / "grading-report" / "dptlearn-report.json").read_text())
    first, last = map(int, re.search(r"#SBATCH --array=(\d+)-(\d+)", blocks["teacher-file"]).groups())
    assert manifest["shards"] == list(range(1, last - first + 2)) == list(range(first, last + 1))
    ci = json.loads((fork / "ci-grading-report" / "dptlearn-report.json").read_text())
    assert ci["secret"] == Seeds(CI_SECRETS[SECRET_ENV].encode()).fingerprint
    n = int(re.search(r"-f shards=(\d+)", blocks["teacher-ci"]).group(1))
    assert ci["shards"] == list(range(1, n + 1)) and n > 1
    assert sorted(p.name for p in (fork / "submissions").rglob("*")) == \
        sorted(["alice", "bob", "carol"] + [f"{crafted.ASSIGNMENT}.ipynb"] * 3)   # nothing written
