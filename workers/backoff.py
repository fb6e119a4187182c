"""Capped exponential backoff with jitter, for pipeline retries and reconnects."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass
class Backoff:
    """Delays of ``initial_s * 2**n`` with +-``jitter`` spread, never above ``max_s``."""

    initial_s: float
    max_s: float
    jitter: float = 0.2
    attempts: int = 0

    def next_delay(self) -> float:
        base = min(self.max_s, self.initial_s * 2.0**self.attempts)
        self.attempts += 1
        spread: float = random.uniform(1 - self.jitter, 1 + self.jitter)
        return min(self.max_s, base * spread)

    def reset_after_success(self) -> None:
        self.attempts = 0
