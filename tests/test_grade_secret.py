"""The class-wide grading secret (dptlearn/course/grading/secret.py) and regrades
(``merge --regrade``, dptlearn/course/grading/merging.py): the same DPTLEARN_GRADING_SECRET draws
the same inputs in every run and shard, so shards + merge equal one run byte for byte (timings
aside), and a later run over some students replaces exactly their rows."""
from __future__ import annotations

import copy
import csv
import hashlib
import hmac
import io
import json
from pathlib import Path

import pytest

from dptlearn.course.grading import grade
from dptlearn.course.grading.report import ExerciseResult, Result
from dptlearn.course.grading.merging import merge
from dptlearn.course.grading.reportdir import MANIFEST, ReportDirError
from dptlearn.course.grading.secret import ENV, SecretError, Seeds, class_secret

from grading import crafted
from test_grade_reports import class_results, folder_files, graded, write_run  # noqa: E402

SECRET = "a3f1c9e07b2d4c58a1e6f0b3d9c2e7a4"


def test_one_secret_gives_one_seed_per_exercise_and_none_gives_fresh_ones():
    a, b = Seeds(SECRET.encode()), Seeds(SECRET.encode())
    assert a.seed("grid") == b.seed("grid") != a.seed("factor")
    expected = int.from_bytes(hmac.new(SECRET.encode(), b"dptlearn-grading-seed\0grid",
                                       hashlib.sha256).digest()[:8], "big") >> 1
    assert a.seed("grid") == expected and 0 <= expected < 2**63        # an independent HMAC
    assert Seeds(b"another secret, also long").seed("grid") != a.seed("grid")
    fresh = Seeds(None)
    assert len({fresh.seed("grid") for _ in range(4)}) == 4 and fresh.fingerprint is None
    assert a.fingerprint == b.fingerprint and len(a.fingerprint) == 16
    assert SECRET not in a.fingerprint and f"{a.seed('grid'):x}" not in a.fingerprint


def test_a_short_or_empty_secret_is_refused_without_printing_it(tmp_path, capsys):
    assert class_secret({}) is None
    with pytest.raises(SecretError, match="has 5 characters; expected at least 16") as raised:
        class_secret({ENV: "hunt2"})
    assert "hunt2" not in str(raised.value)
    assert class_secret({ENV: " \n"}) is None          # Actions' value of a secret that is not set
    assert class_secret({ENV: f" {SECRET}\n"}) == SECRET.encode()     # a file's newline is dropped


def test_the_grader_refuses_a_short_secret_with_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(ENV, "hunt2")
    sub = tmp_path / "eve" / f"{crafted.ASSIGNMENT}.ipynb"
    sub.parent.mkdir()
    sub.write_text(json.dumps(crafted.solution_nb()))
    with pytest.raises(SystemExit) as raised:
        grade.main([str(sub), "--solutions", str(crafted.SOLUTIONS),
                    "--report-dir", str(tmp_path / "r")])
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert f"{ENV} is set but has 5 characters" in err and "hunt2" not in err
    assert not (tmp_path / "r").exists()


# ----------------------------------------------------------------------------- merge

def shards_with(tmp_path, monkeypatch, secrets: list[str | None]) -> tuple[list[Path], list[str]]:
    results = graded(class_results())
    subs = [r.submission for r in results]
    folders = []
    for k, secret in enumerate(secrets, 1):
        if secret is None:
            monkeypatch.delenv(ENV, raising=False)
        else:
            monkeypatch.setenv(ENV, secret)
        folders.append(tmp_path / f"s{k}")
        from dptlearn.course.grading.submissions import in_shard
        write_run(folders[-1], subs, copy.deepcopy(in_shard(results, (k, len(secrets)))),
                  (k, len(secrets)))
    return folders, subs


