"""Writing to the test MariaDB, and reading a binlog reader's output queue, in tests."""

from __future__ import annotations

import queue
import time
from typing import Any

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


def run(server: Any, *statements: str) -> None:
    """Execute ``statements`` in order on one root connection to ``server``."""
    server.execute(*statements)


def assert_quiet(out: queue.Queue[SourceItem], wait_s: float = 1.5) -> None:
    """No change event and no failure arrives for ``wait_s`` (notices may)."""
    deadline = time.monotonic() + wait_s
    while (left_s := deadline - time.monotonic()) > 0:
        try:
            item = out.get(timeout=left_s)
        except queue.Empty:
            return
        assert isinstance(item, TableSeen | Progress), item
