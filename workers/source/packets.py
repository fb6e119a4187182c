"""The events of every transaction built straight from their raw packets.

mysql-replication turns every binlog packet into an event through ``BinLogPacketWrapper``:
keyword arguments, buffered reads, struct unpacking, checks. Measured here on the packets of
one-row transactions, that is 18 to 43 microseconds per event, about 100 for the four events of
such a transaction (GTID, table map, rows, XID), and a third of a worker's CPU under the fleet
load. ``wrap_packet`` takes the wrapper's place in the library's stream reader. For those four
event types it reads the few fields itself and builds the very objects the library builds: the
same classes and attributes, with the packet's cursor where the library leaves it, so that
``event.rows`` (the library's own row decoding) still works on them. Every other packet, and
every case these builders do not cover, goes to the library unchanged.
``tests/test_packets.py`` checks, packet by packet, that the objects equal the library's.

Commits (XID) and MariaDB GTIDs are built slimmer still for readers that ask for ``Xid`` and
``MariadbGtid`` (ours do, in ``only_events``): a header and the GTID text are all a reader
uses of them, and they are half of the events of small transactions.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from pymysqlreplication import binlogstream
from pymysqlreplication.constants import BINLOG
from pymysqlreplication.event import BinLogEvent
from pymysqlreplication.packet import BinLogPacketWrapper

from workers.source.tablemap_cache import cached_table_map

_COMMON_HEADER = struct.Struct("<xIBIIIH")  # OK byte, timestamp, type, server id, size, end, flags
_GTID = struct.Struct("<QIB")  # MariaDB GTID: sequence number, domain id, flags
_PAYLOAD = 20  # the OK byte and the 19-byte common header
_EVENT_MAP: dict[int, type] = BinLogPacketWrapper._BinLogPacketWrapper__event_map
_V2_ROWS = frozenset({BINLOG.WRITE_ROWS_EVENT_V2, BINLOG.UPDATE_ROWS_EVENT_V2,
                      BINLOG.DELETE_ROWS_EVENT_V2})
_UPDATE_ROWS = frozenset({BINLOG.UPDATE_ROWS_EVENT_V1, BINLOG.UPDATE_ROWS_EVENT_V2})
_LENGTH_SIZES = {252: 2, 253: 3, 254: 8}

Build = Callable[[type, BinLogPacketWrapper, int, dict[str, Any], Any], Any]


def install() -> None:
    """Make mysql-replication's stream reader build events through ``wrap_packet``."""
    binlogstream.BinLogPacketWrapper = wrap_packet


def wrap_packet(pkt: Any, table_map: dict[int, Any], ctl_connection: Any, mysql_version: Any,
                use_checksum: bool, allowed_events: frozenset[type], only_tables: Any,
                ignored_tables: Any, only_schemas: Any, ignored_schemas: Any,
                freeze_schema: bool, ignore_decode_errors: bool, verify_checksum: bool,
                optional_meta_data: bool, enable_logging: bool,
                use_column_name_cache: bool = False,
                post_header_lengths: Any = None) -> BinLogPacketWrapper:
    """What ``BinLogPacketWrapper(...)`` with the same arguments gives, built faster where the
    packet is one of the hot event types (or a ``Header`` holding a slim event)."""
    data = pkt._data
    build = _BUILDERS.get(data[5]) if len(data) >= _PAYLOAD and data[0] == 0 else None
    if build is not None and (slim := _slim(data, allowed_events)) is not None:
        return slim  # read as the wrapper is, by the library and by our readers
    if (build is not None and not verify_checksum and only_tables is None
            and ignored_tables is None and ignored_schemas is None):
        wrapper = _header(pkt, data, ctl_connection, enable_logging, use_column_name_cache)
        event_class = _EVENT_MAP[wrapper.event_type]
        if event_class not in allowed_events:
            pkt.advance(_PAYLOAD)
            return wrapper
        size = wrapper.event_size - (23 if use_checksum else 19)
        common = _common_attributes(table_map, ctl_connection, mysql_version,
                                    ignore_decode_errors, post_header_lengths)
        built = build(event_class, wrapper, size, common, only_schemas)
        if built is not _LIBRARY:
            pkt.advance(_PAYLOAD + wrapper.read_bytes)
            wrapper.event = built
            return wrapper
    return library_wrapper(
        pkt, table_map, ctl_connection, mysql_version, use_checksum, allowed_events,
        only_tables, ignored_tables, only_schemas, ignored_schemas, freeze_schema,
        ignore_decode_errors, verify_checksum, optional_meta_data, enable_logging,
        use_column_name_cache, post_header_lengths,
    )


