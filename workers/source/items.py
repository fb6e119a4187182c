"""What a binlog reader puts on its output queue."""

from __future__ import annotations

import queue
from collections.abc import Callable
from dataclasses import dataclass

from state.records import BinlogPosition, TableSchemaRecord
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


@dataclass(frozen=True)
class Progress:
    """The source passed ``position`` with no rows for this pipeline since the last ones it
    was given; ``ts_ms`` is the source time of the last event read there, ``at_end`` says the
    source is at the end of the binlog (a heartbeat came after that event)."""

    position: BinlogPosition
    ts_ms: int
    at_end: bool


SourceItem = list[ChangeEvent] | SourceFailure | TableSeen | Progress


def take_events(items: queue.Queue[SourceItem], budget: int,
                on_table: Callable[[TableSchemaRecord], None] | None = None,
                on_progress: Callable[[Progress | None], None] | None = None,
                ) -> list[ChangeEvent]:
    """Up to about ``budget`` events already queued (whole rows events); a queued failure is
    raised; table versions go to ``on_table``; ``on_progress`` gets the last progress report,
    or None when events came after it."""
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
        if isinstance(item, Progress):
            if on_progress is not None:
                on_progress(item)
            continue
        events.extend(item)
        if on_progress is not None:
            on_progress(None)
    return events
