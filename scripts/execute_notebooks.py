"""Re-execute course notebooks in place and store clean outputs (``make notebooks``).

Usage: python scripts/execute_notebooks.py [PATH ...]   (folders or .ipynb files)

Each notebook runs top to bottom in a fresh kernel of the current environment, with its
folder as the working directory and ``DPTLEARN_DEVICE=cpu`` so stored outputs are the CPU
reference that nbval compares against. Metadata is normalised afterwards: one kernelspec
(``dptlearn``, registered by ``make lab``), no execution timings, no widget state.
A notebook that fails is left untouched on disk and the script exits non-zero.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

KERNELSPEC = {"name": "dptlearn", "display_name": "Python (dptlearn)", "language": "python"}
LANGUAGE_INFO = {"name": "python"}


def clean(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    nb.metadata = nbformat.from_dict({"kernelspec": KERNELSPEC, "language_info": LANGUAGE_INFO})
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags")
        cell.metadata = nbformat.from_dict({"tags": tags} if tags else {})
        if cell.cell_type == "code":
            for out in cell.get("outputs", []):
                out.get("metadata", {}).pop("execution", None)
                if out.get("output_type") == "error":
                    # nbval compares ename/evalue only; a full traceback would store this
                    # machine's absolute paths in the notebook
                    out["traceback"] = [f"{out['ename']}: {out['evalue']}"]
    return nb


def execute(path: Path, timeout: int = 600) -> float:
    nb = nbformat.read(path, as_version=4)
    os.environ.setdefault("DPTLEARN_DEVICE", "cpu")
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}},
                            allow_errors=False)
    # Cells tagged raises-exception are expected to fail; nbclient honours that tag.
    t0 = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - t0
    tmp = path.with_suffix(".ipynb.tmp")
    nbformat.write(clean(nb), tmp)
    tmp.replace(path)  # atomic: a failed run never leaves a half-written notebook
    return seconds


def main(argv: list[str]) -> int:
    targets = [Path(a) for a in argv] or [Path("notebooks"), Path("solutions")]
    paths: list[Path] = []
    for t in targets:
        paths += sorted(t.glob("*.ipynb")) if t.is_dir() else [t]
    failed = 0
    for p in paths:
        try:
            s = execute(p)
            print(f"ok    {s:6.1f}s  {p}")
        except Exception as e:  # report and go on with the next notebook
            failed += 1
            print(f"FAIL          {p}: {type(e).__name__}: {str(e)[-2000:]}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
