"""The one shape formatter: every table and figure of the course prints shapes through it."""
from __future__ import annotations

from typing import Sequence


def fmt_shape(shape: Sequence[int]) -> str:
    """'(1, 768, 1024)'; a 1-d shape prints as '(8,)'."""
    return str(tuple(int(s) for s in shape))
