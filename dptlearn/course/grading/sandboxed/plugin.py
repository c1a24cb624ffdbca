"""pytest plugin that turns an nbval run into a fair, per-exercise grading run.

Loaded by the grader (``processes.py``) with ``-p _dptlearn_grading.plugin`` next to
``--nbval-lax``, from the sandbox's copy of this package (``grading/sandboxed/``); it does
nothing unless ``--dptlearn-grading`` is given. It runs where the notebooks run: inside a student's sandbox.
Nothing it writes decides a verdict (the grader judges the probes' recorded answers itself);
its JUnit report only explains a missing answer (a timeout, a dead kernel, an earlier error).
It relies on nbval 0.11 internals (``IPyNbCell.cell`` / ``.options`` / ``.parent.kernel`` /
``.parent.timed_out`` and the module-level ``nbval.plugin.RunningKernel``), which is why the
project pins ``nbval==0.11.*``.

What it changes, cell by cell (see docs/grading-security.md, "Scoring rules"):

* Check cells (tags ``check`` + ``ex:<id>``) may not be excused: ``raises-exception`` and
  ``NBVAL_SKIP`` are ignored for them.
* Every cell's report carries JUnit properties: ``exercise``, ``role``
  (``check``/``solution``/``cell``), ``points`` (check cells) and, when it failed, a short
  ``message`` (``ExceptionName: text``, ANSI stripped).
* A timeout only fails the cell that timed out: nbval's "mark every later cell xfail" rule is
  switched off. A kernel that ignores the interrupt and keeps printing is killed after
  ``KILL_GRACE_S`` seconds.
* A kernel that dies (``os._exit``, ``exit()``, a segfault, out of memory) fails the running
  cell at once instead of after the full cell timeout; the next cell gets a fresh kernel in
  which the earlier cells are replayed silently (except the ones that crashed or timed out).
* Each cell's stream output is capped at ``OUTPUT_CAP_CHARS`` characters, so a cell printing
  gigabytes cannot exhaust the grader's memory.
* Every cell's report names its ``submission``: the stem of the notebook file (the grader runs
  all of one student's notebooks in one pytest session, one file and one kernel each).
* With ``--dptlearn-preload MODULES`` every kernel (restarts included) is forked from a server
  that has imported MODULES once ("warm kernels", see ``warm.py``): still one process per
  notebook, but without paying ~1.6 CPU-s of torch/matplotlib imports each time.
"""
from __future__ import annotations

import os
import sys
import time
from queue import Empty

import pytest

from . import warm
from .confine import end_namespace
from .cells import cell_tags, clean_message, exercise_of, points_of

if __name__ == "_dptlearn_grading.plugin":      # the copy a grading run's pytest loads (-p)
    # nbval -> nbformat -> jsonschema imports rfc3987_syntax, which builds ~40 lark grammars
    # (~1.2 CPU-s per pytest process) for IRI format checks notebook validation never makes.
    sys.modules.setdefault("rfc3987_syntax", None)

KILL_GRACE_S = 5.0          # after an interrupt, how long a still-busy kernel may keep talking
POLL_S = 0.2                # how often a waiting cell checks that its kernel is still alive
OUTPUT_CAP_CHARS = 1_000_000
START_ATTEMPTS = 3          # kernel start-ups tried before a notebook (or a restart) gives up


class KernelLost(Exception):
    """The kernel process ended (or asked to end) while a cell was running."""


