"""The judge: the grader chooses the inputs, the sandbox records answers, the grader judges.

For every exercise of the run the grader asks the exercise's ``Check`` for a ``Case`` once, with
a secret seed (``secret.Seeds``: fresh per run, or derived from ``DPTLEARN_GRADING_SECRET``), and
writes its plan (pure data) to ``cases/<id>.pt``, which the sandboxes see read-only. Each check cell of a submission is replaced by a *probe cell*
(``checkcells.probe_cell_source``) that runs the student's object on that plan in the sandboxed
kernel and writes ``results/<id>.pt`` (``dptlearn.course.probe.record``). After the run the
grader loads each results file defensively (``untrusted.load_results``) and calls the Check's
``judge``: an exercise earns its points iff it passes. Nothing the sandbox writes besides the
recorded answer counts, and the answer is judged against the reference here, out of the
submission's reach.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

from ..exercises import Assignment
from .checkcells import CheckCellCall, checks_module_of, parse_check_cell
from .sandboxed.cells import clean_message, source_of
from .scoring import Verdict
from .secret import Seeds
from .untrusted import malformed_steps


def load_checks(a: Assignment) -> dict:
    """The ``CHECKS`` registry that judges assignment ``a`` (see ``checks_module_of``)."""
    name = checks_module_of(a.nb["cells"])
    sys.path.append(str(a.path.parent))
    try:
        return importlib.import_module(name).CHECKS
    except (ImportError, AttributeError) as exc:
        raise SystemExit(f"dptlearn-grade: {a.path.name}: its checks module {name} has no "
                         f"CHECKS registry ({type(exc).__name__}: {exc})") from None
    finally:
        sys.path.remove(str(a.path.parent))


class Judge:
    """The run's cases (one secret seed per exercise) and the Checks that judge the answers."""

    def __init__(self, assignments: list[Assignment], cases_dir: Path, seeds: Seeds | None = None):
        import torch

        self.seeds = seeds or Seeds.from_environment()    # DPTLEARN_GRADING_SECRET, or fresh

        self.calls: dict[str, CheckCellCall] = {}   # exercise id -> what its check cell calls
        self.cases: dict[str, Any] = {}             # exercise id -> its Check's Case
        self.checks: dict[str, Any] = {}            # exercise id -> its Check
        self.broken: dict[str, str] = {}       # exercise id -> why its Check could not be prepared
        cases_dir.mkdir(parents=True, exist_ok=True)
        for a in assignments:
            registry = load_checks(a)
            for ex in a.exercises:
                try:
                    self._prepare(a, ex.id, registry, cases_dir, torch)
                except Exception as exc:  # noqa: BLE001 - one broken check must cost one exercise, not the run
                    self.broken[ex.id] = clean_message(
                        f"not graded: the grader could not prepare the check of this exercise "
                        f"({type(exc).__name__}: {exc}); tell your teacher", 400)
        cases_dir.chmod(0o555)

    def _prepare(self, a: Assignment, ex_id: str, registry: dict, cases_dir: Path, torch) -> None:
        from .authored import check_of       # torch and the harness: the grader's run only

        call = parse_check_cell(source_of(a.check_cell(ex_id)))
        check = check_of(a, ex_id, call) or registry.get(call.check)   # authored: its own solution
        if check is None:
            raise LookupError(f"{a.path.name} calls checks.{call.check}, which "
                              f"{checks_module_of(a.nb['cells'])}.CHECKS lacks")
        self.calls[ex_id], self.checks[ex_id] = call, check
        self.cases[ex_id] = self.checks[ex_id].case(self.seeds.seed(ex_id))
        path = cases_dir / f"{ex_id}.pt"
        torch.save(self.cases[ex_id].plan, path)
        path.chmod(0o444)

    def verdict(self, ex_id: str, payload: Any) -> Verdict:
        """The verdict on a loaded results file (``untrusted.load_results``)."""
        if ex_id in self.broken:
            return Verdict(False, self.broken[ex_id], {"grader-error"})
        if not isinstance(payload, dict) or payload.get("check") != self.calls[ex_id].check:
            return Verdict(False, "the recorded answer was not written by the grader's probe "
                                  "(forged or damaged results file)", {"forgery"})
        bad = malformed_steps(payload.get("results"))
        if bad:
            return Verdict(False, f"the recorded answer was not written by the grader's probe "
                                  f"({bad}): forged or damaged results file", {"forgery"})
        try:
            what = self.checks[ex_id].judge(self.cases[ex_id], payload.get("results"))
        except AssertionError as exc:                     # CheckFailed: "<name>: <why>"
            return Verdict(False, clean_message(str(exc), 400), set(getattr(exc, "flags", ())),
                           getattr(exc, "points", 0))     # partial credit (authored.py) or none
        except Exception as exc:  # noqa: BLE001 - a judge that chokes must cost one exercise
            return Verdict(False, clean_message(f"the grader could not judge the recorded answer "
                                                f"({type(exc).__name__}: {exc})", 400))
        return Verdict(True, clean_message(f"passed ({what})" if what else "passed", 400))
