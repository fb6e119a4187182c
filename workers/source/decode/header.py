"""Where the row images of a rows event start, read from the event's raw packet.

Layout after the packet's OK byte and the 19-byte event header (mysql-replication's
``RowsEvent.__init__`` reads the same): table id (6 bytes), flags (2), for v2 events the
extra-data length (2, counting itself) and, after any post-header bytes the format
description declares beyond the known ones, the extra data; then the column count
(length-encoded) and one columns-present bitmap (two for updates). The row images run from
there to the event's end (before the checksum).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from pymysqlreplication.constants import BINLOG

from workers.source.decode.plans import Unsupported

_PAYLOAD = 20  # OK byte + common event header
_V1 = frozenset({BINLOG.WRITE_ROWS_EVENT_V1, BINLOG.UPDATE_ROWS_EVENT_V1,
                 BINLOG.DELETE_ROWS_EVENT_V1})
_V2 = frozenset({BINLOG.WRITE_ROWS_EVENT_V2, BINLOG.UPDATE_ROWS_EVENT_V2,
                 BINLOG.DELETE_ROWS_EVENT_V2})
_UPDATES = frozenset({BINLOG.UPDATE_ROWS_EVENT_V1, BINLOG.UPDATE_ROWS_EVENT_V2})


class RowsBody(NamedTuple):
    data: bytes
    start: int
    end: int


def rows_body(event: Any, column_count: int) -> RowsBody:
    """The event's bytes and the span of its row images; ``Unsupported`` for other layouts:
    partial images (columns missing from a bitmap), other event types, a column count that
    differs from the table map, or a header that disagrees with the library's reading."""
    kind = event.event_type
    if kind not in _V1 and kind not in _V2:
        raise Unsupported(f"event_type:{kind}")
    data = event.packet.packet._data
    pos = _payload_start(event, data, kind in _V2)
    count, pos = _length_encoded(data, pos)
    if count != column_count:
        raise Unsupported("column_count")
    width = (count + 7) // 8
    full = (1 << count) - 1
    for _ in range(2 if kind in _UPDATES else 1):
        if int.from_bytes(data[pos:pos + width], "little") & full != full:
            raise Unsupported("partial_image")
        pos += width
    _check_against_library(event, pos)
    return RowsBody(data, pos, _PAYLOAD + event.event_size)


def _payload_start(event: Any, data: bytes, v2: bool) -> int:
    pos = _PAYLOAD + 6 + 2  # table id, flags
    known = 8
    extra = 0
    if v2:
        extra = data[pos] | data[pos + 1] << 8
        pos += 2
        known = 10
    declared = getattr(event, "_declared_post_header_len", None)
    if declared is not None:
        pos += declared(known) - known
    return pos + max(0, extra - 2)


def _length_encoded(data: bytes, pos: int) -> tuple[int, int]:
    first = data[pos]
    if first < 251:
        return first, pos + 1
    size = {252: 2, 253: 3, 254: 8}.get(first)
    if size is None:
        raise Unsupported("column_count")
    return int.from_bytes(data[pos + 1:pos + 1 + size], "little"), pos + 1 + size


def _check_against_library(event: Any, start: int) -> None:
    """Before the library reads rows, its packet cursor is where the row images start."""
    read = event.packet.read_bytes
    if read < event.event_size and _PAYLOAD + read != start:
        raise Unsupported("header_mismatch")
