"""One switch for the device: an explicit argument, else ``DPTLEARN_DEVICE``, else CUDA, else CPU."""
from __future__ import annotations

import os

import torch

ENV_VAR = "DPTLEARN_DEVICE"


def get_device(device: str | torch.device | None = None) -> torch.device:
    """Return the device everything in the course should use.

    Order: the ``device`` argument, then the ``DPTLEARN_DEVICE`` environment variable
    (``cpu``, ``cuda``, ``cuda:1``...), then CUDA if available, else the CPU.
    Asking for CUDA on a machine without it is an error, not a silent fallback.
    """
    choice = device if device is not None else os.environ.get(ENV_VAR) or None
    if choice is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(choice)
    except (RuntimeError, TypeError) as e:
        source = "argument" if device is not None else f"${ENV_VAR}"
        raise ValueError(f"device {source} must look like 'cpu', 'cuda' or 'cuda:0', got {choice!r}") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(dev)!r} was requested but CUDA is not available here; "
                         f"use 'cpu' (or unset ${ENV_VAR})")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"dptlearn supports 'cpu' and 'cuda' devices, got {str(dev)!r}")
    return dev
