"""Batches that close at max_events / max_bytes / max_ms but never inside a source transaction.

A transaction is only split when it alone exceeds the limits; then it is cut at the limit.
"""

from __future__ import annotations

import bisect
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
    _cuts: list[int] = field(default_factory=list)  # event counts that end a transaction
    _cut_bytes: list[int] = field(default_factory=list)  # bytes up to each of those cuts
    _opened_at: float | None = None
    _next_id: int = 1

    def add(self, events: list[ChangeEvent], now: float) -> None:
        if self._opened_at is None and events:
            self._opened_at = now
        respect_tx = self.spec.respect_source_tx
        for event in events:
            self._events.append(event)
            self._bytes += event.size_bytes
            if event.tx_end or not respect_tx:
                self._cuts.append(len(self._events))
                self._cut_bytes.append(self._bytes)

    def pending_events(self) -> int:
        return len(self._events)

    def deadline(self) -> float | None:
        """When a batch is due by time; None while nothing could be cut (empty or one open
        transaction below the limits), since only more events can change that."""
        can_cut = self._cuts or (self.split_large_transactions and self._full())
        if self._opened_at is None or not can_cut:
            return None
        return self._opened_at + self.spec.max_ms / 1000

    def take(self, now: float, force: bool = False) -> Batch | None:
        """The next batch if one is due (``force``: now, but still whole transactions)."""
        due_at = self.deadline()
        if due_at is None or not (force or self._full() or now >= due_at):
            return None
        cut = self._last_cut_within_limits()
        if cut == 0 and self._full():
            cut = self._oversized_cut()
        return self._split(cut, now) if cut else None

    def _full(self) -> bool:
        return len(self._events) >= self.spec.max_events or self._bytes >= self.spec.max_bytes

    def _last_cut_within_limits(self) -> int:
        index = bisect.bisect_right(self._cuts, self.spec.max_events)
        index = min(index, bisect.bisect_right(self._cut_bytes, self.spec.max_bytes))
        return self._cuts[index - 1] if index else 0

    def _oversized_cut(self) -> int:
        """The first transaction alone exceeds the limits: cut it at the limit, or (exactly-once)
        take it whole once it has ended."""
        if self.split_large_transactions:
            return self._limit_cut()
        return self._cuts[0] if self._cuts else 0

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
        kept = bisect.bisect_right(self._cuts, cut)
        self._cuts = [c - cut for c in self._cuts[kept:]]
        self._cut_bytes = [b - size for b in self._cut_bytes[kept:]]
        self._opened_at = now if self._events else None
        batch = Batch(self._next_id, events, size)
        self._next_id += 1
        return batch