def _make_guarded_kernel_class():
    """Subclass nbval's RunningKernel (imported lazily: the plugin module must import cheaply)."""
    from nbval.kernel import RunningKernel

    class GuardedKernel(RunningKernel):
        """nbval's kernel wrapper, plus crash detection, a kill switch and an output cap."""

        def __init__(self, kernel_name, cwd=None, startup_timeout=60):
            """Start the kernel, retrying: parallel runs can race for the same free ports."""
            for attempt in range(START_ATTEMPTS):
                try:
                    if WARM is not None and kernel_name == CURRENT_ENV_KERNEL_NAME:
                        self.km, self.kc = WARM.start_kernel(cwd, startup_timeout)
                        self._ensure_iopub_up()
                    else:
                        super().__init__(kernel_name, cwd=cwd, startup_timeout=startup_timeout)
                    return
                except Exception:
                    self.dispose()
                    if attempt == START_ATTEMPTS - 1:
                        raise

        def execute_cell_input(self, cell_input, allow_stdin=None):
            self.exit_requested = False
            self.kill_deadline = None
            self.output_chars = 0
            self.output_capped = False
            return super().execute_cell_input(cell_input, allow_stdin=allow_stdin)

        def await_reply(self, msg_id, timeout=None):
            """Like nbval's, but polls so that a dead kernel is noticed within ``POLL_S``."""
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                left = POLL_S if deadline is None else min(POLL_S, deadline - time.monotonic())
                try:
                    msg = self.get_message(stream="shell", timeout=max(left, 0))
                except Empty:
                    if not self.is_alive():
                        raise KernelLost("the kernel died while running this cell "
                                         "(os._exit, a segfault or out of memory?)") from None
                    if deadline is not None and time.monotonic() >= deadline:
                        raise
                    continue
                if msg["parent_header"].get("msg_id") != msg_id:
                    continue
                if msg["content"].get("status") == "aborted":
                    raise RuntimeError("Kernel aborted execution request")
                for payload in msg["content"].get("payload") or []:
                    if payload.get("source") == "ask_exit" and not payload.get("keepkernel"):
                        self.exit_requested = True
                return

        def interrupt(self):
            """Interrupt, and arm the kill switch used by ``get_message``."""
            self.kill_deadline = time.monotonic() + KILL_GRACE_S
            if self.is_alive():
                super().interrupt()

        def get_message(self, stream, timeout=None):
            """nbval's reader, plus: kill a kernel that outlives its interrupt; cap output."""
            deadline = getattr(self, "kill_deadline", None)
            if stream == "iopub" and deadline is not None and time.monotonic() > deadline:
                self.kill()
                raise Empty
            msg = super().get_message(stream, timeout=timeout)
            if stream == "iopub":
                self._cap_output(msg)
            return msg

        def _cap_output(self, msg):
            """Blank stream text past ``OUTPUT_CAP_CHARS`` characters for the current cell."""
            if msg.get("msg_type") != "stream":
                return
            text = msg["content"].get("text", "")
            self.output_chars = getattr(self, "output_chars", 0) + len(text)
            if self.output_chars > OUTPUT_CAP_CHARS:
                if getattr(self, "output_capped", False):
                    msg["content"]["text"] = ""
                else:
                    self.output_capped = True
                    msg["content"]["text"] = "\n[output truncated by the grader]\n"

        def kill(self):
            """Kill the kernel process now (it ignored the interrupt)."""
            try:
                if hasattr(self, "km") and self.km.has_kernel:
                    self.km.kill_kernel()
            except Exception:  # already gone
                pass

        def dispose(self):
            """Release a kernel that is dead or about to be replaced (never raises)."""
            try:
                if hasattr(self, "km"):
                    self.stop()
            except Exception:
                pass

    return GuardedKernel


GuardedKernel = None  # set in pytest_configure when the plugin is active
WARM: warm.WarmKernels | None = None
CURRENT_ENV_KERNEL_NAME = ":nbval-parent-env"  # nbval.kernel's name for --nbval-current-env


def pytest_addoption(parser):
    parser.getgroup("dptlearn").addoption(
        "--dptlearn-grading", action="store_true", default=False,
        help="grading mode: check cells count, timeouts and kernel deaths cost one cell")
    parser.getgroup("dptlearn").addoption(
        "--dptlearn-preload", default=None, metavar="MODULES",
        help="grading mode: fork kernels from a server that imported these modules "
             "(comma-separated; may be empty)")


def _active(config) -> bool:
    return bool(config.getoption("--dptlearn-grading", default=False))


def pytest_configure(config):
    global GuardedKernel
    if not _active(config):
        return
    import nbval.plugin

    GuardedKernel = _make_guarded_kernel_class()
    nbval.plugin.RunningKernel = GuardedKernel   # IPyNbFile.setup builds its kernel from this
    preload = config.getoption("--dptlearn-preload", default=None)
    if preload is not None and hasattr(os, "fork") and hasattr(__import__("socket"), "send_fds"):
        global WARM
        WARM = warm.WarmKernels([m for m in preload.split(",") if m], str(config.rootpath))


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session):
    """Before the JUnit report is written: no process of the notebooks' is left to rewrite it."""
    global WARM
    if _active(session.config):
        if WARM is not None:
            WARM.close()
            WARM = None
        end_namespace()


def pytest_unconfigure(config):
    global WARM
    if WARM is not None:
        WARM.close()
        WARM = None


def _is_cell(item) -> bool:
    return hasattr(item, "cell") and hasattr(item, "options")


