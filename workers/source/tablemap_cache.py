"""Table map events parsed once per distinct body instead of once per transaction.

Every transaction repeats the table map of each table it touches, and mysql-replication parses
it afresh each time (column list, optional metadata, a ``Table``): a quarter of a worker's CPU
with many small transactions. A table map's body (table id, names, column types, metadata)
fully determines what the library makes of it, so ``CachedTableMapEvent`` reuses the parse of
an identical body and only takes the header fields (timestamp, position) from the new packet.

mysql-replication picks event classes from a private map in ``BinLogPacketWrapper``;
``install()`` puts this class there for table maps. Readers must then ask for
``CachedTableMapEvent`` in ``only_events`` (the library drops classes it was not asked for).
"""

from __future__ import annotations

import weakref
from typing import Any

from pymysqlreplication.constants.BINLOG import TABLE_MAP_EVENT
from pymysqlreplication.event import BinLogEvent
from pymysqlreplication.packet import BinLogPacketWrapper
from pymysqlreplication.row_event import TableMapEvent

MAX_ENTRIES = 4096  # distinct table maps remembered per process; then it starts afresh
_state_by_body: dict[bytes, dict[str, Any]] = {}  # this process's cache: parsed attributes
_HEADER_BYTES = 20  # the OK byte and the 19-byte event header, read from the raw packet
_PER_PACKET = ("packet", "table_map", "event_type", "timestamp", "event_size",
               "_ctl_connection", "_post_header_lengths")


class CachedTableMapEvent(TableMapEvent):  # type: ignore[misc]
    """A TableMapEvent that reuses the parse of an identical body seen before.

    ``memo`` is one mapping shared by every event with the same body: users keep what they
    derive from a table map there (each ``TableShapes`` its shape) instead of deriving it again.
    Its keys are weak: a reader that is gone (catch-up readers come and go) does not stay in
    memory through the process-wide cache.
    """

    def __init__(self, from_packet: Any, event_size: int, table_map: dict[int, Any],
                 ctl_connection: Any, **kwargs: Any) -> None:
        # The body, without consuming it: the library's parse reads the packet itself.
        body = bytes(from_packet.packet.get_bytes(_HEADER_BYTES, event_size))
        state = cached_table_map(body) if from_packet.read_bytes == 0 else None
        if state is None:
            super().__init__(from_packet, event_size, table_map, ctl_connection, **kwargs)
            self.memo: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
            if self._processed:
                if len(_state_by_body) >= MAX_ENTRIES:
                    _state_by_body.clear()
                _state_by_body[body] = {k: v for k, v in self.__dict__.items()
                                        if k not in _PER_PACKET}
            return
        self.__dict__.update(state)
        BinLogEvent.__init__(self, from_packet, event_size, table_map, ctl_connection, **kwargs)
        from_packet.advance(event_size)
        table_map[self.table_id] = self.table_obj


def cached_table_map(body: bytes) -> dict[str, Any] | None:
    """The attributes of the table map parsed from ``body`` before, if it was."""
    return _state_by_body.get(body)


def install() -> None:
    """Make mysql-replication build ``CachedTableMapEvent`` for table map events."""
    event_map = BinLogPacketWrapper._BinLogPacketWrapper__event_map
    event_map[TABLE_MAP_EVENT] = CachedTableMapEvent