def test_merge_refuses_shards_graded_with_different_secrets(tmp_path, monkeypatch):
    folders, _ = shards_with(tmp_path, monkeypatch, [SECRET, SECRET + "x", SECRET])
    m = [json.loads((f / MANIFEST).read_text()) for f in folders]
    assert m[0]["secret"] == m[2]["secret"] == Seeds(SECRET.encode()).fingerprint != m[1]["secret"]
    assert all(SECRET not in (f / MANIFEST).read_text() for f in folders)
    with pytest.raises(ReportDirError, match=f"graded with different {ENV} values"):
        merge(folders, tmp_path / "out")
    folders, _ = shards_with(tmp_path / "b", monkeypatch, [SECRET, None, SECRET])
    with pytest.raises(ReportDirError, match="or one without it"):
        merge(folders, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_regrade_replaces_exactly_its_students_rows_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV, SECRET)
    results = graded(class_results())
    subs = [r.submission for r in results]
    write_run(tmp_path / "class", subs, copy.deepcopy(results), None)
    who = results[1].student_key
    again = [copy.deepcopy(r) for r in results if r.student_key == who]
    for r in again:                      # the regrade: full marks now, a name of its own run
        r.exercises = [ExerciseResult(e.id, e.max_points, e.max_points, True, "passed")
                       for e in r.exercises]
        r.score, r.name = r.max_score, Path(r.submission).stem
    write_run(tmp_path / "later", [r.submission for r in again], again, None)
    said = []
    merged = merge([tmp_path / "class"], tmp_path / "out", [tmp_path / "later"], say=said.append)
    assert len(merged) == len(results) and len(said) == 1
    assert f"{len(again)} submission(s) of 1 student(s) ({again[0].student}) replace " \
           f"{len(again)} earlier one(s)" in said[0]
    before, after = folder_files(tmp_path / "class"), folder_files(tmp_path / "out")
    mine = {r.name for r in results if r.student_key == who}
    for name in {r.name for r in results} - mine:          # everyone else: byte for byte
        assert after[f"{name}.json"] == before[f"{name}.json"]
    for name in mine:                                       # theirs: the regrade's, noted
        d = json.loads(after[f"{name}.json"])
        assert d["score"] == d["max_score"] and "re-graded" in d["notes"][-1]
    rows = list(csv.DictReader(io.StringIO(after["gradebook.csv"].decode())))
    old = list(csv.DictReader(io.StringIO(before["gradebook.csv"].decode())))
    assert len(rows) == len(old)
    for row, was in zip(rows, old):                # one row per student, in the same order
        if row["Student"] == again[0].student:
            assert row["dptlearn total"] == str(again[0].max_score) != was["dptlearn total"]
        else:
            assert row == was
    assert "re-graded" in after["summary.md"].decode()



def _three_assignments(results: list[Result]) -> list[Result]:
    for r in results:                   # 00_x, 01_x, 02_x: each student's three assignments
        r.assignment = Path(r.submission).stem[-4:]
    return results


def test_a_regrade_of_one_notebook_keeps_the_students_other_assignments(tmp_path, monkeypatch):
    """The teacher's case: ``dptlearn-grade submissions/bob/03_reassemble.ipynb`` then merge
    --regrade dropped bob's 02 from the gradebook (replace was per student)."""
    monkeypatch.setenv(ENV, SECRET)
    results = _three_assignments(graded(class_results()))
    write_run(tmp_path / "class", [r.submission for r in results], copy.deepcopy(results), None)
    bob = next(r for r in results if r.student == "s01" and r.assignment == "01_x")
    again = copy.deepcopy(bob)
    again.exercises = [ExerciseResult(e.id, e.max_points, e.max_points, True, "passed")
                       for e in again.exercises]
    again.score, again.name = again.max_score, Path(again.submission).stem
    write_run(tmp_path / "later", [again.submission], [again], None)
    said = []
    merged = merge([tmp_path / "class"], tmp_path / "out", [tmp_path / "later"], say=said.append)
    assert len(merged) == len(results)
    assert "1 submission(s) of 1 student(s) (s01) replace 1 earlier one(s)" in said[0]
    assert said[1].endswith("kept from the earlier run (not graded again): s01's 00_x, s01's 02_x")
    mine = sorted((r.assignment, r.score) for r in merged if r.student == "s01")
    before = {r.assignment: r.score for r in results if r.student == "s01"}
    assert mine == [("00_x", before["00_x"]), ("01_x", again.max_score), ("02_x", before["02_x"])]
    book = list(csv.DictReader(io.StringIO((tmp_path / "out" / "gradebook.csv").read_text())))
    (row,) = [b for b in book if b["Student"] == "s01"]
    assert row["00_x"] == str(before["00_x"]) and row["02_x"] == str(before["02_x"])
    assert row["01_x"] == str(again.max_score)
    assert row["dptlearn total"] == str(before["00_x"] + before["02_x"] + again.max_score)


def test_a_regrade_from_another_folder_is_refused_with_the_command_to_run(tmp_path, monkeypatch):
    """The teacher's case: bob re-graded from resub/bob/ replaced nothing and left two gradebook
    rows for login bob."""
    monkeypatch.setenv(ENV, SECRET)
    results = _three_assignments(graded(class_results()))
    write_run(tmp_path / "class", [r.submission for r in results], copy.deepcopy(results), None)
    again = copy.deepcopy(next(r for r in results if r.student == "s01" and r.assignment == "01_x"))
    again.submission, again.student_folder = "resub/s01/01_x.ipynb", "resub/s01"
    write_run(tmp_path / "later", [again.submission], [again], None)
    with pytest.raises(ReportDirError, match=r"student 's01' was graded from 'resub/s01', but the "
                       r"class run has this student from 'subs/s01'.*regrade from the class's "
                       r"path.*dptlearn-grade subs/s01 --report-dir"):
        merge([tmp_path / "class"], tmp_path / "out", [tmp_path / "later"])
    assert not (tmp_path / "out").exists()
    late = copy.deepcopy(again)             # a student the class did not have is still added
    late.student, late.student_folder, late.submission = "zed", "resub/zed", "resub/zed/01_x.ipynb"
    write_run(tmp_path / "late", [late.submission], [late], None)
    merged = merge([tmp_path / "class"], tmp_path / "out", [tmp_path / "late"], say=lambda m: None)
    assert len(merged) == len(results) + 1

