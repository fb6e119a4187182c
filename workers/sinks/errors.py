"""Sink errors, grouped by what the caller does with them.

- ``SinkConfigError``: the sink cannot be built as configured (bad template); fatal.
- ``SinkUnavailableError``: the destination cannot be reached now; retry with backoff.
  ``CommitOutcomeUnknown`` (a kind of it) fails the whole pipeline: only a restart can tell.
  ``HangingTransaction`` (also a kind of it) waits for an operator's abort.
- ``SinkEventError``: one event cannot be written (routing, serialization, too large); to the DLQ.
"""

from __future__ import annotations

from typing import Literal

from workers.events import ChangeEvent

EventErrorKind = Literal["routing error", "serialization error"]


class SinkError(Exception):
    """Root of every sink error."""


class SinkConfigError(SinkError):
    """A sink setting that can never work, e.g. a template that does not parse."""


class SinkUnavailableError(SinkError):
    """The destination cannot be reached (brokers down, metadata timeout)."""


class CommitOutcomeUnknown(SinkUnavailableError):
    """A Kafka transaction's commit neither succeeded nor failed in time: it may still land.
    Only a fresh producer (which fences this one) can tell, so the pipeline restarts."""


class HangingTransaction(SinkUnavailableError):
    """A transaction of this sink is still open on the checkpoint topic although its producer
    was fenced: Kafka never wrote its commit or abort markers. This happens when a broker
    restarts while a commit is in flight and its coordinator, finding no leader for the
    partitions yet, skips them as if deleted. The next marker this sink writes would decide
    the records' fate on each partition it touches, so the pipeline must not write until an
    operator aborts the transaction; it then re-sends the batch."""

    def __init__(self, topic: str, partition: int, offset: int, key: str) -> None:
        super().__init__(
            f"hanging transaction: the checkpoint record of {key!r} at {topic}[{partition}] "
            f"offset {offset} was never committed or aborted (a broker restarted during a "
            "commit and skipped its markers). Its records in this and the data topics stay "
            "invisible to read_committed consumers and block them. Abort it on every "
            "partition: kafka-transactions.sh --bootstrap-server BROKERS find-hanging "
            "--broker-id ID, then kafka-transactions.sh --bootstrap-server BROKERS abort "
            "--topic TOPIC --partition N --start-offset OFFSET for each hanging transaction "
            "listed; the pipeline retries by itself and re-sends that batch")
        self.topic, self.partition, self.offset = topic, partition, offset


class SinkFencedError(SinkError):
    """A newer producer with the same transactional.id took over; this one must stop."""


class RoutingError(SinkError):
    """A topic template did not resolve for an event (unknown or null variable, empty result)."""

    def __init__(self, template: str, variable: str | None, message: str) -> None:
        super().__init__(message)
        self.template = template
        self.variable = variable


class SinkEventError(SinkError):
    """One event was rejected; ``index`` is its place in the batch passed to ``send_batch``.

    ``kind`` uses DeltaForge's DLQ ``error_kind`` strings.
    """

    def __init__(
        self, event: ChangeEvent, kind: EventErrorKind, message: str, index: int = 0
    ) -> None:
        super().__init__(f"{kind}: {message}")
        self.event = event
        self.kind = kind
        self.message = message
        self.index = index
