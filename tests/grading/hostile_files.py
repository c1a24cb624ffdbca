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

import crafted

BOMBS = Path(__file__).parent / "bombs"
HONEST = {"add": 1, "grid": 2, "factor": 3}
ZERO = {"add": 0, "grid": 0, "factor": 0}
HONEST_STUDENTS = ("honest_ann", "honest_bob")
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


CASES = {
    "zip_header": Case("grid's cell overwrites add's results with a zip that makes zipfile raise "
                       "NotImplementedError", {"add": 0, "grid": 2, "factor": 3},
                       "not readable data", flags=["forgery"]),
    "surrogate_message": Case("add raises ValueError(chr(0xd800))", {"add": 0, "grid": 2, "factor": 3},
                              "ValueError: \\ud800"),
    "surrogate_json": Case("the notebook JSON holds escaped lone surrogates (valid JSON) in a markdown "
                           "cell, a comment and a string literal", HONEST, "passed"),
    "non_utf8_name": Case("folder and file names that are not UTF-8 (a legacy-code-page unzip)",
                          HONEST, "passed"),
    "symlink_to_solutions": Case("01_fixture.ipynb is a symlink to the teacher's solution", ZERO,
                                 "a symbolic link", refused=True),
    "symlink_to_classmate": Case("01_fixture.ipynb is a symlink to honest_ann's notebook", ZERO,
                                 "a symbolic link", refused=True),
    "dangling_symlink": Case("01_fixture.ipynb is a symlink to nothing", ZERO, "a symbolic link",
                             refused=True),
    "fifo": Case("01_fixture.ipynb is a FIFO (a read would block for ever)", ZERO, "a FIFO",
                 refused=True),
    "folder_named_ipynb": Case("01_fixture.ipynb is a folder", ZERO, "a folder", refused=True),
    "markdown_message": Case("add raises a message full of Markdown, bidi and zero-width characters",
                             {"add": 0, "grid": 2, "factor": 3}, "**PASSED**"),
    "control_message": Case("add raises a message full of control characters",
                            {"add": 0, "grid": 2, "factor": 3}, "bad\\x01\\x02\\x08"),
}
# bytes of the non-UTF-8 folder and file (Latin-1 "élève" and "café")
NON_UTF8_FOLDER = b"\xe9l\xe8ve"
NON_UTF8_FILE = b"01_fixture-caf\xe9.ipynb"


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
    assert set(paths) == set(CASES)
    return {"class": subs, "paths": paths, "honest": honest}
