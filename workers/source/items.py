"""What a binlog reader puts on its output queue."""

from __future__ import annotations

import queue
from dataclasses import dataclass

from workers.events import ChangeEvent
from workers.source.errors import SourceError


@dataclass(frozen=True)
class SourceFailure:
    """A fatal source error; the reader thread has ended after putting it."""

    error: SourceError


SourceItem = list[ChangeEvent] | SourceFailure


def take_events(items: queue.Queue[SourceItem], budget: int) -> list[ChangeEvent]:
    """Up to about ``budget`` events already queued (whole rows events); a queued failure is
    raised."""
    events: list[ChangeEvent] = []
    while len(events) < budget:
        try:
            item = items.get_nowait()
        except queue.Empty:
            break
        if isinstance(item, SourceFailure):
            raise item.error
        events.extend(item)
    return events
