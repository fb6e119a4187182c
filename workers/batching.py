"""Batches that close at max_events / max_bytes / max_ms but never inside a source transaction.

A transaction is only split when it alone exceeds the limits; then it is cut at the limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from state.records import BinlogPosition
from state.spec import BatchSpec
from workers.events import ChangeEvent


@dataclass
class Batch:
    """Events that are delivered and checkpointed together."""

    batch_id: int
    events: list[ChangeEvent]
    size_bytes: int

    @property
    def end_position(self) -> BinlogPosition:
        return self.events[-1].position


@dataclass
class Batcher:
    """Accumulates events and hands out batches that respect the limits and transactions."""

    spec: BatchSpec
    split_large_transactions: bool = True  # False: a transaction is never split (exactly-once)
    _events: list[ChangeEvent] = field(default_factory=list)
    _bytes: int = 0
    _opened_at: float | None = None
    _next_id: int = 1

    def add(self, events: list[ChangeEvent], now: float) -> None:
        if self._opened_at is None and events:
            self._opened_at = now
        self._events.extend(events)
        self._bytes += sum(event.size_bytes for event in events)

    def pending_events(self) -> int:
        return len(self._events)

    def deadline(self) -> float | None:
        """When the open batch is due by time (None if empty)."""
        return None if self._opened_at is None else self._opened_at + self.spec.max_ms / 1000

    def take(self, now: float, force: bool = False) -> Batch | None:
        """The next batch if one is due (``force``: now, but still whole transactions)."""
        if not self._events or not (force or self._full() or now >= self.deadline()):  # type: ignore[operator]
            return None
        cut = self._last_boundary_within_limits()
        if cut == 0 and self._full():
            cut = self._limit_cut() if self.split_large_transactions else self._first_boundary()
        return self._split(cut, now) if cut else None

    def _full(self) -> bool:
        return len(self._events) >= self.spec.max_events or self._bytes >= self.spec.max_bytes

    def _last_boundary_within_limits(self) -> int:
        cut, size = 0, 0
        respect_tx = self.spec.respect_source_tx
        for index, event in enumerate(self._events[: self.spec.max_events]):
            size += event.size_bytes
            if size > self.spec.max_bytes and index > 0:
                break
            if event.tx_end or not respect_tx:
                cut = index + 1
        return cut

    def _first_boundary(self) -> int:
        """The end of the first transaction, however large (0 while it is still open)."""
        for index, event in enumerate(self._events):
            if event.tx_end or not self.spec.respect_source_tx:
                return index + 1
        return 0

    def _limit_cut(self) -> int:
        size = 0
        for index, event in enumerate(self._events[: self.spec.max_events]):
            size += event.size_bytes
            if size >= self.spec.max_bytes:
                return index + 1
        return min(len(self._events), self.spec.max_events)

    def _split(self, cut: int, now: float) -> Batch:
        events, self._events = self._events[:cut], self._events[cut:]
        size = sum(event.size_bytes for event in events)
        self._bytes -= size
        self._opened_at = now if self._events else None
        batch = Batch(self._next_id, events, size)
        self._next_id += 1
        return batch
