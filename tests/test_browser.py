"""A learner's first minute, in a real (headless) Chromium.

JupyterLab is started the way `make lab` starts it (scripts/lab.sh), the browser follows
Jupyter's token URL to the default page, and the test checks that notebooks/00_overview.ipynb
opens on the course kernel with no "Select Kernel" dialog and no news / update
notification, then runs it from the menus (Edit > Clear Outputs of All Cells, Run > Run All
Cells) and checks every code cell ran, no cell raised, and the pictures rendered.
Screenshot: artifacts/browser/00_overview.png.

Chromium is Debian's /usr/bin/chromium (`make browser-deps`), driven through Playwright's
Python package with executable_path; the test skips where it is missing or cannot launch.
"""

from __future__ import annotations

import hashlib
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

# Kernel done: idle, and either every non-empty code cell shows "[n]:" or a cell raised
# (Run All stops there, so the later cells never get a number).
ALL_RAN_OR_ERROR_JS = r"""
() => {
  const nb = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  const ind = nb && nb.querySelector('.jp-Notebook-ExecutionIndicator');
  if (!ind || ind.dataset.status !== 'idle') return false;
  if (nb.querySelector('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.error"]'))
    return true;
  const cells = Array.from(nb.querySelectorAll('.jp-Notebook .jp-CodeCell'));
  return cells.length > 0 && cells.every(c => {
    const src = c.querySelector('.cm-content');
    const prompt = c.querySelector('.jp-InputPrompt').innerText.trim();
    return (src && src.textContent.trim() === '') || /^\[\d+\]:$/.test(prompt);
  });
}
"""

CELL_REPORT_JS = r"""
() => Array.from(document.querySelectorAll(
        '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-CodeCell')).map(c => ({
  prompt: c.querySelector('.jp-InputPrompt').innerText.trim(),
  empty: (c.querySelector('.cm-content')?.textContent ?? '').trim() === '',
  source: (c.querySelector('.cm-content')?.innerText ?? '').slice(0, 120),
  errors: Array.from(c.querySelectorAll(
      '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.error"]'))
      .map(e => e.innerText.slice(-1500)),
  stderr: Array.from(c.querySelectorAll(
      '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'))
      .map(e => e.innerText.slice(0, 300)),
}))
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
def browser(tmp_path):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: run `make browser-deps` "
                    "(scripts/install_browser.sh installs Debian's chromium)")
    with sync_playwright() as pw:
        try:
            context = pw.chromium.launch_persistent_context(
                str(tmp_path / "chromium-profile"),  # fresh user-data-dir
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS,
                viewport={"width": 1440, "height": 1000},
            )
        except PlaywrightError as exc:
            pytest.skip(f"{CHROMIUM} could not be launched: {str(exc).splitlines()[0]}")
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def lab(tmp_path, notebook):
    # Test-side user setting only: never autosave, so running the notebook here cannot
    # write outputs back into the repository's notebooks/00_overview.ipynb.
    server = LabServer(
        tmp_path / "lab", root=ROOT,
        user_settings={"@jupyterlab/docmanager-extension:plugin": {"autosave": False}},
    )
    (tmp_path / "lab").mkdir()
    server.start()
    try:
        yield server
    finally:
        if server.proc.poll() is None:
            server.stop()


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


def test_overview_runs_in_the_browser(notebook, browser, lab):
    t0 = time.monotonic()
    digest = hashlib.sha256(notebook.read_bytes()).hexdigest()
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

        # Kernel started by itself (a "Select Kernel" dialog would block it) -- wait for
        # whichever comes first, then require the kernel.
        page.wait_for_function(
            "() => document.querySelector('.jp-Dialog') || document.querySelector("
            "'.jp-NotebookPanel:not(.lm-mod-hidden) "
            ".jp-Notebook-ExecutionIndicator[data-status=\"idle\"]')",
            timeout=OPEN_TIMEOUT_MS)
        _assert_no_popups(page, "after opening the notebook")
        expect(panel.locator(".jp-Toolbar-kernelName")).to_have_text(display_name)

        # The file browser shows the course folders (the repository root).
        listing = page.locator(".jp-DirListing-content .jp-DirListing-itemText")
        expect(listing.filter(has_text=re.compile(r"^notebooks$"))).to_have_count(
            1, timeout=UI_TIMEOUT_MS)
        expect(page.locator(".jp-FileBrowser .jp-BreadCrumbs").first).to_have_text(
            re.compile(r"^\s*/\s*$"))

        # Start from a clean slate (the file may hold stored outputs), then run from the menu.
        _menu(page, "Edit", "Clear Outputs of All Cells")
        expect(panel.locator(".jp-OutputArea-output")).to_have_count(0, timeout=UI_TIMEOUT_MS)
        prompts = panel.locator(".jp-CodeCell .jp-InputPrompt")
        assert prompts.count() > 0, "the notebook has no code cells"
        assert all(p.strip() == "[ ]:" for p in prompts.all_inner_texts())

        t_run = time.monotonic()
        _menu(page, "Run", "Run All Cells")
        page.wait_for_function(ALL_RAN_OR_ERROR_JS, timeout=RUN_TIMEOUT_MS, polling=250)
        run_s = time.monotonic() - t_run

        cells = page.evaluate(CELL_REPORT_JS)
        errors = [(c["prompt"], c["source"], e) for c in cells for e in c["errors"]]
        assert not errors, "cells raised:\n" + "\n\n".join(
            f"{p} {src!r}\n{err}" for p, src, err in errors)
        not_run = [c["source"] for c in cells
                   if not c["empty"] and not re.fullmatch(r"\[\d+\]:", c["prompt"])]
        assert not not_run, f"code cells without an execution count: {not_run}"
        counts = [int(c["prompt"][1:-2]) for c in cells if not c["empty"]]
        assert counts == list(range(1, len(counts) + 1)), counts  # fresh kernel, in order
        for c in cells:
            for text in c["stderr"]:
                print(f"stderr in {c['prompt']} {c['source']!r}: {text!r}")

        # Pictures: every <img> in an output decoded to a real bitmap.
        page.wait_for_function(f"() => ({IMAGES_JS})().every(i => i.complete)",
                               timeout=UI_TIMEOUT_MS)
        images = page.evaluate(IMAGES_JS)
        assert images, "no picture in the outputs"
        assert all(i["w"] > 0 and i["h"] > 0 for i in images), images

        _assert_no_popups(page, "after running all cells")
        panel.locator(".jp-OutputArea-output img").first.scroll_into_view_if_needed()
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
