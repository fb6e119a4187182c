"""Capped exponential backoff with jitter for transient source faults."""

from __future__ import annotations

import random

MIN_DELAY_S = 0.5
MAX_DELAY_S = 30.0
_RNG = random.Random()


def backoff_delay_s(attempt: int, rng: random.Random | None = None) -> float:
    """Delay before retry ``attempt`` (1-based): 0.5s doubling to 30s, with +-25% jitter."""
    growth = float(2 ** min(max(0, attempt - 1), 16))
    jitter = (rng or _RNG).uniform(0.75, 1.25)
    return max(MIN_DELAY_S, min(MAX_DELAY_S, MIN_DELAY_S * growth * jitter))
