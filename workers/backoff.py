"""Capped exponential backoff with jitter, for pipeline retries and reconnects."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass
class Backoff:
    """Delays of ``initial_s * 2**n`` capped at ``max_s``, each with +-``jitter`` spread."""

    initial_s: float
    max_s: float
    jitter: float = 0.2
    attempts: int = 0

    def next_delay(self) -> float:
        base = min(self.max_s, self.initial_s * 2**self.attempts)
        self.attempts += 1
        return base * random.uniform(1 - self.jitter, 1 + self.jitter)

    def reset_after_success(self) -> None:
        self.attempts = 0