class Header:
    """The common header of a slim event, read as the library's wrapper is (by its stream
    reader, and by ours as ``event.packet``)."""

    __slots__ = ("timestamp", "event_type", "server_id", "event_size", "log_pos", "flags",
                 "event")

    def __init__(self, data: bytes) -> None:
        (self.timestamp, self.event_type, self.server_id, self.event_size, self.log_pos,
         self.flags) = _COMMON_HEADER.unpack_from(data)
        self.event: Xid | MariadbGtid | None = None


class Xid:
    """A commit (XID event): where it ends is all a reader needs."""

    __slots__ = ("packet", "timestamp")

    def __init__(self, header: Header) -> None:
        self.packet = header
        self.timestamp = header.timestamp


class MariadbGtid:
    """A MariaDB GTID event: ``gtid`` is ``domain-server-sequence``, as the library's."""

    __slots__ = ("packet", "timestamp", "gtid")

    def __init__(self, header: Header, data: bytes) -> None:
        self.packet = header
        self.timestamp = header.timestamp
        seq_no, domain_id, _flags = _GTID.unpack_from(data, _PAYLOAD)
        self.gtid = f"{domain_id}-{header.server_id}-{seq_no}"


def _slim(data: bytes, allowed_events: frozenset[type]) -> Header | None:
    """The slim event of ``data`` in its header, if it is one and the reader asked for it."""
    kind = data[5]
    if kind == BINLOG.XID_EVENT and Xid in allowed_events:
        header = Header(data)
        header.event = Xid(header)
        return header
    if kind == BINLOG.MARIADB_GTID_EVENT and MariadbGtid in allowed_events:
        header = Header(data)
        header.event = MariadbGtid(header, data)
        return header
    return None


library_wrapper = BinLogPacketWrapper  # what builds the packets this module does not
_LIBRARY = object()  # a builder's answer: this packet is for the library to build


def _header(pkt: Any, data: bytes, ctl_connection: Any, enable_logging: bool,
            use_column_name_cache: bool) -> BinLogPacketWrapper:
    """The wrapper as its ``__init__`` leaves it after reading the common header."""
    wrapper = BinLogPacketWrapper.__new__(BinLogPacketWrapper)
    (wrapper.timestamp, wrapper.event_type, wrapper.server_id, wrapper.event_size,
     wrapper.log_pos, wrapper.flags) = _COMMON_HEADER.unpack_from(data)
    wrapper.read_bytes = 0
    wrapper._BinLogPacketWrapper__data_buffer = b""
    wrapper.packet = pkt
    wrapper.charset = ctl_connection.charset
    wrapper.enable_logging = enable_logging
    wrapper.use_column_name_cache = use_column_name_cache
    wrapper.event = None
    return wrapper


def _common_attributes(table_map: dict[int, Any], ctl_connection: Any, mysql_version: Any,
                       ignore_decode_errors: bool, post_header_lengths: Any) -> dict[str, Any]:
    """The attributes ``BinLogEvent.__init__`` gives every event of one reader alike, made
    once per reader: kept on its control connection (one per reader), renewed when they
    change (a rotate brings a new table map, a format description new header lengths)."""
    common: dict[str, Any] | None = getattr(ctl_connection, "_deltaforge_event_common", None)
    if (common is None or common["table_map"] is not table_map
            or common["mysql_version"] is not mysql_version
            or common["_post_header_lengths"] is not post_header_lengths
            or common["_ignore_decode_errors"] is not ignore_decode_errors):
        common = {
            "table_map": table_map, "_post_header_lengths": post_header_lengths,
            "_ctl_connection": ctl_connection, "mysql_version": mysql_version,
            "_ignore_decode_errors": ignore_decode_errors, "_verify_checksum": False,
            "_is_event_valid": None, "_processed": True, "complete": True,
            "dbms": ctl_connection._get_dbms(),
        }
        ctl_connection._deltaforge_event_common = common
    return common


def _new(event_class: type, wrapper: BinLogPacketWrapper, size: int,
         common: dict[str, Any], state: dict[str, Any] | None = None) -> Any:
    """What ``BinLogEvent.__init__`` makes (after ``state``, a cached parse, if given)."""
    event: Any = object.__new__(event_class)
    fields = event.__dict__
    if state is not None:
        fields.update(state)
    fields.update(common)
    fields["packet"] = wrapper
    fields["event_type"] = wrapper.event_type
    fields["timestamp"] = wrapper.timestamp
    fields["event_size"] = size
    return event


def _xid(event_class: type, wrapper: BinLogPacketWrapper, size: int, common: dict[str, Any],
         only_schemas: Any) -> Any:
    event = _new(event_class, wrapper, size, common)
    event.xid = int.from_bytes(wrapper.packet._data[_PAYLOAD:_PAYLOAD + 8], "little")
    wrapper.read_bytes = 8
    return event


