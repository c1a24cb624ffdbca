"""`make lab`'s server, started through the same launcher (scripts/lab.sh), checked over HTTP.

What a learner relies on: bound to 127.0.0.1, Jupyter's token required, the course folders
served, the "dptlearn" kernel available (and the default), the news / update pop-ups
switched off by jupyter/overrides.json, and Ctrl-C / kill stopping it without leftovers.
"""

from __future__ import annotations

import json
import re
import signal
from urllib.parse import quote, urlsplit

import psutil
import pytest

from _lab_utils import DEFAULT_NOTEBOOK, OVERRIDES, REPO, LabServer, port_refuses, wait_for


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    server = LabServer(tmp_path_factory.mktemp("lab")).start()
    try:
        yield server
    finally:
        if server.proc.poll() is None:
            server.stop(signal.SIGTERM)


def test_listens_on_loopback_only(lab):
    listening = {
        (c.laddr.ip, c.laddr.port)
        for c in psutil.Process(lab.proc.pid).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    }
    assert ("127.0.0.1", lab.port) in listening
    assert all(ip == "127.0.0.1" for ip, _ in listening), listening
    assert lab.info["hostname"] == "127.0.0.1"


def test_token_is_generated_and_required(lab):
    assert len(lab.token) >= 32  # Jupyter's generated token, not an empty/disabled one
    assert lab.info.get("password") is False
    for path in ("/api/contents/notebooks", "/api/kernelspecs", "/api/sessions",
                 "/lab/api/settings/@jupyterlab/apputils-extension:notification"):
        assert lab.get(path, token=None).status == 403, path
        assert lab.get(path, token="not-the-token").status == 403, path
        assert lab.get(path).status == 200, path
    # The UI itself sends anonymous visitors to the login page.
    r = lab.get("/lab", token=None)
    assert r.status == 302 and "/login" in r.headers["location"]


def test_opens_the_overview_notebook(lab):
    r = lab.get("/")
    assert r.status == 302
    assert urlsplit(r.headers["location"]).path == "/lab/tree/" + DEFAULT_NOTEBOOK


def test_serves_the_course_folders(lab):
    root = lab.get("/api/contents").json()
    names = {item["name"] for item in root["content"]}
    assert {"notebooks", "exercises", "solutions", "dptlearn"} <= names, names
    assert ".venv" not in names and ".git" not in names

    listing = lab.get("/api/contents/notebooks").json()
    assert listing["type"] == "directory" and listing["path"] == "notebooks"
    served = {item["name"] for item in listing["content"] if item["type"] == "notebook"}
    on_disk = {p.name for p in (REPO / "notebooks").glob("*.ipynb")}
    assert served == on_disk


def test_course_kernel_is_installed_and_default(lab):
    specs = lab.get("/api/kernelspecs").json()
    assert "dptlearn" in specs["kernelspecs"], (
        "kernelspec 'dptlearn' missing: run `make install` "
        "(ipykernel install --sys-prefix --name dptlearn)")
    assert specs["default"] == "dptlearn"
    spec = specs["kernelspecs"]["dptlearn"]["spec"]
    assert spec["language"] == "python"
    # The kernel runs the venv's interpreter (where torch and dptlearn are installed).
    assert spec["argv"][0].startswith(str(REPO / ".venv")), spec["argv"]


def test_overrides_are_in_effect(lab):
    """Every value in jupyter/overrides.json is the served default (i.e. it is installed)."""
    overrides = json.loads(OVERRIDES.read_text())
    notification = "@jupyterlab/apputils-extension:notification"
    assert overrides[notification]["fetchNews"] == "false"  # "none" would ask the learner
    assert overrides[notification]["checkForUpdates"] is False
    for plugin_id, values in overrides.items():
        served = lab.get("/lab/api/settings/" + quote(plugin_id)).json()
        assert served["settings"] == {}  # fresh user settings: the defaults are what counts
        props = served["schema"]["properties"]
        for key, value in values.items():
            assert props[key]["default"] == value, (
                f"{plugin_id} {key}: served default {props[key]['default']!r} != {value!r} "
                f"from {OVERRIDES.relative_to(REPO)}; re-run the install step "
                "(cp jupyter/overrides.json .venv/share/jupyter/lab/settings/)")


def test_server_fetches_no_news_and_checks_no_updates(lab):
    # lab.sh turns both off server-side too (--LabApp.news_url=None, NeverCheckForUpdate),
    # so nothing is fetched even if a learner's own settings ask for news.
    page = lab.get("/lab").body.decode()
    match = re.search(r'<script id="jupyter-config-data" type="application/json">(.*?)</script>',
                      page, re.S)
    assert match, "no page config in /lab"
    assert json.loads(match.group(1))["news"] == {"disabled": True}
    assert lab.get("/lab/api/news").json() == {"news": []}
    assert lab.get("/lab/api/update").json() == {"notification": None}


@pytest.mark.slow  # a server and a kernel per signal
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_stops_cleanly(tmp_path, sig):
    """Ctrl-C (SIGINT) or kill (SIGTERM): the server exits 0, its kernel goes too, port freed."""
    server = LabServer(tmp_path).start()
    try:
        r = server.request("POST", "/api/kernels", body={"name": "dptlearn"})
        assert r.status == 201, r.body
        # (POST returns once the kernel has started: a stop signal landing while a kernel
        # is still starting can hang jupyter_server's shutdown)
        kernel_procs = wait_for(
            lambda: psutil.Process(server.proc.pid).children(recursive=True), 30,
            "the kernel process")
        code = server.stop(sig, second_interrupt=False)
    finally:
        if server.proc.poll() is None:
            server.kill()
    assert code == 0, server.log()
    assert not any(p.is_running() for p in kernel_procs)
    assert port_refuses(server.port)
