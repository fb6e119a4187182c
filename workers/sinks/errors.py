"""Sink errors, grouped by what the caller does with them.

- ``SinkConfigError``: the sink cannot be built as configured (bad template); fatal.
- ``SinkUnavailableError``: the destination cannot be reached now; retry with backoff.
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
