"""What a binlog reader puts on its output queue."""

from __future__ import annotations

import queue
from collections.abc import Callable
from dataclasses import dataclass

from state.records import TableSchemaRecord
from workers.events import ChangeEvent
from workers.source.errors import SourceError


@dataclass(frozen=True)
class SourceFailure:
    """A fatal source error; the reader thread has ended after putting it."""

    error: SourceError


@dataclass(frozen=True)
class TableSeen:
    """The reader met a table version (table map fingerprint) it had not seen before."""

    schema: TableSchemaRecord


SourceItem = list[ChangeEvent] | SourceFailure | TableSeen


def take_events(items: queue.Queue[SourceItem], budget: int,
                on_table: Callable[[TableSchemaRecord], None] | None = None) -> list[ChangeEvent]:
    """Up to about ``budget`` events already queued (whole rows events); a queued failure is
    raised; table versions go to ``on_table``."""
    events: list[ChangeEvent] = []
    while len(events) < budget:
        try:
            item = items.get_nowait()
        except queue.Empty:
            break
        if isinstance(item, SourceFailure):
            raise item.error
        if isinstance(item, TableSeen):
            if on_table is not None:
                on_table(item.schema)
            continue
        events.extend(item)
    return events