def test_a_regrade_with_another_secret_or_solutions_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV, SECRET)
    results = graded(class_results())
    write_run(tmp_path / "class", [r.submission for r in results], copy.deepcopy(results), None)
    monkeypatch.setenv(ENV, SECRET[::-1])
    write_run(tmp_path / "later", [results[0].submission], [copy.deepcopy(results[0])], None)
    with pytest.raises(ReportDirError, match="different DPTLEARN_GRADING_SECRET"):
        merge([tmp_path / "class"], tmp_path / "out", [tmp_path / "later"])
    monkeypatch.setenv(ENV, SECRET)
    write_run(tmp_path / "later2", [results[0].submission], [copy.deepcopy(results[0])], None)
    m = json.loads((tmp_path / "later2" / MANIFEST).read_text())
    (tmp_path / "later2" / MANIFEST).write_text(json.dumps({**m, "solutions": "0" * 64}))
    with pytest.raises(ReportDirError, match="different solutions"):
        merge([tmp_path / "class"], tmp_path / "out", [tmp_path / "later2"])
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- end to end

@pytest.mark.slow
def test_with_a_secret_shards_and_merge_equal_one_run_and_a_regrade_fits_in(tmp_path, monkeypatch):
    """3 students (a folder with full marks, a folder with the grid mistake, a Canvas name): one
    run and 2 shards + merge give the same summary.csv, gradebook.csv and feedback, messages
    included; then bob fixes his notebook, is re-graded alone and merged in."""
    monkeypatch.setenv(ENV, SECRET)
    subs = tmp_path / "subs"
    wrong = crafted.solution_nb()
    crafted.mistake_grid(wrong)
    for rel, nb in (("alice/01_fixture.ipynb", crafted.solution_nb()),
                    ("bob/01_fixture.ipynb", wrong),
                    ("doejane_LATE_12_345_01_fixture.ipynb", wrong)):
        (subs / rel).parent.mkdir(parents=True, exist_ok=True)
        (subs / rel).write_text(json.dumps(nb))
    args = [str(subs), "--solutions", str(crafted.SOLUTIONS), "--timeout", "30"]
    assert grade.main(args + ["--report-dir", str(tmp_path / "one"), "--jobs", "2"]) == 0
    for k in (1, 2):
        assert grade.main(args + ["--report-dir", str(tmp_path / f"s{k}"), "--shard", f"{k}/2"]) == 0
    assert grade.main(["merge", str(tmp_path / "s1"), str(tmp_path / "s2"),
                       "--report-dir", str(tmp_path / "merged")]) == 0
    one, merged = folder_files(tmp_path / "one"), folder_files(tmp_path / "merged")
    assert sorted(one) == sorted(merged)
    for name in ["summary.csv", "gradebook.csv", *[n for n in one if n.startswith("feedback/")]]:
        assert merged[name] == one[name], name                 # messages included
    assert {n for n in one if n.startswith("feedback/")} == {
        f"feedback/{s}.{ext}" for s in ("alice", "bob", "doejane") for ext in ("html", "md")}
    bob = one["feedback/bob.md"].decode()
    assert "✗ `grid` 0/2" in bob and "[[tokens[c * nh + r] for c in range(nw)]" in bob
    assert "alice" not in bob and "doejane" not in bob
    assert "handed in late" in one["feedback/doejane.md"].decode()

    (subs / "bob" / "01_fixture.ipynb").write_text(json.dumps(crafted.solution_nb()))
    assert grade.main([str(subs / "bob"), "--solutions", str(crafted.SOLUTIONS), "--timeout", "30",
                       "--report-dir", str(tmp_path / "bob-again")]) == 0
    assert grade.main(["merge", str(tmp_path / "merged"), "--regrade", str(tmp_path / "bob-again"),
                       "--report-dir", str(tmp_path / "final")]) == 0
    final = folder_files(tmp_path / "final")
    rows = {r["Student"]: r["dptlearn total"]
            for r in csv.DictReader(io.StringIO(final["gradebook.csv"].decode()))}
    assert rows == {"alice": "6", "bob": "6", "doejane": "4"}
    assert sorted(final) == sorted(one)                        # bob keeps his report name
    for name in one:
        if name.endswith(".json") and "bob" not in name:
            assert final[name] == merged[name], name        # the merge it amends
    assert "✓ `grid` 2/2" in final["feedback/bob.md"].decode()