def pytest_collection_modifyitems(config, items):
    """Tag each cell item with its exercise/role/points and forbid excusing check cells."""
    if not _active(config):
        return
    for item in filter(_is_cell, items):
        tags = cell_tags(item.cell)
        ex = exercise_of(tags)
        role = "check" if "check" in tags else "solution" if "solution" in tags else "cell"
        submission = item.parent.path.stem
        item.dptlearn = {"exercise": ex, "role": role, "message": None, "lost": None,
                         "submission": submission}
        item.user_properties.append(("submission", submission))
        if ex:
            item.user_properties.append(("exercise", ex))
        item.user_properties.append(("role", role))
        if role == "check":
            item.user_properties.append(("points", points_of(tags) or "0"))
            item.options["check_exception"] = False
            item.options["skip"] = False


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Undo nbval's 'xfail after a timeout' and bring back a lost kernel before each cell."""
    if not (_active(item.config) and _is_cell(item)):
        return
    nb = item.parent
    nb.timed_out = False
    if nb.kernel is not None and not nb.kernel.is_alive():
        _restart_and_replay(nb, item.config)


def _restart_and_replay(nb, config):
    """Give notebook ``nb`` a fresh kernel and silently re-run its replayable cells."""
    from nbval.kernel import CURRENT_ENV_KERNEL_NAME

    old = nb.kernel
    if hasattr(old, "dispose"):
        old.dispose()
    opt = config.option
    if opt.nbval_current_env:
        name = CURRENT_ENV_KERNEL_NAME
    else:
        name = opt.nbval_kernel_name or nb.nb.metadata.get("kernelspec", {}).get("name", "python")
    try:
        nb.kernel = GuardedKernel(name, cwd=str(nb.fspath.dirname),
                                  startup_timeout=opt.nbval_kernel_startup_timeout)
    except Exception as exc:
        nb.kernel = old
        raise KernelLost(f"the kernel died earlier and could not be restarted: {exc}") from exc
    for source in getattr(nb, "dptlearn_replay", []):
        if not _replay_cell(nb.kernel, source, opt.nbval_cell_timeout):
            break


def _replay_cell(kernel, source: str, timeout: float) -> bool:
    """Run one earlier cell again, ignoring its result. False when the kernel is lost again."""
    try:
        msg_id = kernel.execute_cell_input(source, allow_stdin=False)
        try:
            kernel.await_reply(msg_id, timeout=timeout)
        except Empty:
            kernel.interrupt()
        kernel.await_idle(msg_id, KILL_GRACE_S)
        return kernel.is_alive()
    except (Empty, KernelLost, RuntimeError):
        return False


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """Turn a lost kernel into an ordinary cell failure with a clear message."""
    if not (_active(item.config) and _is_cell(item)):
        return (yield)
    try:
        result = yield
    except KernelLost as exc:
        _lose_kernel(item, str(exc))
    if getattr(item.parent.kernel, "exit_requested", False):
        _lose_kernel(item, "this cell shut the kernel down (exit() or quit())")
    return result


def _lose_kernel(item, why: str):
    """Fail the cell: its kernel died or asked to exit. Stop it so the next cell restarts it."""
    kernel = item.parent.kernel
    if hasattr(kernel, "dispose"):
        kernel.dispose()
    item.dptlearn["lost"] = why
    item.raise_cell_error(why)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the short message and remember the cells a restarted kernel replays."""
    report = yield
    if not (_active(item.config) and _is_cell(item)) or call.when != "call":
        return report
    info = item.dptlearn
    nb = item.parent
    kernel_ok = nb.kernel is not None and nb.kernel.is_alive()
    if report.failed:
        info["message"] = _failure_message(item, call)
        item.user_properties.append(("message", info["message"]))
    if kernel_ok and not nb.timed_out and info["role"] != "check" and not report.skipped:
        nb.dptlearn_replay = getattr(nb, "dptlearn_replay", []) + [item.cell.source]
    return report


def _failure_message(item, call) -> str:
    """``ExceptionName: text`` for a failed cell (kernel error, timeout or lost kernel)."""
    if item.dptlearn.get("lost"):
        return clean_message(f"KernelDied: {item.dptlearn['lost']}")
    if item.parent.timed_out:
        secs = item.config.option.nbval_cell_timeout
        return clean_message(f"Timeout: the cell ran longer than {secs:g} s and was stopped "
                             f"(an infinite loop?)")
    exc = call.excinfo.value if call.excinfo else None
    text = str(exc) if exc is not None else "failed"
    errors = [o for o in (item.test_outputs or []) if o.get("output_type") == "error"]
    if errors:
        return clean_message(f"{errors[-1]['ename']}: {errors[-1]['evalue']}")
    return clean_message(text)
