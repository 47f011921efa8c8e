"""Exponential back-off with jitter: each delay is drawn between half and all of the cap."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before attempt ``n`` (0-based): uniform in [0, min(max, base * 2**n)]."""

    base: float = 0.2
    maximum: float = 30.0

    def delay(self, attempt: int) -> float:
        cap = min(self.maximum, self.base * (2 ** min(attempt, 30)))
        return random.uniform(cap / 2, cap)  # noqa: S311 - jitter, not cryptography
