"""Start and stop the course's JupyterLab exactly as `make lab` does (scripts/lab.sh).

Shared by tests/test_lab.py and tests/test_browser.py. The server runs in its own process
group with a throwaway Jupyter environment (runtime, config, data, user-settings and
workspace dirs under a temp dir), so a learner's ~/.jupyter never changes the result and the
tests never write into it. The venv-wide pieces a learner gets -- the "dptlearn" kernelspec
and jupyter/overrides.json installed into .venv/share/jupyter -- are used as installed.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import psutil

from _helpers import ROOT as REPO

LAB_SH = REPO / "scripts" / "lab.sh"
OVERRIDES = REPO / "jupyter" / "overrides.json"
# The venv's jupyter: the one next to the interpreter running the tests (.venv/bin).
JUPYTER = Path(sys.executable).parent / "jupyter"
DEFAULT_NOTEBOOK = "notebooks/00_overview.ipynb"

START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0  # shutting kernels down included
EXIT_GRACE_S = 5.0     # from 'shut down' to 'process exited'


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_refuses(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing accepts connections on host:port any more."""
    try:
        with socket.create_connection((host, port), timeout=2):
            return False
    except OSError:  # ConnectionRefusedError, or a timeout
        return True


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    """Poll `predicate` until it returns a truthy value or `timeout` passes (then fail)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Response:
    status: int
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body)


class LabServer:
    """scripts/lab.sh --no-browser on a free port, in a fresh process group."""

    def __init__(self, tmp_dir: Path, root: Path = REPO, user_settings: dict | None = None,
                 extra_args: tuple[str, ...] = ()):
        self.tmp = Path(tmp_dir)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.root = Path(root)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.info: dict = {}
        self.log_path = self.tmp / "jupyter-lab.log"
        self._user_settings = user_settings or {}
        self._extra_args = list(extra_args)  # e.g. ("--debug",) when investigating

    # -- environment ---------------------------------------------------------------
    def _env(self) -> dict:
        env = dict(os.environ)
        dirs = {
            "JUPYTER_RUNTIME_DIR": "runtime",
            "JUPYTER_CONFIG_DIR": "config",
            "JUPYTER_DATA_DIR": "data",
            "JUPYTERLAB_SETTINGS_DIR": "user-settings",
            "JUPYTERLAB_WORKSPACES_DIR": "workspaces",
            "IPYTHONDIR": "ipython",
        }
        for var, sub in dirs.items():
            path = self.tmp / sub
            path.mkdir(parents=True, exist_ok=True)
            env[var] = str(path)
        for plugin_id, values in self._user_settings.items():
            pkg, _, plugin = plugin_id.partition(":")
            target = self.tmp / "user-settings" / pkg / f"{plugin}.jupyterlab-settings"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(values))
        env.pop("JUPYTER_TOKEN", None)  # Jupyter must generate its own token
        env.pop("JUPYTER_PASSWORD", None)
        return env

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> "LabServer":
        cmd = [
            "bash", str(LAB_SH), "--no-browser", "--port", str(self.port),
            "--jupyter", str(JUPYTER), "--root", str(self.root),
            # fail instead of silently moving to another port if ours was taken meanwhile
            "--", "--ServerApp.port_retries=0", *self._extra_args,
        ]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, env=self._env(), stdin=subprocess.DEVNULL,
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            # lab.sh execs jupyter, so the server's pid is proc.pid and it writes
            # runtime/jpserver-<pid>.json once it listens: that file holds the generated token.
            runtime_file = self.tmp / "runtime" / f"jpserver-{self.proc.pid}.json"
            wait_for(lambda: self._alive_or_raise() and runtime_file.exists(),
                     START_TIMEOUT_S, f"{runtime_file.name} (server start)")
            self.info = wait_for(lambda: self._read_json(runtime_file), 10, "server info")
            wait_for(lambda: self._alive_or_raise()
                     and self._ping() == 200, START_TIMEOUT_S, "GET /api/status == 200")
        except TimeoutError as exc:
            self.kill()
            raise TimeoutError(f"{exc}; server log:\n{self.log()}") from None
        except BaseException:
            self.kill()
            raise
        return self

    def _alive_or_raise(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"jupyter lab exited early with code {self.proc.returncode}:\n{self.log()}")
        return True

    @staticmethod
    def _read_json(path: Path):
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None  # still being written

    def _ping(self) -> int | None:
        try:
            return self.get("/api/status").status
        except OSError:
            return None

    def stop(self, sig: int = signal.SIGTERM, second_interrupt: bool = True) -> int:
        """Send `sig` to the server (as Ctrl-C / kill would) and wait for a clean exit.

        Clean means: the server shuts down (port closed, every process it started --
        kernels -- gone) and its process exits. Returns the exit code; on failure kills the
        whole process group and raises.

        Known upstream race (jupyterlab/jupyterlab#10442): when the signal lands while a
        request is still being served, an idle AnyIO worker thread can keep the finished
        server's interpreter from exiting. With `second_interrupt`, that case gets what
        Jupyter tells learners to do -- Ctrl-C a second time (SIGINT) -- and a warning;
        without it, it is a failure.
        """
        assert self.proc is not None
        server = psutil.Process(self.proc.pid)
        children = server.children(recursive=True)
        os.kill(self.proc.pid, sig)
        try:
            wait_for(lambda: self.proc.poll() is not None or (
                         port_refuses(self.port)
                         and not any(c.is_running() for c in children)),
                     STOP_TIMEOUT_S, "the server to shut down (port closed, kernels gone)")
            try:
                code = self.proc.wait(timeout=EXIT_GRACE_S)
            except subprocess.TimeoutExpired:
                msg = (f"server shut down after {signal.Signals(sig).name} but its process "
                       "did not exit (jupyterlab/jupyterlab#10442: AnyIO worker thread)")
                if not second_interrupt:
                    raise RuntimeError(msg) from None
                warnings.warn(msg + "; sent a second SIGINT, as a learner's second Ctrl-C",
                              stacklevel=2)
                os.kill(self.proc.pid, signal.SIGINT)
                code = self.proc.wait(timeout=EXIT_GRACE_S)
            # Kernels stop on the server's shutdown request, or (ipykernel's parent poller)
            # by themselves once the server is gone: give them the same deadline.
            _, alive = psutil.wait_procs(children, timeout=STOP_TIMEOUT_S)
            if alive:
                raise RuntimeError(f"processes left behind by the server: {alive}")
        except BaseException:
            self.kill()
            raise
        finally:
            self._log.close()
        return code

    def kill(self) -> None:
        """Last resort: SIGKILL the whole process group (server and kernels)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        if not self._log.closed:
            self._log.close()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-8000:]
        except OSError:
            return ""

    # -- HTTP ------------------------------------------------------------------------
    @property
    def token(self) -> str:
        return self.info["token"]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, token: str | None | bool = True) -> Response:
        """GET path; token=True sends the server's token, None/False sends none."""
        return self.request("GET", path, token=token)

    def request(self, method: str, path: str, body: dict | None = None,
                token: str | None | bool = True) -> Response:
        headers = {}
        if token is True:
            token = self.token
        if token:
            headers["Authorization"] = f"token {token}"
        data = None
        if body is not None:
            data = json.dumps(body)
            headers["Content-Type"] = "application/json"
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=data, headers=headers)
            r = conn.getresponse()
            return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
        finally:
            conn.close()
