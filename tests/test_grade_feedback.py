"""Feedback per student (dptlearn/course/grading/feedback.py): ``feedback/<student>.html`` and
``.md`` in every report folder, with the student's points, the checks' messages, their own code of
a failed exercise and the notes that concern them; nothing of another student; hostile text stays
text. The HTML is opened in a real Chromium (Debian's /usr/bin/chromium, as tests/test_book.py;
skipped where it is missing or cannot launch)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from dptlearn.course.grading.feedback import exercise_code, feedback_names, write_feedback
from dptlearn.course.grading.report import ExerciseResult, Result

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
HOSTILE = ('<img src="http://127.0.0.1:9/x.png" onerror="document.title=\'pwned\'">'
           '<script>document.title="pwned"</script>[link](http://127.0.0.1:9/) **bold** `tick`')


def result(student, sub, exercises, **kw) -> Result:
    r = Result(sub, sub.replace("/", "__").removesuffix(".ipynb"), "01_fixture", 0, 6,
               exercises, student=student, student_from="folder",
               student_folder=str(Path(sub).parent), **kw)
    r.score = sum(e.points for e in exercises)
    return r


def ex(id_, points, max_points, message, code="", flags=()):
    return ExerciseResult(id_, points, max_points, points == max_points, message, list(flags),
                          code=code)


def the_class() -> list[Result]:
    return [
        result("alice", "subs/alice/01_fixture.ipynb",
               [ex("add", 1, 1, "passed (2 cases)"), ex("grid", 0, 2, "to_grid: column-major "
                   "order: you filled the grid down the columns", "def to_grid(t, nh, nw):\n"
                   "    return ALICE_SECRET_CODE"), ex("factor", 3, 3, "passed")],
               notes=["handed in late (Canvas's download name says LATE)"]),
        result("bob", "subs/bob/01_fixture.ipynb",
               [ex("add", 0, 1, f"add: wrong {HOSTILE}", f"x = '{HOSTILE}'\nBOB_SECRET_CODE = 1"),
                ex("grid", 2, 2, "passed"), ex("factor", 3, 3, "passed")]),
        result("bob", "subs/bob/copy.ipynb",            # handed in twice: a note for bob only
               [ex("add", 0, 1, "add: wrong again"), ex("grid", 0, 2, "grid: wrong"),
                ex("factor", 0, 3, "factor: wrong")]),
    ]


def test_one_file_pair_per_student_with_their_points_code_and_notes(tmp_path):
    assert write_feedback(tmp_path, the_class()) == ["alice.html", "alice.md", "bob.html", "bob.md"]
    alice = (tmp_path / "feedback" / "alice.md").read_text()
    assert "**Total: 4/6**" in alice                              # 1 + 0 + 3
    assert "✗ `grid` 0/2: `to_grid: column-major order" in alice
    assert "return ALICE_SECRET_CODE" in alice and "handed in late" in alice
    bob = (tmp_path / "feedback" / "bob.md").read_text()
    assert "**Total: 5/6**" in bob                                # the best of his two copies
    assert "handed in 01_fixture 2 times" in bob and "BOB_SECRET_CODE" in bob
    for mine, other in (("alice", "bob"), ("bob", "alice")):      # nothing of anyone else
        for ext in (".html", ".md"):
            text = (tmp_path / "feedback" / f"{mine}{ext}").read_text()
            assert other not in text and f"{other.upper()}_SECRET_CODE" not in text
    html = (tmp_path / "feedback" / "alice.html").read_text()
    assert "return ALICE_SECRET_CODE" in html and "4/6" in html


def test_feedback_is_self_contained_and_escaped(tmp_path):
    write_feedback(tmp_path, the_class())
    html = (tmp_path / "feedback" / "bob.html").read_text()
    assert "<script" not in html and "<img" not in html and "onerror=\"" not in html
    assert "&lt;script&gt;" in html and "&lt;img src=&#34;http" in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html)   # no remote assets
    assert "default-src 'none'" in html                   # and the page forbids them anyway
    md = (tmp_path / "feedback" / "bob.md").read_text()
    line = next(ln for ln in md.splitlines() if "add: wrong <img" in ln)
    assert re.search(r"`+ ?add: wrong <img", line)         # a code span: nothing in it is parsed
    assert "````python" in md or "```python" in md


def test_students_whose_names_make_one_file_name_get_one_each():
    a = result("Jane Doe", "dl1/x.ipynb", [])
    b = result("Jane Doe", "dl2/x.ipynb", [])
    c = result("../../etc/passwd", "dl3/x.ipynb", [])
    names = feedback_names([a, b, c])
    assert len(set(names.values())) == 3
    assert all(re.fullmatch(r"[\w.-]+", n) and not n.startswith(".") for n in names.values())
    assert names[c.student_key] == "submission-.._.._etc_passwd"          # no folder, not hidden


def test_exercise_code_is_the_exercises_code_cells_without_the_check():
    def cell(src, tags):
        return {"cell_type": "code", "source": src, "metadata": {"tags": tags}}
    cells = [cell("import torch", []), cell("def f():\n    return 1\n", ["ex:f", "solution"]),
             cell("checks.f(f)", ["ex:f", "check", "points:1"]), cell("f()", ["ex:f"]),
             cell("def g(): pass", ["ex:g", "solution"]),
             {"cell_type": "markdown", "source": "ex f", "metadata": {"tags": ["ex:f"]}}]
    assert exercise_code(cells, "f") == "def f():\n    return 1\n\nf()"
    assert exercise_code([cell("x = '\x1b[31m\u202e'", ["ex:f"])], "f") == "x = '\\u202e'"


# ----------------------------------------------------------------------------- in a browser

@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: run `make browser-deps` "
                    "(scripts/install_browser.sh installs Debian's chromium)")
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        try:
            b = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                   args=CHROMIUM_FLAGS)
        except PlaywrightError as exc:
            detail = " | ".join(line.strip() for line in str(exc).splitlines()[:6])
            pytest.skip(f"{CHROMIUM} could not be launched: {detail}")
        try:
            yield b
        finally:
            b.close()


@pytest.mark.browser
def test_feedback_renders_in_chromium_with_only_that_students_data(tmp_path, browser):
    write_feedback(tmp_path, the_class())
    page = browser.new_page()
    requests, errors = [], []
    page.on("request", lambda req: requests.append(req.url))
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        for student, other, total in (("bob", "alice", "5/6"), ("alice", "bob", "4/6")):
            url = (tmp_path / "feedback" / f"{student}.html").as_uri()
            requests.clear()
            page.goto(url)
            page.wait_for_load_state("load")
            body = page.inner_text("body")
            assert page.title() == f"Feedback for {student}"         # no script ran
            assert f"Total: {total}" in body and page.inner_text("h1") == f"Feedback for {student}"
            rows = page.locator("tr.exercise").all_inner_texts()
            assert len(rows) == (6 if student == "bob" else 3)
            assert other not in body and other.upper() not in page.content()
            assert requests == [url], requests                       # nothing fetched but the page
            assert page.locator("script, img, iframe, object, link").count() == 0
            if student == "bob":
                assert "add: wrong <img src=" in body                # shown as text
                page.locator("details summary").first.click()
                assert "BOB_SECRET_CODE = 1" in page.inner_text("details pre")
            else:
                assert "handed in late" in body and "✗ 0/2" in body
        assert errors == []
    finally:
        page.close()


def test_a_capstone_zero_is_linked_to_the_misnamed_notebook(tmp_path):
    """06 scored 0 because 03 was missing from the sandbox; the student's 03, handed in as
    homework.ipynb without metadata, matched no assignment: summary.md and the feedback say so."""
    from dptlearn.course.grading.report import summary_md
    needs = ("MyDUSt3RHead: 06_dust3r_head needs your answers from 03_reassemble.ipynb in the same "
             "folder (/grade/work), and it is not there. Keep all your exercise notebooks together")

    def capstone(student):
        r = result(student, f"subs/{student}/06_dust3r_head.ipynb",
                   [ex("MyDUSt3RHead", 0, 6, needs), ex("convert_dust3r_state_dict", 0, 4, needs)])
        r.assignment, r.max_score = "06_dust3r_head", 10
        return r
    lost = Result("subs/alice/homework.ipynb", "alice__homework", None, 0, 0, [],
                  error="not graded: no assignment matches 'homework.ipynb'", student="alice",
                  student_from="folder", student_folder="subs/alice")
    results = [capstone("alice"), lost, capstone("bob")]        # bob handed in no 03 at all
    look = summary_md(results).split("## Needs a look", 1)[1]
    assert ("06_dust3r_head scored 0 because it needs 03_reassemble.ipynb; this student's "
            "'homework.ipynb' matched no assignment") in look
    assert look.count("scored 0 because it needs") == 1
    write_feedback(tmp_path, results)
    assert "'homework.ipynb' matched no assignment" in (tmp_path / "feedback" / "alice.md").read_text()
    assert "matched no assignment" not in (tmp_path / "feedback" / "bob.md").read_text()


def test_the_teachers_class_reads_plainly_to_each_student(tmp_path):
    """What the teacher found: dave's notebook that matched no assignment read "Total: 5/5" and
    "`not graded`: 0/0" with nothing telling him to hand it in again; erin read "student 'erin'
    handed in …"; a written answer sat in a ```python block and showed "0/2" in summary.md but
    "—/2" in the feedback; summary.md's total of an assignment with a pending answer said 6/6."""
    from dptlearn.course.grading.report import summary_md
    graded = result("dave", "subs/dave/03_reassemble.ipynb", [ex("add", 1, 1, "passed")])
    lost = Result("subs/dave/assignment3.ipynb", "dave__assignment3", None, 0, 0, [],
                  error="not graded: no assignment matches 'assignment3.ipynb' (expected one of "
                        "['01_fixture'])", student="dave", student_from="folder",
                  student_folder="subs/dave")
    erin = [result("erin", f"subs/erin/{n}", [ex("add", p, 1, "passed" if p else "add: wrong")])
            for n, p in (("01_fixture.ipynb", 0), ("01_fixture (1).ipynb", 1))]
    answer = ExerciseResult("why_round_up", 0, 2, False, "not scored yet: your teacher scores "
                            "written answers by hand", [], code="Because **the skip** [x](y)",
                            kind="written", unscored=True)
    frank = result("frank", "subs/frank/01_fixture.ipynb",
                   [ex("add", 1, 1, "passed"), ex("grid", 2, 2, "passed"),
                    ex("factor", 3, 3, "passed"), answer])
    frank.max_score = 6                             # the pending 2 are left out of max_score
    write_feedback(tmp_path, [graded, lost, *erin, frank])
    dave = (tmp_path / "feedback" / "dave.md").read_text()
    assert "**Total: 1/6** (1 notebook(s) you handed in were not graded: see below and hand " \
           "them in again)" in dave
    assert "## `assignment3.ipynb: not graded`: not graded" in dave and "0/0" not in dave
    assert "You handed in assignment3.ipynb, but it matches none of the course's assignments, " \
           "so it was not graded and counts for nothing" in dave
    assert "hand it in again" in dave
    html = (tmp_path / "feedback" / "dave.html").read_text()
    assert "not graded: see below and hand them in again" in html and "0/0" not in html
    erin_md = (tmp_path / "feedback" / "erin.md").read_text()
    assert "You handed in 01_fixture 2 times (01_fixture (1).ipynb, 01_fixture.ipynb); your " \
           "grade counts the best score, 1" in erin_md
    assert "student 'erin'" not in erin_md
    frank_md = (tmp_path / "feedback" / "frank.md").read_text()
    assert "```text\n  Because **the skip** [x](y)\n  ```" in frank_md and "```python" not in frank_md
    assert "… `why_round_up` not scored yet (2 points):" in frank_md and "—/2" not in frank_md
    frank_html = (tmp_path / "feedback" / "frank.html").read_text()
    assert "… not scored yet (2 points)" in frank_html and "—/2" not in frank_html
    md = summary_md([graded, lost, *erin, frank])
    assert "… not scored yet (2 points)" in md and "… 0/2" not in md
    (row,) = [ln for ln in md.splitlines() if ln.startswith("| `frank`")]
    assert "**6/6** (+2 to score)" in row


@pytest.mark.parametrize("failure, role, said", [
    ("SyntaxError: expected ':' (296811889.py, line 1)", "solution",
     "SyntaxError: expected ':' (your code cell of this exercise, line 1)"),
    ("NameError: x\n  File /tmp/ipykernel_41/3056218831.py:4", "check",
     "NameError: x\n  File the check cell of this exercise, line 4"),
    ("ValueError: bad (model.py, line 3)", "solution", "ValueError: bad (model.py, line 3)"),
])
def test_a_cells_kernel_file_name_is_said_in_the_students_terms(failure, role, said):
    from dptlearn.course.grading.scoring import report_message
    assert report_message({"failure": failure, "role": role, "outcome": "failure"}) == said
