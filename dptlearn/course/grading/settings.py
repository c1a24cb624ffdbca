"""What one grading run is told: the command line's options, as one dataclass (``Settings``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_TIMEOUT_S = 120.0       # per cell
STUDENT_LIMIT_S = 600.0         # default wall-clock limit for all of one student's notebooks


@dataclass
class Settings:
    """The options of a ``dptlearn-grade`` run (``grade.parse_args`` builds it)."""

    solutions: Path                     # the solution notebooks
    report_dir: Path
    timeout: float = DEFAULT_TIMEOUT_S  # seconds a cell may run
    device: str | None = None           # sets DPTLEARN_DEVICE in the kernels
    jobs: int = 1                       # sandboxes run at once
    warm_kernels: bool = True           # fork kernels from a server that pre-imported modules
    inputs: list[str] = field(default_factory=list)   # files and folders as given (students)
    shard: tuple[int, int] | None = None    # grade only shard K of N (of the students)
    sandbox: bool = True                # False: never use bubblewrap (the fallback)
    student_limit: float = STUDENT_LIMIT_S  # wall-clock seconds for all of one student's notebooks
