"""The course website (`make book`, book/build.py), built once per session and read in a real Chromium.

The book is built from the stored outputs without executing anything, into a temporary folder, for a
made-up repository (so that the Binder launch buttons are there), served on 127.0.0.1, and every
HTML page is opened in headless Chromium (Debian's /usr/bin/chromium, as tests/test_browser.py):

- no console error, no uncaught exception, no failed request, and no request leaves the site (the
  book works offline: no CDN font or script);
- every picture is shown (each <img> decoded, naturalWidth > 0), and a notebook's page shows as many
  output pictures as the notebook has stored image outputs;
- every internal link (page, #anchor, picture, download) resolves;
- every lecture, exercise handout and docs page of the repository has its page, reachable from the
  landing page; the handouts are the stubs, and nothing of solutions/ is published;
- each notebook's page launches that notebook on Binder;
- the search page finds "align_corners" on the pages whose text holds it.

Skipped, with the reason, where Chromium is missing or cannot start (`make browser-deps`). Without a
browser: the course map and the links to repository files, on a made-up repository tree.
"""
from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlparse

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import sync_playwright

from _helpers import ROOT, markdown_cell

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
REPO, BRANCH = "example-org/dptlearn-book-test", "main"
BUILD_TIMEOUT_S = 300
IMAGE_MIMES = ("image/png", "image/jpeg", "image/svg+xml", "image/gif")


def repo_pages() -> list[str]:
    """What the book must publish, from the repository itself: lectures, handouts, docs pages."""
    paths = [*ROOT.glob("notebooks/*.ipynb"), *ROOT.glob("exercises/*.ipynb"), *ROOT.glob("docs/**/*.md")]
    return sorted(p.relative_to(ROOT).with_suffix("").as_posix() for p in paths)


def stored_pictures(notebook: Path) -> int:
    cells = json.loads(notebook.read_text())["cells"]
    return sum(any(m in out.get("data", {}) for m in IMAGE_MIMES)
               for c in cells if c["cell_type"] == "code" for out in c.get("outputs", []))


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def chromium() -> Path:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: run `make browser-deps` "
                    "(scripts/install_browser.sh installs Debian's chromium)")
    return CHROMIUM


