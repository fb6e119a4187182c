"""Wall and CPU seconds of one side of the benchmark, and the figures derived from them."""

from __future__ import annotations

import resource
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Result:
    """What one side of the benchmark did: rows, wall seconds, CPU seconds."""

    name: str
    rows: int
    wall_s: float
    cpu_s: float
    extra: dict[str, Any]

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def cpu_s_per_1k_rows(self) -> float:
        return self.cpu_s / self.rows * 1000 if self.rows else 0.0

    def as_json(self) -> dict[str, Any]:
        rounded = {"wall_s": round(self.wall_s, 3), "cpu_s": round(self.cpu_s, 3)}
        return {**asdict(self), **rounded, "rows_per_s": round(self.rows_per_s, 1),
                "cpu_s_per_1k_rows": round(self.cpu_s_per_1k_rows, 4)}


def cpu_s(who: int) -> float:
    """User plus system CPU seconds of RUSAGE_SELF or RUSAGE_CHILDREN (waited-for children)."""
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime
