"""Written answers (dptlearn/course/grading/written.py): a Markdown cell tagged ``written`` and
``points:<n>``; the grader collects every answer into written-answers.csv, the teacher fills in
points, and ``merge --manual`` puts them into summary.csv, the gradebook and the feedback.
Unscored answers are listed, never a silent 0. Runs on a scratch course: the grading fixture plus
one written question."""
from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest

from dptlearn.course import exercises
from dptlearn.course.grading import grade
from dptlearn.course.grading.merging import merge
from dptlearn.course.grading.reportdir import ReportDirError

from grading import crafted

QUESTION = "why_round_up"
INTRO = ("### Exercise `why_round_up`: why the ×½ branch rounds up\n\n"
         "**Difficulty:** ★☆☆ · **Time:** ~5 min · **Points:** 2\n\n"
         "In two or three sentences: why must a halving branch round an odd grid up?\n\n"
         "<details><summary>Hint 1</summary>\n\nThink of the fusion block's skip.\n</details>\n")
ANSWER = ("*Your answer:*\n\n<!-- BEGIN SOLUTION -->\nThe coarser level is upsampled ×2 and "
          "added to this one: ⌈n/2⌉·2 ≥ n covers every row, ⌊n/2⌋·2 loses one.\n"
          "<!-- END SOLUTION -->\n")


def md(source: str, tags: list[str]) -> dict:
    return {"cell_type": "markdown", "metadata": {"tags": tags},
            "source": source.splitlines(keepends=True)}


@pytest.fixture
def course(tmp_path) -> Path:
    """A copy of the fixture's solutions with one written question of 2 points."""
    sol = tmp_path / "solutions"
    shutil.copytree(crafted.SOLUTIONS, sol)
    path = sol / f"{crafted.ASSIGNMENT}.ipynb"
    nb = json.loads(path.read_text())
    nb["cells"] += [md(INTRO, [f"ex:{QUESTION}", "exercise", "lecture:01_intro"]),
                    md(ANSWER, [f"ex:{QUESTION}", "written", "points:2"])]
    path.write_text(json.dumps(nb))
    return sol


def test_the_generator_reads_a_written_question_and_hands_out_an_empty_answer(course, tmp_path):
    (a,) = exercises.read_assignments(course)
    assert [ex.id for ex in a.written] == [QUESTION] and a.written[0].points == 2
    assert QUESTION not in [ex.id for ex in a.exercises]
    assert a.max_score == crafted.MAX_SCORE + 2
    exercises.generate(course, tmp_path / "out", crafted.LECTURES)
    cells = json.loads((tmp_path / "out" / f"{crafted.ASSIGNMENT}.ipynb").read_text())["cells"]
    (answer,) = [c for c in cells if "written" in c["metadata"].get("tags", [])]
    assert "".join(answer["source"]).strip() == "*Your answer:*"       # the model answer is gone
    assert answer["metadata"]["deletable"] is False and "editable" not in answer["metadata"]


@pytest.mark.parametrize("cell, problem", [
    ({"cell_type": "code", "metadata": {"tags": [f"ex:{QUESTION}", "written", "points:2"]},
      "source": [], "outputs": [], "execution_count": None}, "must be Markdown"),
    (md("x", [f"ex:{QUESTION}", "written"]), "has no 'points:<n>' tag"),
    (md("x", [f"ex:{QUESTION}", "written", "points:2", "check"]), "second answer or check cell"),
])
def test_a_malformed_written_cell_is_a_clear_error(course, cell, problem):
    path = course / f"{crafted.ASSIGNMENT}.ipynb"
    nb = json.loads(path.read_text())
    nb["cells"][-1] = cell
    path.write_text(json.dumps(nb))
    with pytest.raises(exercises.SourceError, match=problem):
        exercises.read_assignments(course)


def rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


