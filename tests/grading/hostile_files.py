"""Hostile *files*: submissions whose bytes, names or file types attack the grader's shared code
(reading, staging, running, scoring, reporting) rather than the sandbox (issue #21).

``build_class(root)`` writes a class of the grading fixture (exercises ``add`` 1 point, ``grid`` 2,
``factor`` 3) under ``root/class``: two honest classmates and one student per case of ``CASES``.
Each case is (what it does, expected points, a text the named exercise's message or the
submission's error holds, whether the grader refuses the file). File types that cannot live in git
(FIFO, symlinks, a name that is not UTF-8) are made here, at test time.
"""
from __future__ import annotations

import base64
import copy
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from grading import crafted

BOMBS = Path(__file__).parent / "bombs"
HONEST = {"add": 1, "grid": 2, "factor": 3}
ZERO = {"add": 0, "grid": 0, "factor": 0}
HONEST_STUDENTS = ("honest_ann", "honest_bob")
DEEP = 1200                     # folders: a path of ~2.5 kB, within PATH_MAX (4096)
NB = f"{crafted.ASSIGNMENT}.ipynb"

# zipfile raises NotImplementedError ("zip file version 25.3") on this torch.save file with two
# bytes changed; found by fuzzing the results loader (3000 random mutations of a probe's file).
ZIP_VERSION = base64.b64encode((BOMBS / "zip_version.pt").read_bytes()).decode()
OVERWRITE_ADD = f"""
import base64, os
with open(os.path.join(os.environ["DPTLEARN_PROBE_DIR"], "results", "add.pt"), "wb") as fh:
    fh.write(base64.b64decode({ZIP_VERSION!r}))
"""
MARKDOWN = ("see https://evil.example/x or www.evil.example, mail a@b.co, <b>bold</b> "
            "**PASSED** _em_ ~~struck~~ [x](http://e) ![i](http://e/i.png) | pipe "
            "pass\u202edeliaf ze\u200bro")
CONTROLS = "bad\x01\x02\x08\x0b\x0c\x1f\x7f\x85 end"


# a setsid double fork (it escapes the kernel's process group) that waits for pytest's JUnit
# report and rewrites every time to "inf" (the run's duration became null; merge crashed on it)
JUNIT_REWRITER = r"""
import os, re, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        p, t0 = '/grade/work/junit.xml', time.time()
        while time.time() - t0 < 600:
            try:
                s = open(p, encoding='utf-8').read()
            except OSError:
                time.sleep(0.0005)
                continue
            if s.rstrip().endswith('</testsuites>') and 'time="inf"' not in s:
                with open(p + '.t', 'w', encoding='utf-8') as f:
                    f.write(re.sub(r'time="[^"]*"', 'time="inf"', s))
                os.replace(p + '.t', p)
            time.sleep(0.0005)
    os._exit(0)
"""


def raising_add(message: str) -> str:
    return f"def add(a, b):\n    raise ValueError({message!r})\n"


@dataclass
class Case:
    doc: str
    points: dict[str, int]
    text: str = ""                  # in the message of exercise ``where`` (or the error when refused)
    where: str = "add"
    refused: bool = False           # the grader does not read it: 0, "Needs a look", exit 3
    flags: list[str] = field(default_factory=list)
    note: str = ""                  # in one of the submission's notes ("Needs a look")


