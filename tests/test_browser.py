"""A learner's first minute, in a real (headless) Chromium.

JupyterLab is started the way `make lab` starts it (scripts/lab.sh), the browser follows
Jupyter's token URL to the default page, and the test checks that notebooks/00_overview.ipynb
opens on the course kernel with no "Select Kernel" dialog and no news / update
notification, then runs it from the menus (Edit > Clear Outputs of All Cells, Run > Run All
Cells) and checks every code cell ran, no cell raised, and the pictures rendered.
Screenshot: artifacts/browser/00_overview.png.

Chromium is Debian's /usr/bin/chromium (`make browser-deps`), driven through Playwright's
Python package with executable_path; the test skips where it is missing or cannot launch,
or where the notebook does not exist.

Test-only differences from a learner's `make lab`: --no-browser and a free port, throwaway
Jupyter user dirs (tests/_lab_utils.py), and autosave off in those user settings, so the
run never writes outputs into the repository's notebook (checked at the end).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect, sync_playwright

from _lab_utils import DEFAULT_NOTEBOOK, REPO, LabServer

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SCREENSHOT = REPO / "artifacts" / "browser" / "00_overview.png"
# Served root. Only for developing this test against a throwaway tree (with its own
# notebooks/00_overview.ipynb); normally the repository, as `make lab` serves it.
ROOT = Path(os.environ.get("DPTLEARN_BROWSER_TEST_ROOT", REPO))

OPEN_TIMEOUT_MS = 45_000   # page load + kernel start
RUN_TIMEOUT_MS = 75_000    # Run All Cells on notebook 00 (CPU)
UI_TIMEOUT_MS = 10_000     # a menu opening, a listing appearing

# Read the DOM with textContent, not innerText: JupyterLab's default windowing mode
# ("contentVisibility") leaves off-screen cells unrendered, and their innerText is "".
#
# Error outputs: JupyterLab 4.6 renders an "error" output exactly like a stderr stream
# (same classes, data-mime-type="application/vnd.jupyter.stderr"; checked against the real
# DOM), so an error is told apart by IPython's traceback text: "Traceback (most recent call
# last)" or "Cell In[n], line m" (the latter also for SyntaxError). Warnings on stderr are
# not errors (they are printed, not failed on).
IS_ERROR_JS = r"""
const isError = e => e.dataset.mimeType === 'application/vnd.jupyter.error' ||
  (e.dataset.mimeType === 'application/vnd.jupyter.stderr' &&
   /Traceback \(most recent call last\)|Cell In\[\d+\], line \d+/.test(e.textContent));
const panel = () => document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
const codeCells = () => Array.from(panel().querySelectorAll('.jp-Notebook .jp-CodeCell'));
const prompt = c => c.querySelector('.jp-InputPrompt').textContent.trim();
"""

# Run All done: kernel idle, and either every non-empty code cell shows "[n]:" or a cell
# raised (Run All stops there, so the later cells never get a number). Argument: one flag
# per code cell, true where its source is empty (JupyterLab does not execute those).
ALL_RAN_OR_ERROR_JS = "(empty) => {" + IS_ERROR_JS + r"""
  const ind = panel()?.querySelector('.jp-Notebook-ExecutionIndicator');
  if (!ind || ind.dataset.status !== 'idle') return false;
  if (Array.from(panel().querySelectorAll('.jp-OutputArea-output')).some(isError)) return true;
  const cells = codeCells();
  return cells.length === empty.length &&
         cells.every((c, i) => empty[i] || /^\[\d+\]:$/.test(prompt(c)));
}
"""

CELL_REPORT_JS = "() => {" + IS_ERROR_JS + r"""
  return codeCells().map(c => {
    const outs = Array.from(c.querySelectorAll('.jp-OutputArea-output'));
    return {
      prompt: prompt(c),
      errors: outs.filter(isError).map(e => e.textContent.slice(-1500)),
      stderr: outs.filter(e => !isError(e) &&
                          e.dataset.mimeType === 'application/vnd.jupyter.stderr')
                  .map(e => e.textContent.slice(0, 300)),
    };
  });
}
"""

IMAGES_JS = r"""
() => Array.from(document.querySelectorAll(
        '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output img')).map(i => ({
  complete: i.complete, w: i.naturalWidth, h: i.naturalHeight}))
