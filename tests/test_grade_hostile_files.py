"""Hostile files (issue #21): one student's bytes, names or file types cost that student only.

Two command-line runs of ``dptlearn-grade``, each with honest classmates who must keep full marks:

* the grading fixture class of ``tests/grading/hostile_files.py``: a results file whose zip header
  makes ``zipfile`` raise an exception type of its own (found by fuzzing the loader), a lone
  surrogate in an exception message, escaped lone surrogates in notebook JSON, folder and file names
  that are not UTF-8, symlinks to the teacher's solution and to a classmate's notebook, a dangling
  symlink, a FIFO and a folder named ``*.ipynb``, Markdown, bidi and zero-width characters in a
  message, control characters in a message; and what playing the hostile student found next:
  JSON nested 50 000 deep, 100 000 cells, a 21 MiB sparse file, a cell source of numbers, an
  assignment name that is a JSON object, a hard link to a file outside the class, a symlink to a
  classmate's folder, a right-to-left override in a file name;
* the course: answers of 03, 04 and 05 that delegate to transformers' DPT and Depth Anything modules.

Each case asserts exact points, the message, the run's exit status (3: graded, with N submissions
refused) and that no file outside the report folder changed (symlinks, FIFOs and files compared by
what they are). Every report file must load with its standard reader.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import stat
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from _helpers import ROOT, run_grader
from dptlearn.course.grading import safetext, sandbox

from grading import crafted
from grading import hostile_files as hf

PROBLEM = sandbox.bwrap_problem()
pytestmark = pytest.mark.skipif(PROBLEM is not None, reason=f"no sandbox: {PROBLEM}")
REFUSED_EXIT = 3
LIVE_TAGS = {"a", "em", "s", "del", "img", "b", "script", "iframe"}   # <strong> is the scores' own


def tree_state(top: Path) -> dict[bytes, str]:
    """What every entry under ``top`` is, without following or opening anything but regular files."""
    out = {}
    todo = [os.fsencode(top)]
    while todo:                         # a loop: os.walk recurses (RecursionError 1000 folders deep)
        dirpath = todo.pop()
        for name in os.listdir(dirpath):
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            if stat.S_ISDIR(st.st_mode):
                todo.append(p)
            if stat.S_ISLNK(st.st_mode):
                out[p] = "link:" + os.fsdecode(os.readlink(p))
            elif stat.S_ISREG(st.st_mode):
                with open(p, "rb") as fh:
                    out[p] = hashlib.sha256(fh.read()).hexdigest()
            else:
                out[p] = f"mode:{stat.S_IFMT(st.st_mode):o}"
    return out


def guarded(*tops: Path) -> dict[bytes, str]:
    """The state of every file the run's submissions could aim at: the class, the solutions it is
    graded against, what its links point to (other folders of the shared checkout change while
    other engineers work, so each run guards its own)."""
    state = {}
    for top in tops:
        state.update(tree_state(top))
    return state


def load_reports(report: Path) -> dict[str, dict]:
    """Every per-submission JSON report, loaded strictly, by its ``submission`` field."""
    out = {}
    for p in report.glob("*.json"):
        if p.name != "dptlearn-report.json":
            data = json.loads(p.read_text(encoding="utf-8"), strict=True)
            out[data["submission"]] = data
    return out


def points(data: dict) -> dict[str, int]:
    return {e["id"]: e["points"] for e in data["exercises"]}


def rendered_tags(markdown: str) -> set[str]:
    """The tags of ``markdown`` rendered (CommonMark, GFM tables and strikethrough); every
    ``<strong>`` must hold a score (``6/6``), the only bold the grader writes."""
    from html.parser import HTMLParser

    markdown_it = pytest.importorskip("markdown_it")
    tags: set[str] = set()
    strong: list[str] = []

    class P(HTMLParser):
        bold = 0

        def handle_starttag(self, tag, attrs):
            tags.add(tag)
            self.bold += tag == "strong"

        def handle_endtag(self, tag):
            self.bold -= tag == "strong"

        def handle_data(self, data):
            if self.bold:
                strong.append(data)

    P().feed(markdown_it.MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(markdown))
    assert all(re.fullmatch(r"\d+/\d+", s) for s in strong), strong
    return tags


# ----------------------------------------------------------------------------- the fixture class

@pytest.fixture(scope="module")
def files_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile-files")
    built = hf.build_class(root)
    tops = (built["class"], crafted.FIXTURES, root / "teacher-copy")
    before = guarded(*tops)
    report = root / "report"
    proc = run_grader(str(built["class"]), "--solutions", str(crafted.SOLUTIONS), "--report-dir",
                      str(report), "--timeout", "20", "--jobs", "2")
    yield {**built, "proc": proc, "report": report, "before": before,
           "after": guarded(*tops), "data": load_reports(report) if report.is_dir() else {}}
    hf.remove_deep(built["class"] / "deep_folders")


def result_of(run, case: str) -> dict:
    shown = safetext.path_text(str(run["paths"][case]))
    assert shown in run["data"], (shown, sorted(run["data"]), run["proc"].stderr[-2000:])
    return run["data"][shown]


def test_the_run_completes_and_says_how_many_were_refused(files_run):
    proc = files_run["proc"]
    refused = sum(c.refused for c in hf.CASES.values())
    assert proc.returncode == REFUSED_EXIT, (proc.returncode, proc.stdout[-2000:], proc.stderr[-3000:])
    assert f"{refused} refused" in proc.stdout, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert len(files_run["data"]) == len(hf.CASES) + len(hf.HONEST_STUDENTS)


@pytest.mark.parametrize("case", list(hf.CASES))
def test_hostile_file(files_run, case):
    want = hf.CASES[case]
    data = result_of(files_run, case)
    assert points(data) == want.points, data
    ex = next(e for e in data["exercises"] if e["id"] == want.where)
    where = data["error"] if want.refused else ex["message"]
    assert want.text in (where or ""), (where, data)
    assert data.get("refused", False) == want.refused, data
    if not want.refused:
        assert ex["flags"] == want.flags, ex
    if want.note:
        assert any(want.note in n for n in data["notes"]), data["notes"]
    else:
        assert not any("hard link" in n or "name" in n for n in data["notes"]), data["notes"]
    for e in data["exercises"]:
        assert "\n" not in e["message"] and len(e["message"]) <= 400 and "Traceback" not in e["message"]


def test_honest_classmates_keep_full_marks(files_run):
    for path in files_run["honest"].values():
        data = files_run["data"][str(path)]
        assert points(data) == hf.HONEST and data["error"] is None and data["notes"] == [], data
        assert all(e["flags"] == [] for e in data["exercises"])


def test_no_file_outside_the_report_changed(files_run):
    assert files_run["after"] == files_run["before"]


def test_refused_files_are_named_in_needs_a_look(files_run):
    summary = (files_run["report"] / "summary.md").read_text(encoding="utf-8")
    look = summary.split("## Needs a look", 1)[1]
    for case, want in hf.CASES.items():
        if want.refused:
            shown = str(files_run["paths"][case].relative_to(files_run["class"].parent))
            assert shown in look and want.text in look, (case, look)


def test_a_leftover_process_cannot_rewrite_the_report_and_merge_survives(files_run, tmp_path):
    """The plugin kills every other process of the sandbox before pytest writes junit.xml: the
    times are pytest's (a rewrite to "inf" would read back as 0.0, unknown), and the class's
    report folder merges (the run's null duration made merge raise TypeError, exit 1)."""
    data = result_of(files_run, "junit_rewriter")
    assert isinstance(data["duration_s"], float) and 0 < data["duration_s"] < 600, data
    assert 'time="inf"' not in (files_run["report"] / f"{data['name']}.junit.xml").read_text()
    merged = tmp_path / "merged"
    proc = run_grader("merge", str(files_run["report"]), "--report-dir", str(merged))
    assert proc.returncode == REFUSED_EXIT, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr
    assert (merged / "summary.md").read_text(encoding="utf-8") == (
        files_run["report"] / "summary.md").read_text(encoding="utf-8")


def test_a_duration_that_is_not_finite_reads_back_as_unknown(tmp_path):
    from dptlearn.course.grading.report import Result, summary_md
    for bad in (None, "inf", float("inf"), float("nan"), -3.0, [1]):
        r = Result.from_json({"submission": "x.ipynb", "name": "x", "duration_s": bad})
        assert r.duration_s == 0.0, bad
        assert "0.0 s of notebook run time" in summary_md([r])


# ----------------------------------------------------------------------------- identity and budget

def _write(path: Path, nb: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(nb))
    return path


def test_a_students_folder_never_makes_another_student(tmp_path):
    """The regrade recipe names one student's folder (``dptlearn-grade submissions/eve/``): eve's
    files named as alice's Canvas and Moodle downloads are eve's, not rows for alice with
    alice's Canvas id, and alice's feedback page is not written."""
    subs = tmp_path / "class"
    wrong = crafted.solution_nb()
    crafted.mistake_add(wrong)
    _write(subs / "alice" / hf.NB, crafted.solution_nb())
    _write(subs / "eve" / hf.NB, crafted.solution_nb())
    forged = _write(subs / "eve" / f"alice_12345_999_{hf.NB}", wrong)
    report = tmp_path / "regrade-eve"
    proc = run_grader(str(subs / "eve"), "--solutions", str(crafted.SOLUTIONS), "--report-dir",
                      str(report), "--timeout", "20")
    assert proc.returncode == 0, (proc.returncode, proc.stdout[-2000:], proc.stderr[-3000:])
    data = load_reports(report)
    assert len(data) == 2 and {(d["student"], d["student_id"], d["student_from"])
                               for d in data.values()} == {("eve", None, "folder")}, data
    note = data[str(forged)]["notes"]
    assert any("is an LMS download name, but it lies in the student's own folder: graded as "
               "'eve''s" in n for n in note), note
    book = (report / "gradebook.csv").read_text(encoding="utf-8")
    assert len(book.splitlines()) == 2 and "12345" not in book and "alice" not in book, book
    assert sorted(p.name for p in (report / "feedback").iterdir()) == ["eve.html", "eve.md"]


def test_one_budget_per_student_and_at_most_two_copies(tmp_path):
    """Four copies of one sleeping notebook: the first two share one --student-limit (the second
    finds it spent and does not run), the other two are refused, not run; a classmate keeps
    full marks."""
    subs = tmp_path / "class"
    honest = _write(subs / "honest_ann" / hf.NB, crafted.solution_nb())
    nb = crafted.solution_nb()
    nb["cells"].insert(0, crafted.code_cell("import time\ntime.sleep(1000)\n"))
    copies = [_write(subs / "eve" / f"01_fixture ({i}).ipynb", nb) for i in range(4)]
    report = tmp_path / "report"
    proc = run_grader(str(subs), "--solutions", str(crafted.SOLUTIONS), "--report-dir",
                      str(report), "--timeout", "600", "--student-limit", "20", "--jobs", "2")
    assert proc.returncode == REFUSED_EXIT, (proc.returncode, proc.stdout[-2000:], proc.stderr[-3000:])
    data = load_reports(report)
    assert points(data[str(honest)]) == hf.HONEST
    over = "ran past the grader's limit of 20 s for one student (--student-limit)"
    for i, path in enumerate(copies):
        d = data[str(path)]
        assert points(d) == hf.ZERO and d["refused"] == (i >= 2), d
        if i < 2:
            assert all(over in e["message"] for e in d["exercises"]), d
        else:
            assert d["error"] == (f"not graded: copy {i + 1} of 01_fixture handed in by student "
                                  f"'eve'; the grader runs at most 2 copies of one assignment per "
                                  f"student (hand in one notebook per assignment)"), d
    assert data[str(copies[1])]["duration_s"] == 0.0       # the budget was spent: no run
    look = (report / "summary.md").read_text(encoding="utf-8").split("## Needs a look", 1)[1]
    assert "01_fixture (2).ipynb" in look and "01_fixture (3).ipynb" in look


def test_the_grading_view_holds_no_expected_answer_of_the_challenges(tmp_path):
    """12_find_the_bug and 13_predict: inside the sandbox the checks are the recording side only
    (``course/checks`` is a stub), so no fixed source and no closed-form expectation of the
    learner's package is there to read. Pasting them as literals from the learner's own install
    is not prevented (grading-security.md, Limits)."""
    from dptlearn.course.checks import bugs, predict
    from dptlearn.course.grading.view import build_view

    view = build_view(ROOT / "dptlearn", tmp_path)
    assert sorted(p.name for p in (view / "course" / "checks").iterdir()) == ["__init__.py"]
    expected = [v for k, v in vars(bugs).items() if k.endswith("_FIXED") and isinstance(v, str)]
    assert len(expected) >= 6, expected
    expected += ["def dust3r_shapes", "def head_params",
                 repr(predict.dust3r_shapes(**predict.CONFIG)),
                 repr(predict.head_params(**predict.DPT_LARGE))]
    for path in view.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert not [e for e in expected if e in text], path


def test_a_name_that_is_not_utf8_falls_back_to_a_hash(files_run):
    data = result_of(files_run, "non_utf8_name")
    assert data["submission"].endswith("\\xe9l\\xe8ve/01_fixture-caf\\xe9.ipynb")
    assert data["name"].startswith("submission-") and data["student"] == "\\xe9l\\xe8ve"
    assert any("not valid UTF-8" in n for n in data["notes"]), data["notes"]
    assert (files_run["report"] / f"{data['name']}.junit.xml").is_file()


def test_lone_surrogates_are_shown_not_kept(files_run):
    data = result_of(files_run, "surrogate_message")
    assert "ValueError: \\ud800" in data["exercises"][0]["message"]
    raw = (files_run["report"] / f"{data['name']}.json").read_bytes()
    raw.decode("utf-8")
    assert b"\\ud800" in raw


def test_markdown_in_a_message_is_inert(files_run):
    summary = (files_run["report"] / "summary.md").read_text(encoding="utf-8")
    assert not rendered_tags(summary) & LIVE_TAGS
    data = result_of(files_run, "markdown_message")
    message = data["exercises"][0]["message"]
    assert "pass\\u202edeliaf ze\\u200bro" in message and "\u202e" not in summary and "\u200b" not in summary
    row = next(line for line in summary.splitlines() if "markdown_message" in line and line.startswith("|"))
    assert row.count(" | ") == next(line for line in summary.splitlines() if line.startswith("| student")).count(" | ")


def test_every_report_file_parses(files_run):
    report = files_run["report"]
    for p in report.glob("*.junit.xml"):
        ET.parse(p)
    control = result_of(files_run, "control_message")
    xml = ET.parse(report / f"{control['name']}.junit.xml")
    assert "bad\\x01\\x02\\x08" in xml.find(".//failure").get("message")
    for name in ("summary.csv", "gradebook.csv"):
        rows = list(csv.reader(io.StringIO((report / name).read_text(encoding="utf-8"))))
        assert len({len(r) for r in rows}) == 1, name
    json.loads((report / "dptlearn-report.json").read_text(encoding="utf-8"), strict=True)


# ----------------------------------------------------------------------------- grader bugs

def test_a_grader_bug_on_one_submission_costs_that_submission(tmp_path, monkeypatch, capsys):
    """Isolation is a property of the pipeline: the grader's own code raising (with a lone surrogate
    in its message) while staging, running, scoring or reporting one submission, simulated at each
    place, refuses that submission only, with one line naming its file; the classmate is graded."""
    from dptlearn.course.grading import grade, processes, reportdir, staging
    from dptlearn.course.grading.settings import Settings

    places = ("staging", "running", "scoring", "reporting")
    subs = []
    for student in [f"crash_{p}" for p in places] + ["honest"]:
        path = tmp_path / "class" / student / hf.NB
        path.parent.mkdir(parents=True)
        nb = crafted.solution_nb()
        nb["metadata"]["student"] = student
        path.write_text(json.dumps(nb))
        subs.append(str(path))

    def crash(place):
        raise RuntimeError(f"boom \ud800 in {place}")

    def wrap(real, place, hit):
        return lambda *args, **kw: crash(place) if hit(*args) else real(*args, **kw)

    monkeypatch.setattr(staging, "prepare", wrap(
        staging.prepare, "staging", lambda nb, a: nb["metadata"].get("student") == "crash_staging"))
    monkeypatch.setattr(processes.ClassRun, "run_group", wrap(
        processes.ClassRun.run_group, "running",
        lambda run, group, *rest: any("crash_running" in s.result.submission for s in group)))
    monkeypatch.setattr(processes, "score", wrap(
        processes.score, "scoring", lambda s, *rest: "crash_scoring" in s.result.submission))
    monkeypatch.setattr(grade, "write_result", wrap(      # a bug its zeros no longer meet
        grade.write_result, "reporting", lambda d, r: "crash_reporting" in r.submission and not r.refused))
    opts = Settings(crafted.SOLUTIONS, tmp_path / "report", timeout=20, jobs=2, inputs=[str(tmp_path / "class")])
    results = {Path(r.submission).parent.name: r for r in grade.grade(subs, opts, progress=lambda s: None)}
    assert reportdir.refused_status(list(results.values())) == REFUSED_EXIT
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("graded 1 submission(s), 4 refused: ") and "crash_staging/01_fixture" in last
    for place in places:
        r = results[f"crash_{place}"]
        assert r.refused and r.score == 0 and len(r.exercises) == 3, r
        assert r.error == f"grader error while {place} 01_fixture.ipynb: RuntimeError: boom \\ud800 in {place}"
        assert all(e.points == 0 and e.message == r.error for e in r.exercises)
        data = json.loads((opts.report_dir / f"{r.name}.json").read_text(encoding="utf-8"), strict=True)
        assert data["refused"] and data["error"] == r.error
        ET.parse(opts.report_dir / f"{r.name}.junit.xml")
    honest = results["honest"]
    assert (honest.score, honest.error, honest.refused, honest.notes) == (crafted.MAX_SCORE, None, False, [])
    look = (opts.report_dir / "summary.md").read_text(encoding="utf-8").split("## Needs a look", 1)[1]
    assert all(f"crash_{p}/01_fixture.ipynb`: ⚑ refused: `grader error while {p}" in look for p in places), look


# ----------------------------------------------------------------------------- transformers

REPO_SOLUTIONS = ROOT / "solutions"
HF = "from transformers.models.dpt.modeling_dpt import {names}\nfrom transformers import DPTConfig\n"
DA = "from transformers.models.depth_anything.modeling_depth_anything import {names}\n"
TRANSFORMERS_ANSWERS = {
    "03_reassemble": {"Reassemble": HF.format(names="DPTReassembleStage") + (
        "class Reassemble(nn.Module):\n"
        "    def __init__(self, dim_tokens, layer_dims, feature_dim):\n"
        "        super().__init__()\n"
        "        self.stage = DPTReassembleStage(DPTConfig(hidden_size=dim_tokens,\n"
        "                                                  neck_hidden_sizes=list(layer_dims)))\n"
        "    def forward(self, grids):\n"
        "        return self.stage(grids)\n")},
    "04_refinenet_fusion": {
        "residual_conv_unit": HF.format(names="DPTPreActResidualLayer") + (
            "def residual_conv_unit(x, w1, b1, w2, b2):\n"
            "    unit = DPTPreActResidualLayer(DPTConfig(fusion_hidden_size=x.shape[1]))\n"
            "    with torch.no_grad():\n"
            "        unit.convolution1.weight.copy_(w1); unit.convolution1.bias.copy_(b1)\n"
            "        unit.convolution2.weight.copy_(w2); unit.convolution2.bias.copy_(b2)\n"
            "    return unit(x)\n"),
        "ResidualConvUnit": DA.format(names="DepthAnythingPreActResidualLayer") + (
            "from transformers import DepthAnythingConfig\n"
            "class ResidualConvUnit(nn.Module):\n"
            "    def __init__(self, dim):\n"
            "        super().__init__()\n"
            "        self.unit = DepthAnythingPreActResidualLayer(DepthAnythingConfig(fusion_hidden_size=dim))\n"
            "        self.conv1, self.conv2 = self.unit.convolution1, self.unit.convolution2\n"
            "    def forward(self, x):\n"
            "        return self.unit(x)\n"),
        "FusionBlock": HF.format(names="DPTFeatureFusionLayer") + (
            "class FusionBlock(nn.Module):\n"
            "    def __init__(self, dim, with_skip=True):\n"
            "        super().__init__()\n"
            "        self.layer = DPTFeatureFusionLayer(DPTConfig(fusion_hidden_size=dim))\n"
            "    def forward(self, x, skip=None):\n"
            "        return self.layer(x, skip)\n")},
    "05_head_and_postprocess": {"RegressionHead": HF.format(names="DPTDepthEstimationHead") + (
        "class RegressionHead(nn.Module):\n"
        "    def __init__(self, feature_dim, last_dim, out_channels):\n"
        "        super().__init__()\n"
        "        self.head = DPTDepthEstimationHead(DPTConfig(fusion_hidden_size=feature_dim))\n"
        "    def forward(self, x):\n"
        "        return self.head([x])\n")},
}


def with_answers(assignment: str, answers: dict[str, str]) -> dict:
    nb = json.loads((REPO_SOLUTIONS / f"{assignment}.ipynb").read_text(encoding="utf-8"))
    for ex_id, source in answers.items():
        cell = next(c for c in nb["cells"] if f"ex:{ex_id}" in c["metadata"].get("tags", [])
                    and "solution" in c["metadata"]["tags"])
        cell["source"] = [source]
    return nb


@pytest.fixture(scope="module")
def transformers_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile-transformers")
    subs = root / "class"
    for assignment, answers in TRANSFORMERS_ANSWERS.items():
        for student, nb in (("delegates", with_answers(assignment, answers)),
                            ("honest", with_answers(assignment, {}))):
            path = subs / student / f"{assignment}.ipynb"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(nb), encoding="utf-8")
    before = guarded(subs, ROOT / "solutions")
    report = root / "report"
    proc = run_grader(str(subs), "--report-dir", str(report), "--jobs", "2")
    return {"subs": subs, "proc": proc, "before": before, "after": guarded(subs, ROOT / "solutions"),
            "data": load_reports(report) if report.is_dir() else {}}


@pytest.mark.slow
@pytest.mark.parametrize("assignment", list(TRANSFORMERS_ANSWERS))
def test_delegating_to_transformers_scores_zero_naming_it(transformers_run, assignment):
    proc = transformers_run["proc"]
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
    data = transformers_run["data"][str(transformers_run["subs"] / "delegates" / f"{assignment}.ipynb")]
    honest = transformers_run["data"][str(transformers_run["subs"] / "honest" / f"{assignment}.ipynb")]
    assert honest["score"] == honest["max_score"] and all(e["flags"] == [] for e in honest["exercises"])
    assert all(e["points"] == e["max_points"] for e in honest["exercises"] if e.get("kind") != "written")
    for e in data["exercises"]:
        if e["id"] in TRANSFORMERS_ANSWERS[assignment]:
            assert e["points"] == 0 and "transformers" in e["message"] and e["flags"] == ["reference"], e
        elif e.get("kind") == "written":        # scored by the teacher (written.py)
            assert e["points"] == 0 and e["flags"] == [], e
        elif e["id"] not in ("fuse_pyramid", "Reassemble_full"):   # fuse_pyramid builds on FusionBlock
            assert e["points"] == e["max_points"], e
    assert transformers_run["after"] == transformers_run["before"]