def _mariadb_gtid(event_class: type, wrapper: BinLogPacketWrapper, size: int,
                  common: dict[str, Any], only_schemas: Any) -> Any:
    event = _new(event_class, wrapper, size, common)
    server_id = event.server_id = wrapper.server_id
    seq_no, domain_id, flags = _GTID.unpack_from(wrapper.packet._data, _PAYLOAD)
    event.gtid_seq_no, event.domain_id, event.flags = seq_no, domain_id, flags
    event.gtid = f"{domain_id}-{server_id}-{seq_no}"
    wrapper.read_bytes = _GTID.size
    return event


def _table_map(event_class: type, wrapper: BinLogPacketWrapper, size: int,
               common: dict[str, Any], only_schemas: Any) -> Any:
    """A table map whose body was parsed before (``tablemap_cache``); else the library's."""
    state = cached_table_map(wrapper.packet._data[_PAYLOAD:_PAYLOAD + size])
    if state is None or event_class is not _EVENT_MAP[BINLOG.TABLE_MAP_EVENT]:
        return _LIBRARY
    event = _new(event_class, wrapper, size, common, state)
    wrapper.read_bytes = size
    common["table_map"][event.table_id] = event.table_obj
    return event


def _rows(event_class: type, wrapper: BinLogPacketWrapper, size: int, common: dict[str, Any],
          only_schemas: Any) -> Any:
    """``RowsEvent.__init__`` and its subclasses' up to the row images (read lazily)."""
    data = wrapper.packet._data
    pos = _PAYLOAD + 6
    table_id = int.from_bytes(data[_PAYLOAD:pos], "little")
    table = common["table_map"].get(table_id)
    if (table is None or "primary_key" not in table.__dict__
            or (only_schemas is not None and table.schema not in only_schemas)):
        wrapper.read_bytes = 6  # a table the reader filtered out: the library reads its id
        return None
    event = _new(event_class, wrapper, size, common)
    event._RowsEvent__rows = None
    event._RowsEvent__only_tables = None
    event._RowsEvent__ignored_tables = None
    event._RowsEvent__only_schemas = only_schemas
    event._RowsEvent__ignored_schemas = None
    event._RowsEvent__use_column_name_cache = wrapper.use_column_name_cache
    event._RowsEvent__enable_logging = wrapper.enable_logging
    event._RowsEvent__none_sources = {}
    event.table_id = table_id
    event.primary_key = table.primary_key
    event.schema, event.table = table.schema, table.table
    kind = wrapper.event_type
    if kind in _V2_ROWS:
        event.flags = data[pos] | data[pos + 1] << 8
        event.extra_data_length = data[pos + 2] | data[pos + 3] << 8
        if event.extra_data_length > 2:
            return _LIBRARY  # partition or NDB extra data: rare, the library reads it
        pos += 4
        known = 10
    else:
        event.flags = data[pos] | data[pos + 1] << 8
        pos += 2
        known = 8
    declared = event._declared_post_header_len(known)
    if declared < known or pos - _PAYLOAD + declared - known > size:
        return _LIBRARY  # the library raises its MalformedBinLogEvent
    pos += declared - known
    first = data[pos]
    if first < 251:
        count, pos = first, pos + 1
    elif first in _LENGTH_SIZES:
        size = _LENGTH_SIZES[first]
        count, pos = int.from_bytes(data[pos + 1:pos + 1 + size], "little"), pos + 1 + size
    else:
        return _LIBRARY
    event.number_of_columns = count
    event.columns = table.columns
    width = (count + 7) // 8
    event.columns_present_bitmap = data[pos:pos + width]
    pos += width
    if kind in _UPDATE_ROWS:
        event.columns_present_bitmap2 = data[pos:pos + width]
        pos += width
    wrapper.read_bytes = pos - _PAYLOAD
    return event


_BUILDERS: dict[int, Build] = {
    BINLOG.XID_EVENT: _xid,
    BINLOG.MARIADB_GTID_EVENT: _mariadb_gtid,
    BINLOG.TABLE_MAP_EVENT: _table_map,
    **dict.fromkeys((BINLOG.WRITE_ROWS_EVENT_V1, BINLOG.UPDATE_ROWS_EVENT_V1,
                     BINLOG.DELETE_ROWS_EVENT_V1, *_V2_ROWS), _rows),
}

if not issubclass(_EVENT_MAP[BINLOG.XID_EVENT], BinLogEvent):
    raise ImportError("mysql-replication's event map changed: review workers/source/packets.py")