"""


@pytest.fixture
def notebook() -> Path:
    path = ROOT / DEFAULT_NOTEBOOK
    if not path.exists():
        pytest.skip(f"{DEFAULT_NOTEBOOK} does not exist yet (it is being written); "
                    "nothing for the browser test to open")
    return path


@pytest.fixture
def chromium() -> Path:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: run `make browser-deps` "
                    "(scripts/install_browser.sh installs Debian's chromium)")
    return CHROMIUM


@pytest.fixture
def lab(tmp_path, notebook, chromium):
    # Test-side user setting only: never autosave, so running the notebook here cannot
    # write outputs back into the repository's notebooks/00_overview.ipynb.
    server = LabServer(
        tmp_path / "lab", root=ROOT,
        user_settings={"@jupyterlab/docmanager-extension:plugin": {"autosave": False}},
    ).start()
    try:
        yield server
    finally:
        if server.proc.poll() is None:
            server.stop()


@pytest.fixture
def browser(tmp_path, lab, chromium):
    # Requested after `lab`, so it is closed before the server is stopped.
    with sync_playwright() as pw:
        try:
            context = pw.chromium.launch_persistent_context(
                str(tmp_path / "chromium-profile"),  # fresh user-data-dir
                executable_path=str(chromium), headless=True, args=CHROMIUM_FLAGS,
                viewport={"width": 1440, "height": 1000},
            )
        except PlaywrightError as exc:
            detail = " | ".join(line.strip() for line in str(exc).splitlines()[:6])
            pytest.skip(f"{chromium} could not be launched: {detail}")
        try:
            yield context
        finally:
            context.close()


def _menu(page, menu: str, item: str) -> None:
    page.get_by_role("menuitem", name=menu, exact=True).click()
    entry = page.locator(".lm-Menu").get_by_role("menuitem", name=item, exact=True)
    entry.click(timeout=UI_TIMEOUT_MS)
    expect(page.locator(".lm-Menu")).to_have_count(0, timeout=UI_TIMEOUT_MS)


def _assert_no_popups(page, when: str) -> None:
    dialogs = page.locator(".jp-Dialog")
    assert dialogs.count() == 0, f"dialog {when}: {dialogs.all_inner_texts()}"
    toasts = page.locator(".Toastify__toast")
    assert toasts.count() == 0, f"notification {when}: {toasts.all_inner_texts()}"
    # The notification centre also holds notifications whose toast has gone already.
    status = page.locator(".jp-Notification-Status [title]").first.get_attribute("title")
    assert status == "No notifications", f"notification centre {when}: {status!r}"


def test_overview_runs_in_the_browser(notebook, lab, browser):
    t0 = time.monotonic()
    digest = hashlib.sha256(notebook.read_bytes()).hexdigest()
    # Code cell sources from the file: the DOM of off-screen editors is not reliable.
    nb = json.loads(notebook.read_text())
    sources = ["".join(c["source"]) if isinstance(c["source"], list) else c["source"]
               for c in nb["cells"] if c["cell_type"] == "code"]
    assert sources, f"{DEFAULT_NOTEBOOK} has no code cells"
    display_name = lab.get("/api/kernelspecs").json()["kernelspecs"]["dptlearn"]["spec"][
        "display_name"]
    page = browser.pages[0] if browser.pages else browser.new_page()
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    try:
        # What `make lab` opens: the server's URL with its token -> default_url.
        page.goto(f"{lab.base_url}/?token={lab.token}")
        page.wait_for_url(re.compile(r"/lab/tree/" + re.escape(DEFAULT_NOTEBOOK)),
                          timeout=OPEN_TIMEOUT_MS)
        panel = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
        expect(panel).to_be_visible(timeout=OPEN_TIMEOUT_MS)
        expect(page.get_by_role("main").get_by_role("tab", selected=True)).to_have_text(
            Path(DEFAULT_NOTEBOOK).name)

        # The course kernel starts by itself: wait for "Python (dptlearn) | Idle" in the
        # status bar, or for a dialog (a "Select Kernel" dialog would block the start).
        kernel_status = page.locator(".jp-StatusBar-TextItem[title^='Change kernel']")
        page.wait_for_function(
            "() => document.querySelector('.jp-Dialog') || Array.from(document.querySelectorAll("
            "'.jp-StatusBar-TextItem[title^=\"Change kernel\"]')).some("
            "e => / \\| Idle$/.test(e.innerText.trim()))",
            timeout=OPEN_TIMEOUT_MS)
        _assert_no_popups(page, "after opening the notebook")
        expect(kernel_status).to_have_text(f"{display_name} | Idle")
        expect(panel.locator(".jp-Toolbar-kernelName")).to_have_text(display_name)
        sessions = lab.get("/api/sessions").json()
        assert [(s["path"], s["kernel"]["name"]) for s in sessions] == [
            (DEFAULT_NOTEBOOK, "dptlearn")], sessions

        # File browser: opened on the notebook's folder; its home is the course root.
        items = page.locator(".jp-DirListing-content .jp-DirListing-itemText")
        expect(items.filter(has_text=Path(DEFAULT_NOTEBOOK).name)).to_have_count(
            1, timeout=UI_TIMEOUT_MS)
        page.locator(".jp-FileBrowser .jp-BreadCrumbs-home").first.click()
        course_dirs = sorted(d for d in ("notebooks", "exercises", "solutions", "dptlearn")
                             if (ROOT / d).is_dir())
        for name in course_dirs:
            expect(items.filter(has_text=re.compile(f"^{name}$"))).to_have_count(
                1, timeout=UI_TIMEOUT_MS)

        # Start from a clean slate (the file holds stored outputs), then run from the menu.
        _menu(page, "Edit", "Clear Outputs of All Cells")
        expect(panel.locator(".jp-OutputArea-output")).to_have_count(0, timeout=UI_TIMEOUT_MS)
        prompts = panel.locator(".jp-Notebook .jp-CodeCell .jp-InputPrompt")
        expect(prompts).to_have_count(len(sources))
        assert [p.strip() for p in prompts.all_text_contents()] == ["[ ]:"] * len(sources)

        t_run = time.monotonic()
        _menu(page, "Run", "Run All Cells")
        empty = [not src.strip() for src in sources]
        page.wait_for_function(ALL_RAN_OR_ERROR_JS, arg=empty, timeout=RUN_TIMEOUT_MS,
                               polling=250)
        run_s = time.monotonic() - t_run

        cells = page.evaluate(CELL_REPORT_JS)
        assert len(cells) == len(sources)
        errors = [(c["prompt"], src, e) for c, src in zip(cells, sources) for e in c["errors"]]
        assert not errors, "cells raised:\n" + "\n\n".join(
            f"{p} {src[:120]!r}\n{err}" for p, src, err in errors)
        ran = [(c["prompt"], src) for c, src in zip(cells, sources) if src.strip()]
        not_run = [src[:120] for p, src in ran if not re.fullmatch(r"\[\d+\]:", p)]
        assert not not_run, f"code cells without an execution count: {not_run}"
        counts = [int(p[1:-2]) for p, _ in ran]
        assert counts == list(range(1, len(counts) + 1)), counts  # fresh kernel, in order
        for c, src in zip(cells, sources):
            for text in c["stderr"]:
                print(f"stderr in {c['prompt']} {src[:60]!r}: {text!r}")

        # Pictures: every <img> in an output decoded to a real bitmap.
        page.wait_for_function(f"() => ({IMAGES_JS})().every(i => i.complete)",
                               timeout=UI_TIMEOUT_MS)
        images = page.evaluate(IMAGES_JS)
        assert images, "no picture in the outputs"
        assert all(i["w"] > 0 and i["h"] > 0 for i in images), images

        _assert_no_popups(page, "after running all cells")
        # Screenshot on the first picture (cells off screen are painted lazily).
        first_image = panel.locator(".jp-OutputArea-output img").first
        first_image.scroll_into_view_if_needed()
        expect(first_image).to_be_in_viewport(timeout=UI_TIMEOUT_MS)
        page.evaluate("() => new Promise(r => requestAnimationFrame(() => "
                      "requestAnimationFrame(r)))")
        print(f"\n{len(counts)} code cells ran in {run_s:.1f}s, {len(images)} pictures; "
              f"browser test {time.monotonic() - t0:.1f}s so far")
    finally:
        try:
            page.screenshot(path=str(SCREENSHOT))
        except PlaywrightError:
            pass
    page.close()
    # Nothing was written back into the served notebook.
    assert hashlib.sha256(notebook.read_bytes()).hexdigest() == digest