CASES = {
    "zip_header": Case("grid's cell overwrites add's results with a zip that makes zipfile raise "
                       "NotImplementedError", {"add": 0, "grid": 2, "factor": 3},
                       "not readable data", flags=["forgery"]),
    "surrogate_message": Case("add raises ValueError(chr(0xd800))", {"add": 0, "grid": 2, "factor": 3},
                              "ValueError: \\ud800"),
    "surrogate_json": Case("the notebook JSON holds escaped lone surrogates (valid JSON) in a markdown "
                           "cell, a comment and a string literal", HONEST, "passed"),
    "non_utf8_name": Case("folder and file names that are not UTF-8 (a legacy-code-page unzip)",
                          HONEST, "passed", note="not valid UTF-8"),
    "symlink_to_solutions": Case("01_fixture.ipynb is a symlink to the teacher's solution", ZERO,
                                 "a symbolic link", refused=True),
    "symlink_to_classmate": Case("01_fixture.ipynb is a symlink to honest_ann's notebook", ZERO,
                                 "a symbolic link", refused=True),
    "dangling_symlink": Case("01_fixture.ipynb is a symlink to nothing", ZERO, "a dangling symbolic link",
                             refused=True),
    "fifo": Case("01_fixture.ipynb is a FIFO (a read would block for ever)", ZERO, "a FIFO",
                 refused=True),
    "folder_named_ipynb": Case("01_fixture.ipynb is a folder", ZERO, "a folder", refused=True),
    "markdown_message": Case("add raises a message full of Markdown, bidi and zero-width characters",
                             {"add": 0, "grid": 2, "factor": 3}, "**PASSED**"),
    "control_message": Case("add raises a message full of control characters",
                            {"add": 0, "grid": 2, "factor": 3}, "bad\\x01\\x02\\x08"),
    # found playing the hostile student after the routes above were closed
    "nested_json": Case("the notebook holds a list nested 50 000 deep (json.loads raises "
                        "RecursionError)", ZERO, "nested too deeply"),
    "many_cells": Case("a notebook of 100 000 cells", ZERO, "100000 cells, more than the grader's "
                                                           "limit of 1000"),
    "huge_file": Case("a 21 MiB file (sparse: it costs the student nothing to hand in)", ZERO,
                      "more than the grader's limit of 20 MiB"),
    "malformed_cell": Case("a cell whose source is a list of numbers (the staging code joined it)",
                           ZERO, "not a valid notebook: cell 0"),
    "assignment_not_a_string": Case("metadata.dptlearn.assignment is a JSON object (unhashable: the "
                                    "lookup raised TypeError)", HONEST, "passed",
                                    note="which does not exist; matched 01_fixture by its file name"),
    "hard_link_outside": Case("01_fixture.ipynb is a hard link to a copy of the solution outside the "
                              "class folder (tar and cp -l keep hard links)", HONEST, "passed",
                              note="the file is a hard link (2 names)"),
    "link_to_folder": Case("a symlink named 01_fixture to a classmate's folder", ZERO,
                           "a symbolic link (to ../honest_bob)", refused=True),
    "deep_folders": Case(f"the notebook lies {DEEP} folders deep (os.walk and rglob recurse: "
                         f"RecursionError for the whole class)", HONEST, "passed"),
    "junit_rewriter": Case("add's cell leaves a setsid double-forked process that rewrites the "
                           "sandbox's junit.xml after pytest wrote it (every time=\"inf\")", HONEST,
                           "passed"),
    "bidi_name": Case("a file name with a right-to-left override (01_fixture\u202egnp.ipynb)", HONEST,
                      "passed", note="holds control or format characters"),
}
# bytes of the non-UTF-8 folder and file (Latin-1 "élève" and "café")
NON_UTF8_FOLDER = b"\xe9l\xe8ve"
NON_UTF8_FILE = b"01_fixture-caf\xe9.ipynb"


def remove_deep(top: Path) -> None:
    """``rm -r top`` without recursion: shutil.rmtree (and pytest's clean-up of old temporary
    folders) raises RecursionError on the ``deep_folders`` case's 1200 levels."""
    dirs, todo = [], [os.fsencode(top)]
    while todo:
        d = todo.pop()
        dirs.append(d)
        for name in os.listdir(d):
            p = os.path.join(d, name)
            (todo.append if os.path.isdir(p) and not os.path.islink(p) else os.unlink)(p)
    for d in reversed(dirs):
        os.rmdir(d)


def _notebook(edit) -> str:
    nb = copy.deepcopy(crafted.solution_nb())
    edit(nb)
    return json.dumps(nb)


def _surrogate_json() -> str:
    nb = crafted.solution_nb()
    nb["cells"].insert(0, {"cell_type": "markdown", "metadata": {"tags": ["x\ud800"]},
                           "source": ["lone \ud800 and \udfff here"]})
    cell = crafted.cell(nb, "add", "solution")
    cell["source"] = ["_s = '\ud800'  # \udc80\n"] + cell["source"]
    return json.dumps(nb)                   # ensure_ascii: written as the escapes "\ud800"