@pytest.fixture(scope="session")
def book(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("book")
    proc = subprocess.run([sys.executable, str(ROOT / "book" / "build.py"), "--out", str(out),
                           "--repo", REPO, "--branch", BRANCH],
                          capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    warnings = (out / "warnings.txt").read_text()
    assert warnings == "", f"Sphinx warnings:\n{warnings}"
    return out / "html"


@pytest.fixture(scope="session")
def site(book):
    handler = partial(_QuietHandler, directory=str(book))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def browser(chromium):
    with sync_playwright() as pw:
        try:
            b = pw.chromium.launch(executable_path=str(chromium), headless=True, args=CHROMIUM_FLAGS)
        except PlaywrightError as exc:
            detail = " | ".join(line.strip() for line in str(exc).splitlines()[:6])
            pytest.skip(f"{chromium} could not be launched: {detail}")
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def visits(book, site, browser) -> dict[str, dict]:
    """Every HTML page of the book, opened once: what it logged, requested, showed and linked to."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    outside: list[str] = []

    def local_only(route):
        if urlparse(route.request.url).netloc == urlparse(site).netloc:
            route.continue_()
        else:                                   # the book must not need the network
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", local_only)
    result = {}
    try:
        for html in sorted(book.rglob("*.html")):
            rel = html.relative_to(book).as_posix()
            if rel.startswith("_"):
                continue
            result[rel] = visit(context, f"{site}/{rel}", outside)
    finally:
        context.close()
    return result


PAGE_JS = r"""
async () => {
  const imgs = Array.from(document.images);
  imgs.forEach(i => { i.loading = 'eager'; });
  await Promise.all(imgs.map(i => i.complete ? null : new Promise(r => { i.onload = i.onerror = r; })));
  return {
    images: imgs.map(i => ({src: i.currentSrc || i.src, w: i.naturalWidth, h: i.naturalHeight,
                            output: !!i.closest('.cell_output')})),
    links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
    ids: Array.from(document.querySelectorAll('[id]')).map(e => e.id),
    launch: Array.from(document.querySelectorAll('a[href^="https://mybinder.org/"]')).map(a => a.href),
    text: document.querySelector('main, article, body').textContent,
  };
}
"""


def visit(context, url: str, outside: list[str]) -> dict:
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
    page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url} ({r.failure})"))
    page.on("response", lambda r: errors.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
    before = len(outside)
    response = page.goto(url, wait_until="load")
    page.wait_for_load_state("networkidle")
    facts = page.evaluate(PAGE_JS)
    facts.update(status=response.status if response else None, errors=errors, outside=outside[before:])
    page.close()
    return facts


# ----------------------------------------------------------------------------- the pages

@pytest.mark.browser
def test_every_page_loads_with_no_error_and_needs_no_network(visits):
    assert "index.html" in visits and "search.html" in visits
    for rel, v in visits.items():
        assert v["status"] == 200, rel
        # the route aborts requests to other hosts, which also shows up as failed requests
        assert v["outside"] == [], f"{rel} requested outside the site: {v['outside']}"
        assert v["errors"] == [], f"{rel}: {v['errors']}"


@pytest.mark.browser
def test_every_picture_is_shown_and_every_stored_picture_is_there(visits):
    shown = 0
    for rel, v in visits.items():
        broken = [i["src"] for i in v["images"] if not (i["w"] > 0 and i["h"] > 0)]
        assert broken == [], f"{rel}: pictures not shown: {broken}"
        shown += sum(i["output"] for i in v["images"])
    assert shown > 0
    for nb in [*ROOT.glob("notebooks/*.ipynb"), *ROOT.glob("exercises/*.ipynb")]:
        rel = nb.relative_to(ROOT).with_suffix(".html").as_posix()
        outputs = [i for i in visits[rel]["images"] if i["output"]]
        assert len(outputs) == stored_pictures(nb), (rel, len(outputs), stored_pictures(nb))


@pytest.mark.browser
def test_every_internal_link_resolves(visits, book, site):
    ids = {rel: set(v["ids"]) for rel, v in visits.items()}
    checked = 0
    for rel, v in visits.items():
        for href in v["links"]:
            if not href.startswith(site + "/"):
                continue
            target, fragment = urldefrag(href)
            path = unquote(urlparse(target).path).lstrip("/") or "index.html"
            if path.endswith("/"):
                path += "index.html"
            assert (book / path).is_file(), f"{rel} links to a missing {path} ({href})"
            if fragment and path in ids:
                assert unquote(fragment) in ids[path], f"{rel} links to a missing anchor: {href}"
            checked += 1
    assert checked > 100, checked          # the sidebar alone links every page from every page


@pytest.mark.browser
def test_every_lecture_handout_and_docs_page_is_published_and_on_the_landing_page(visits, site):
    published = sorted(rel.removesuffix(".html") for rel in visits
                       if rel.split("/")[0] in ("notebooks", "exercises", "docs"))
    assert published == repo_pages()
    assert not any(rel.startswith("solutions/") for rel in visits)
    landing = {urldefrag(h)[0].removeprefix(site + "/") for h in visits["index.html"]["links"]}
    missing = [p for p in repo_pages() if f"{p}.html" not in landing]
    assert missing == [], f"not linked from the landing page: {missing}"


@pytest.mark.browser
def test_the_handouts_are_the_stubs_not_the_solutions(visits):
    for nb in ROOT.glob("exercises/*.ipynb"):
        text = visits[nb.relative_to(ROOT).with_suffix(".html").as_posix()]["text"]
        assert "NotImplementedError" in text, nb.name
        solution = ROOT / "solutions" / nb.name
        if solution.exists():   # a solution's code line that the handout's file lacks is not on its page
            handout = "\n".join("".join(c["source"]) for c in json.loads(nb.read_text())["cells"])
            only_solution = [line.strip() for c in json.loads(solution.read_text())["cells"]
                             if c["cell_type"] == "code" for line in c["source"]
                             if len(line.strip()) > 30 and line.strip() not in handout
                             and not line.strip().startswith("#")]
            assert only_solution, nb.name
            leaked = [line for line in only_solution if line in text]
            assert leaked == [], f"{nb.name}: solution lines on the handout's page: {leaked[:3]}"


@pytest.mark.browser
def test_each_notebook_page_launches_that_notebook_on_binder(visits):
    for nb in [*ROOT.glob("notebooks/*.ipynb"), *ROOT.glob("exercises/*.ipynb")]:
        path = nb.relative_to(ROOT).as_posix()
        expected = f"https://mybinder.org/v2/gh/{REPO}/{BRANCH}?urlpath=lab/tree/{path}"
        assert visits[path.removesuffix(".ipynb") + ".html"]["launch"] == [expected], path
    assert (ROOT / "environment.yml").is_file()      # what Binder builds
    assert visits["index.html"]["launch"] == []      # no notebook there


@pytest.mark.browser
def test_the_search_page_finds_align_corners(book, site, browser):
    """Sphinx's own search, in the page: every page whose text holds the word, and no other."""
    expected = sorted(p.relative_to(book).as_posix() for p in book.rglob("*.html")
                      if p.relative_to(book).parts[0] in ("notebooks", "exercises", "docs")
                      and "align_corners" in re.sub(r"<[^>]+>", " ", p.read_text(encoding="utf-8")))
    assert len(expected) >= 3, expected           # lectures 04, 05 and 07 discuss it at length
    page = browser.new_page()
    try:
        page.goto(f"{site}/search.html?q=align_corners", wait_until="load")
        page.get_by_text("Search finished").wait_for(timeout=30_000)
        hrefs = page.locator("#search-results ul.search li a").evaluate_all("els => els.map(a => a.href)")
    finally:
        page.close()
    assert sorted(urldefrag(h)[0].removeprefix(site + "/") for h in hrefs) == expected


# ----------------------------------------------------------------------------- book/build.py itself

def build_module():
    spec = importlib.util.spec_from_file_location("book_build", ROOT / "book" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def notebook(path: Path, title: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"cells": [markdown_cell(f"# {title}\ntext")],
                                "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))


def test_the_course_map_pairs_each_lecture_with_its_handout_and_lists_what_is_there(tmp_path):
    build = build_module()
    notebook(tmp_path / "notebooks" / "00_intro.ipynb", "00 · Intro: why")
    notebook(tmp_path / "notebooks" / "01_a.ipynb", "01 · A | with a bar")
    notebook(tmp_path / "notebooks" / "11_new.ipynb", "11 · Added by another issue")
    notebook(tmp_path / "exercises" / "01_a.ipynb", "01 · Exercises: A")
    notebook(tmp_path / "exercises" / "07_orphan.ipynb", "07 · Exercises: no lecture")
    notebook(tmp_path / "solutions" / "01_a.ipynb", "01 · Solutions: never published")
    (tmp_path / "docs" / "sub").mkdir(parents=True)
    (tmp_path / "docs" / "guide.md").write_text("Intro line\n\n# The guide\n")
    (tmp_path / "docs" / "sub" / "deep.md").write_text("no heading\n")
    found = build.pages(tmp_path)
    assert {k: [p.as_posix() for p in v] for k, v in found.items()} == {
        "Lectures": ["notebooks/00_intro.ipynb", "notebooks/01_a.ipynb", "notebooks/11_new.ipynb"],
        "Exercises": ["exercises/01_a.ipynb", "exercises/07_orphan.ipynb"],
        "Reference": ["docs/guide.md", "docs/sub/deep.md"]}
    rows = build.course_map(found, tmp_path).splitlines()
    assert rows[2:7] == [
        "| 00 | [Intro: why](notebooks/00_intro.ipynb) |  |",
        "| 01 | [A \\| with a bar](notebooks/01_a.ipynb) | [01 · Exercises: A](exercises/01_a.ipynb) |",
        "| 11 | [Added by another issue](notebooks/11_new.ipynb) |  |",
        "| 07 | | [07 · Exercises: no lecture](exercises/07_orphan.ipynb) |",
        ""]
    assert rows[-2:] == ["- [The guide](docs/guide.md)", "- [deep](docs/sub/deep.md)"]


def test_links_to_repository_files_outside_the_book_point_at_github(tmp_path):
    build = build_module()
    (tmp_path / "dptlearn").mkdir()
    (tmp_path / "dptlearn" / "grid.py").write_text("")
    (tmp_path / "README.md").write_text("")
    published = {Path("docs/a.md"), Path("docs/b.md"), Path("notebooks/00_x.ipynb")}
    text = ("[b](b.md#part) [lecture](../notebooks/00_x.ipynb) [readme](../README.md#two-commands) "
            "[code](../dptlearn/grid.py) [folder](../dptlearn) [gone](missing.md) [web](https://example.org/a.md) "
            "`f(x)](grid.py)`")
    out = build.link_out(text, Path("docs/a.md"), published, "o/r", "dev", tmp_path)
    assert out == ("[b](b.md#part) [lecture](../notebooks/00_x.ipynb) "
                   "[readme](https://github.com/o/r/blob/dev/README.md#two-commands) "
                   "[code](https://github.com/o/r/blob/dev/dptlearn/grid.py) [folder](https://github.com/o/r/tree/dev/dptlearn) "
                   "[gone](missing.md) [web](https://example.org/a.md) `f(x)](grid.py)`")
    assert build.link_out(text, Path("docs/a.md"), published, "", "dev", tmp_path) == text   # no repository known