@pytest.mark.slow
def test_answers_are_collected_scored_by_hand_and_merged_in(course, tmp_path, capsys):
    released = tmp_path / "released"
    exercises.generate(course, released, crafted.LECTURES)
    alice = json.loads((course / f"{crafted.ASSIGNMENT}.ipynb").read_text())
    for c in alice["cells"]:
        if "written" in c["metadata"].get("tags", []):
            c["source"] = ["Because the skip of the finer level must be covered: 21 rows -> 11, "
                           "=HYPERLINK(\"x\") <script>x</script>"]
    subs = tmp_path / "subs"
    for who, nb in (("alice", alice), ("bob", json.loads(
            (released / f"{crafted.ASSIGNMENT}.ipynb").read_text()))):
        (subs / who).mkdir(parents=True)
        (subs / who / f"{crafted.ASSIGNMENT}.ipynb").write_text(json.dumps(nb))
    report = tmp_path / "report"
    assert grade.main([str(subs), "--solutions", str(course), "--timeout", "30",
                       "--report-dir", str(report)]) == 0
    sheet = rows((report / "written-answers.csv").read_text())
    assert [(r["student"], r["question"], r["max_points"], r["points"]) for r in sheet] == [
        ("alice", QUESTION, "2", ""), ("bob", QUESTION, "2", "")]
    assert sheet[0]["answer"].startswith("Because the skip") and sheet[1]["answer"] == "*Your answer:*"
    summary = {r["student"]: r for r in rows((report / "summary.csv").read_text())}
    assert summary["alice"][f"{QUESTION}:points"] == "" and summary["alice"]["score"] == "6"
    assert summary["alice"]["max_score"] == "6"     # a written answer counts once it is scored
    md_text = (report / "summary.md").read_text()
    assert "written answer why_round_up of 01_fixture is not scored yet" in md_text
    assert md_text.count("is not scored yet") == 2                    # both, listed
    fb = (report / "feedback" / "alice.html").read_text()
    assert "Because the skip" in fb and "&lt;script&gt;" in fb and "not scored yet" in fb

    for r in sheet:                          # the teacher scores alice, leaves bob for later
        if r["student"] == "alice":
            r["points"], r["comment"] = "1", "right idea; say what the skip is"
    filled = tmp_path / "scores.csv"
    with filled.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(sheet[0]))
        w.writeheader()
        w.writerows(sheet)
    capsys.readouterr()
    out = tmp_path / "final"
    assert grade.main(["merge", str(report), "--manual", str(filled), "--report-dir", str(out)]) == 0
    assert "1 written answer(s) scored, 1 not scored yet" in capsys.readouterr().out
    book = {r["Student"]: r["dptlearn total"] for r in rows((out / "gradebook.csv").read_text())}
    assert book == {"alice": "7", "bob": "0"}
    summary = {r["student"]: r for r in rows((out / "summary.csv").read_text())}
    assert summary["alice"][f"{QUESTION}:points"] == "1" and summary["alice"]["score"] == "7"
    assert summary["bob"][f"{QUESTION}:points"] == "" and summary["alice"]["max_score"] == "8"
    assert (out / "summary.md").read_text().count("is not scored yet") == 1
    fb = (out / "feedback" / "alice.md").read_text()
    assert "scored by your teacher: 1/2 — right idea; say what the skip is" in fb
    assert "**Total: 7/8**" in fb
    again = rows((out / "written-answers.csv").read_text())
    assert [(r["student"], r["points"], r["comment"]) for r in again] == [
        ("alice", "1", "right idea; say what the skip is"), ("bob", "", "")]

    for bad, message in (("3", "more than its 2"), ("1.5", "a whole number"),
                         ("x", "a whole number")):
        sheet[0]["points"] = bad
        with filled.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(sheet[0]))
            w.writeheader()
            w.writerows(sheet)
        with pytest.raises(ReportDirError, match=message):
            merge([report], tmp_path / "bad", manual=filled)
    sheet[0]["points"], sheet[0]["report"] = "1", "nobody"
    with filled.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(sheet[0]))
        w.writeheader()
        w.writerows(sheet)
    with pytest.raises(ReportDirError, match="no written answer 'why_round_up' in report 'nobody'"):
        merge([report], tmp_path / "bad", manual=filled)
    assert not (tmp_path / "bad").exists()


def _write_sheet(path: Path, sheet: list[dict], drop: tuple[str, ...] = ()) -> None:
    fields = [k for k in sheet[0] if k not in drop]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(sheet)


@pytest.mark.slow
def test_a_score_for_an_answer_that_changed_since_the_sheet_is_not_applied(course, tmp_path,
                                                                           capsys):
    """The teacher's case: bob's empty answer got 0/2, bob resubmitted a good answer, the
    regrade was merged with the old sheet: the 0 must not land on the new answer."""
    released = tmp_path / "released"
    exercises.generate(course, released, crafted.LECTURES)
    subs = tmp_path / "subs"
    (subs / "bob").mkdir(parents=True)
    bob = subs / "bob" / f"{crafted.ASSIGNMENT}.ipynb"
    shutil.copy(released / f"{crafted.ASSIGNMENT}.ipynb", bob)     # the answer as handed out
    report = tmp_path / "report"
    capsys.readouterr()
    assert grade.main([str(subs), "--solutions", str(course), "--report-dir", str(report)]) == 0
    said = capsys.readouterr().out                  # the console total says what is pending
    assert "(class total 0/6, +2 written point(s) not scored yet)" in said, said
    sheet = rows((report / "written-answers.csv").read_text())
    assert sheet[0]["answer_sha256"].startswith("sha256:") and len(sheet[0]["answer_sha256"]) == 23
    sheet[0]["points"] = "0"                                        # the teacher: 0/2, empty
    scores = tmp_path / "scores.csv"
    _write_sheet(scores, sheet)

    nb = json.loads(bob.read_text())
    for c in nb["cells"]:
        if "written" in c["metadata"].get("tags", []):
            c["source"] = ["A halving branch must round up: the coarser level doubled must cover "
                           "every row of the finer one."]
    bob.write_text(json.dumps(nb))
    later = tmp_path / "regrade-bob"
    assert grade.main([str(subs / "bob"), "--solutions", str(course),
                       "--report-dir", str(later)]) == 0
    for drop in ((), ("answer_sha256",)):                # this sheet, and one made before the hash
        _write_sheet(scores, sheet, drop)
        capsys.readouterr()
        out = tmp_path / f"merged{len(drop)}"
        merge([report], out, regrades=[later], manual=scores)
        said = capsys.readouterr().out
        assert f"NOT applied: the 0/2 for {QUESTION} of" in said, said
        assert "0 written answer(s) scored, 1 not scored yet" in said
        assert "1 row(s) NOT applied: their answer changed" in said
        row = rows((out / "summary.csv").read_text())[0]
        assert row[f"{QUESTION}:points"] == "" and row["max_score"] == "6", row
        assert "is not scored yet" in (out / "summary.md").read_text()
        fresh = rows((out / "written-answers.csv").read_text())[0]
        assert fresh["answer"].startswith("A halving branch") and fresh["points"] == ""

    # the same row applies to the answer it was made for; a regrade then says it discards it
    _write_sheet(scores, sheet)
    scored = tmp_path / "scored"
    merge([report], scored, manual=scores)
    assert rows((scored / "summary.csv").read_text())[0][f"{QUESTION}:points"] == "0"
    capsys.readouterr()
    merge([scored], tmp_path / "rescored", regrades=[later])
    said = capsys.readouterr().out
    assert f"discards 1 earlier written score(s) (bob's {QUESTION})" in said, said
