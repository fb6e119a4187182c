"""What a binlog reader puts on its output queue."""

from __future__ import annotations

from dataclasses import dataclass

from workers.events import ChangeEvent
from workers.source.errors import SourceError


@dataclass(frozen=True)
class SourceFailure:
    """A fatal source error; the reader thread has ended after putting it."""

    error: SourceError


SourceItem = list[ChangeEvent] | SourceFailure
