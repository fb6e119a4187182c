"""Delivery accounting: which batches have every message acknowledged, in send order."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """How one batch ended: counts, the first error text, bytes sent, send-to-last-ack latency."""

    batch_id: int
    delivered: int
    failed: int
    error: str | None
    bytes: int
    latency_s: float


class BatchTracker:
    """Counts one batch's delivery reports; its bound ``on_delivery`` is the produce callback."""

    __slots__ = ("batch_id", "sent", "delivered", "failed", "error", "bytes", "sent_at",
                 "done_at", "sealed", "on_done")

    def __init__(self, batch_id: int, on_done: Callable[[], None] | None = None) -> None:
        self.batch_id = batch_id
        self.on_done = on_done
        self.sent = 0
        self.delivered = 0
        self.failed = 0
        self.error: str | None = None
        self.bytes = 0
        self.sent_at = time.monotonic()
        self.done_at: float | None = None
        self.sealed = False

    def on_delivery(self, error: Any, _message: Any) -> None:
        if error is None:
            self.delivered += 1
        else:
            self.failed += 1
            if self.error is None:
                self.error = str(error.str())
        self._mark_if_done()

    def seal(self) -> None:
        """No more messages will be produced for this batch."""
        self.sealed = True
        self._mark_if_done()

    def abandon(self, error: str) -> None:
        """The batch failed as a whole (an aborted transaction): complete now, failed."""
        self.error = self.error or error
        self.failed = self.sent - self.delivered
        self.sealed = True
        self._complete()

    def is_complete(self) -> bool:
        return self.done_at is not None

    def outcome(self) -> BatchOutcome:
        assert self.done_at is not None
        return BatchOutcome(self.batch_id, self.delivered, self.failed, self.error, self.bytes,
                            self.done_at - self.sent_at)

    def _mark_if_done(self) -> None:
        if self.sealed and self.delivered + self.failed == self.sent:
            self._complete()

    def _complete(self) -> None:
        """Once: an abandoned batch is sealed afterwards, and late reports may still come."""
        if self.done_at is None:
            self.done_at = time.monotonic()
            if self.on_done is not None:
                self.on_done()


class BatchLedger:
    """Batches in send order; completed ones are handed out only from the front."""

    def __init__(self, on_done: Callable[[], None] | None = None) -> None:
        """``on_done`` is called each time a batch completes (from whichever thread or sink
        served its last delivery report)."""
        self._batches: deque[BatchTracker] = deque()
        self._on_done = on_done

    def open(self, batch_id: int) -> BatchTracker:
        tracker = BatchTracker(batch_id, self._on_done)
        self._batches.append(tracker)
        return tracker

    def take_completed(self) -> list[BatchOutcome]:
        done = []
        while self._batches and self._batches[0].is_complete():
            done.append(self._batches.popleft().outcome())
        return done

    def oldest_unreported_at(self) -> float | None:
        """When the oldest batch still waiting for delivery reports was sent (monotonic)."""
        for tracker in self._batches:
            if not tracker.is_complete():
                return tracker.sent_at
        return None

    def __len__(self) -> int:
        return len(self._batches)
