"""Reading a BinlogReader's output queue in tests."""

from __future__ import annotations

import queue
import time

from workers.events import ChangeEvent
from workers.source.items import Progress, SourceFailure, SourceItem, TableSeen


def take(out: queue.Queue[SourceItem], count: int, timeout_s: float = 20.0) -> list[ChangeEvent]:
    """The next ``count`` change events (table-version and progress notices are skipped)."""
    events: list[ChangeEvent] = []
    deadline = time.monotonic() + timeout_s
    while len(events) < count:
        item = out.get(timeout=max(0.01, deadline - time.monotonic()))
        assert not isinstance(item, SourceFailure), item.error
        if not isinstance(item, TableSeen | Progress):
            events.extend(item)
    return events
