"""The docs say what the repository holds: every module named, every link and path resolving, the
README's example running and its counts true.

Each check compares the text with the files on disk at test time (never with a list kept here), so
a module added, renamed or removed in dptlearn/ fails the test until the docs say so.
"""
from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import pytest

from _helpers import ROOT

import dptlearn

PACKAGE = ROOT / "dptlearn"
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
# folders whose files a page may name by path (artifacts/, my-work/, grading-report/ ... are made by runs)
SOURCE_DIRS = ("dptlearn", "scripts", "tests", "notebooks", "solutions", "exercises", "docs", ".github", "book")


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def top_level_modules() -> set[str]:
    """dptlearn's top-level modules (``name.py``) and sub-packages (``name/``), from the files on disk."""
    modules = {f"{p.stem}.py" for p in PACKAGE.glob("*.py") if p.name != "__init__.py"}
    packages = {f"{p.name}/" for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    return modules | packages


def tree_entries(text: str) -> list[str]:
    """The first-level entries of the ``dptlearn/`` tree in ``text``: lines one indentation step below
    the line ``dptlearn/``, each starting with ``name.py`` or ``name/``."""
    lines = text.splitlines()
    (start,) = [i for i, ln in enumerate(lines) if ln.strip() == "dptlearn/"]
    base = len(lines[start]) - len(lines[start].lstrip())
    entries, step = [], None
    for ln in lines[start + 1:]:
        indent = len(ln) - len(ln.lstrip())
        if not ln.strip() or indent <= base:
            break
        step = step or indent
        if indent == step:
            m = re.match(r"(\w+\.py|\w+/)(\s|$)", ln.strip())
            assert m, f"tree line does not start with a module or a folder: {ln!r}"
            entries.append(m.group(1))
    return entries


@pytest.mark.parametrize("where", ["dptlearn/__init__.py", "docs/API.md"])
def test_the_module_tree_names_every_module_and_sub_package(where):
    text = dptlearn.__doc__ if where.endswith(".py") else (ROOT / where).read_text()
    entries = tree_entries(text)
    assert len(entries) == len(set(entries)), f"{where}: a module is listed twice: {entries}"
    on_disk = top_level_modules()
    assert not on_disk - set(entries), f"{where}'s tree misses {sorted(on_disk - set(entries))}"
    assert not set(entries) - on_disk, f"{where}'s tree names {sorted(set(entries) - on_disk)}, not in dptlearn/"


def test_tree_entries_reads_the_first_level_only():
    text = "x\n  dptlearn/\n    a.py   one\n           b.py named in a comment\n    sub/   c.py\n\nafter.py\n"
    assert tree_entries(text) == ["a.py", "sub/"]


# ----------------------------------------------------------------------------- links and paths

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)
LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def prose(text: str) -> str:
    """The text without fenced blocks and code spans (where a ``[x](y)`` is not a link)."""
    return CODE_SPAN.sub(" ", FENCE.sub(" ", text))


def slug(heading: str) -> str:
    """GitHub's (and MyST's ``myst_heading_anchors``) anchor of a heading."""
    text = re.sub(r"`([^`]*)`", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        text = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    else:
        text = FENCE.sub(" ", path.read_text(encoding="utf-8"))
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.M)}


def links(page: Path) -> list[str]:
    return [m.group(1) for m in LINK.finditer(prose(page.read_text(encoding="utf-8")))
            if not re.match(r"[a-z][a-z0-9+.-]*:", m.group(1))]      # http:, https:, mailto: ...


def test_slug_matches_githubs_anchors():
    assert slug("Intake: whose notebook, which assignment") == "intake-whose-notebook-which-assignment"
    assert slug("How long grading takes (`make grade-bench`)") == "how-long-grading-takes-make-grade-bench"
    assert slug("The DPT family: DUSt3R's head beside DPT-Large") == "the-dpt-family-dust3rs-head-beside-dpt-large"


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_every_relative_link_resolves(page):
    assert links(page) or page.name == "benchmarks.md", f"{rel(page)} has no link at all (did the parser miss them?)"
    broken = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no file {file.relative_to(ROOT) if file.is_relative_to(ROOT) else file}")
        elif anchor and anchor not in anchors(file):
            broken.append(f"{target}: no heading with the anchor #{anchor} in {rel(file)}")
    assert not broken, f"{rel(page)}: broken links:\n" + "\n".join(broken)


PATH_SPAN = re.compile(r"`((?:%s)/[^`\s]*)`" % "|".join(re.escape(d) for d in SOURCE_DIRS))


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_every_source_path_named_exists(page):
    missing = []
    for m in PATH_SPAN.finditer(FENCE.sub(" ", page.read_text(encoding="utf-8"))):
        path = m.group(1).split("::")[0]
        if any(c in path for c in "<>*{…") or re.search(r"\bNN_", path):
            continue                       # a pattern (exercises/*.ipynb, notebooks/<lecture>.ipynb), not a file
        if not any((ROOT / f"{path}{ext}").exists() for ext in ("", ".ipynb", ".py")):
            missing.append(path)
    assert not missing, f"{rel(page)} names paths that do not exist: {missing}"


# ----------------------------------------------------------------------------- the README itself

def readme_section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def test_readme_is_short():
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n <= 150, f"README.md has {n} lines; the limit is 150 (move reader-specific material to docs/)"


def test_readme_package_example_runs_and_prints_what_its_comment_says():
    (code,) = re.findall(r"^```python\n(.*?)^```$", readme_section("The package"), re.M | re.S)
    assert len(code.splitlines()) <= 12
    printed = [ln.split("#", 1)[1].strip() for ln in code.splitlines() if ln.startswith("print(")]
    assert printed, "the example prints nothing to compare"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md: The package", "exec"), {})
    assert out.getvalue().splitlines() == printed


def test_readme_counts_the_exercises_and_points_of_solutions():
    exercises = points = 0
    for nb in sorted((ROOT / "solutions").glob("*.ipynb")):
        for cell in json.loads(nb.read_text(encoding="utf-8"))["cells"]:
            tags = cell.get("metadata", {}).get("tags", [])
            if "check" in tags:
                exercises += 1
                points += sum(int(t.split(":", 1)[1]) for t in tags if t.startswith("points:"))
    m = re.search(r"(\d+) exercises \((\d+) points\) in (\w+) notebooks", README.read_text(encoding="utf-8"))
    assert m, "the README no longer says how many exercises and points there are"
    words = {"six": 6, "seven": 7, "five": 5, "eight": 8, "nine": 9}
    assert (int(m.group(1)), int(m.group(2)), words.get(m.group(3))) == \
        (exercises, points, len(list((ROOT / "solutions").glob("*.ipynb"))))


def test_readme_course_table_lists_every_lecture():
    named = set(re.findall(r"^\| `notebooks/(\w+)` \|", readme_section("The course"), re.M))
    assert named == {p.stem for p in (ROOT / "notebooks").glob("*.ipynb")}


def test_teaching_md_and_the_graders_help_say_the_same_about_jobs():
    """--jobs is the number of students graded at once (processes.grade_all maps a pool of
    --jobs workers over student_groups: one sandbox per student); a teacher read "students" in
    teaching.md and "submissions" in --help."""
    from dptlearn.course.grading import grade
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        grade.main(["--help"])
    helped = " ".join(out.getvalue().split())
    assert "--jobs JOBS, -j JOBS students graded in parallel" in helped, helped
    row = re.search(r"^\| `--jobs N` \| ([^|]+)\|", (ROOT / "docs" / "teaching.md").read_text(), re.M)
    assert row and row.group(1).startswith("students graded in parallel"), row
    assert "submissions graded in parallel" not in helped