def build_class(root: Path) -> dict:
    """The class folder; returns {"class": folder, "paths": {case: path as the grader sees it},
    "honest": {student: path}}."""
    subs = root / "class"
    honest = {}
    for name in HONEST_STUDENTS:
        path = subs / name / NB
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(crafted.solution_nb()))
        honest[name] = path
    paths: dict[str, Path] = {}

    def folder(case: str) -> Path:
        (subs / case).mkdir()
        return subs / case

    paths["zip_header"] = folder("zip_header") / NB
    paths["zip_header"].write_text(_notebook(
        lambda nb: crafted.set_source(nb, "grid", "solution",
                                      "".join(crafted.cell(nb, "grid", "solution")["source"])
                                      + "\n" + OVERWRITE_ADD)))
    paths["surrogate_message"] = folder("surrogate_message") / NB
    paths["surrogate_message"].write_text(_notebook(
        lambda nb: crafted.set_source(nb, "add", "solution",
                                      "def add(a, b):\n    raise ValueError(chr(0xd800))\n")))
    paths["surrogate_json"] = folder("surrogate_json") / NB
    paths["surrogate_json"].write_text(_surrogate_json())
    raw = os.fsencode(subs) + b"/" + NON_UTF8_FOLDER
    os.mkdir(raw)
    with open(raw + b"/" + NON_UTF8_FILE, "w") as fh:
        fh.write(json.dumps(crafted.solution_nb()))
    paths["non_utf8_name"] = Path(os.fsdecode(raw + b"/" + NON_UTF8_FILE))
    paths["symlink_to_solutions"] = folder("symlink_to_solutions") / NB
    paths["symlink_to_solutions"].symlink_to(crafted.SOLUTIONS / NB)
    paths["symlink_to_classmate"] = folder("symlink_to_classmate") / NB
    paths["symlink_to_classmate"].symlink_to(honest["honest_ann"])
    paths["dangling_symlink"] = folder("dangling_symlink") / NB
    paths["dangling_symlink"].symlink_to(root / "nowhere" / NB)
    paths["fifo"] = folder("fifo") / NB
    os.mkfifo(paths["fifo"])
    paths["folder_named_ipynb"] = folder("folder_named_ipynb") / NB
    paths["folder_named_ipynb"].mkdir()
    (paths["folder_named_ipynb"] / "README.txt").write_text("not a notebook\n")
    paths["markdown_message"] = folder("markdown_message") / NB
    paths["markdown_message"].write_text(_notebook(
        lambda nb: crafted.set_source(nb, "add", "solution", raising_add(MARKDOWN))))
    paths["control_message"] = folder("control_message") / NB
    paths["control_message"].write_text(_notebook(
        lambda nb: crafted.set_source(nb, "add", "solution", raising_add(CONTROLS))))
    paths["nested_json"] = folder("nested_json") / NB
    deep = 50_000
    paths["nested_json"].write_text(json.dumps(crafted.solution_nb())[:-1]
                                    + ', "x": ' + "[" * deep + "]" * deep + "}")
    paths["many_cells"] = folder("many_cells") / NB
    paths["many_cells"].write_text(json.dumps({**crafted.solution_nb(), "cells": [
        crafted.code_cell("1") for _ in range(100_000)]}))
    paths["huge_file"] = folder("huge_file") / NB
    with open(paths["huge_file"], "wb") as fh:
        fh.truncate(21 * 2**20)
    paths["malformed_cell"] = folder("malformed_cell") / NB
    paths["malformed_cell"].write_text(_notebook(lambda nb: nb["cells"][0].update(source=[1, 2])))
    paths["assignment_not_a_string"] = folder("assignment_not_a_string") / NB
    paths["assignment_not_a_string"].write_text(_notebook(
        lambda nb: nb["metadata"].update(dptlearn={"assignment": {"01_fixture": [1]}})))
    outside = root / "teacher-copy" / NB
    outside.parent.mkdir()
    outside.write_text(json.dumps(crafted.solution_nb()))
    paths["hard_link_outside"] = folder("hard_link_outside") / NB
    os.link(outside, paths["hard_link_outside"])
    paths["link_to_folder"] = folder("link_to_folder") / crafted.ASSIGNMENT
    paths["link_to_folder"].symlink_to("../honest_bob")
    paths["junit_rewriter"] = folder("junit_rewriter") / NB
    paths["junit_rewriter"].write_text(_notebook(
        lambda nb: crafted.set_source(nb, "add", "solution",
                                      "".join(crafted.cell(nb, "add", "solution")["source"])
                                      + "\n" + JUNIT_REWRITER)))
    paths["bidi_name"] = folder("bidi_name") / "01_fixture\u202egnp.ipynb"
    paths["bidi_name"].write_text(json.dumps(crafted.solution_nb()))
    paths["deep_folders"] = folder("deep_folders") / ("a/" * DEEP) / NB
    fd = os.open(subs / "deep_folders", os.O_RDONLY)
    for _ in range(DEEP):               # makedirs recurses too: one level at a time, by fd
        os.mkdir("a", dir_fd=fd)
        fd, up = os.open("a", os.O_RDONLY, dir_fd=fd), fd
        os.close(up)
    out = os.open(NB, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
    os.write(out, json.dumps(crafted.solution_nb()).encode())
    os.close(out)
    os.close(fd)
    assert set(paths) == set(CASES)
    return {"class": subs, "paths": paths, "honest": honest}
