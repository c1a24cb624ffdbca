"""The learner's own folder: ``my-work/``, made from ``exercises/`` on first use, never overwritten.

Learners answer in ``my-work/NN_topic.ipynb``, not in ``exercises/``: ``exercises/`` belongs to
the course (``make exercises`` and ``git pull`` update it), ``my-work/`` belongs to the learner
(git ignores it; no make target, pull or re-install writes to an existing file in it). When the
course gains a notebook, the next ``make lab`` (or ``make my-work``) copies just that one in.

    python -m dptlearn.course.workspace [--root DIR]
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

WORK_DIR = "my-work"


def ensure_workspace(root: Path) -> list[Path]:
    """Copy every ``exercises/*.ipynb`` that ``my-work/`` lacks; return the files copied (never overwrites)."""
    source, work = Path(root) / "exercises", Path(root) / WORK_DIR
    if not source.is_dir():
        raise FileNotFoundError(f"no exercises/ folder in {root}: is this the course checkout?")
    work.mkdir(exist_ok=True)
    copied = []
    for nb in sorted(source.glob("*.ipynb")):
        target = work / nb.name
        if not target.exists():
            tmp = target.with_name(f".{target.name}.tmp")
            shutil.copyfile(nb, tmp)
            tmp.replace(target)          # never a half-written notebook under the real name
            copied.append(target)
    return copied


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dptlearn.course.workspace", description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=Path.cwd(), help="the course checkout (default: the current folder)")
    args = p.parse_args(argv)
    try:
        copied = ensure_workspace(args.root)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    where = args.root / WORK_DIR
    if copied:
        print(f"{len(copied)} exercise notebook(s) copied into {where}: {', '.join(c.name for c in copied)}")
    else:
        print(f"your work is in {where} (nothing to copy: it already has every exercise notebook)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
