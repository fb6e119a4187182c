"""Turns mysql-replication events into ``ChangeEvent`` lists with resumable positions.

Positions: ``boundary`` is the position after the last XID / COMMIT / DDL; each event's
``position`` is that boundary plus the rows of the transaction delivered so far, except the
last row of a transaction, whose position is the next boundary (``tx_end=True``). The last
rows event is held back until the next rows event or the commit shows whether it ends the
transaction. Pure logic: no connection, no thread.

Two parts, so one binlog stream can serve many pipelines: a ``PositionTracker`` follows the
stream's boundaries, file and GTIDs once; a ``RowEmitter`` per pipeline turns the rows of its
tables into events. ``EventRouter`` joins one of each for a reader of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pymysqlreplication.event import (
    GtidEvent,
    HeartbeatLogEvent,
    MariadbGtidEvent,
    QueryEvent,
    RotateEvent,
    XidEvent,
)
from pymysqlreplication.row_event import (
    DeleteRowsEvent,
    UpdateRowsEvent,
    WriteRowsEvent,
)

from state.records import BinlogPosition
from workers.events import ChangeEvent, Op
from workers.source.decode import Images
from workers.source.errors import SourceDecodeError
from workers.source.gtids import GtidTracker
from workers.source.packets import MariadbGtid, Xid
from workers.source.packets import install as install_fast_packets
from workers.source.tablemap import TableShape, TableShapes
from workers.source.tablemap_cache import CachedTableMapEvent
from workers.source.tablemap_cache import install as install_table_map_cache
from workers.source.tables import TableFilter

Emit = Callable[[list[ChangeEvent]], None]
OnTable = Callable[[TableShape], None]
ROW_EVENTS = (WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent)
ROW_OPS: dict[type, Op] = {WriteRowsEvent: "c", UpdateRowsEvent: "u", DeleteRowsEvent: "d"}
install_table_map_cache()
install_fast_packets()
STREAM_EVENTS = [
    *ROW_EVENTS,
    CachedTableMapEvent,
    RotateEvent,
    XidEvent,
    Xid,
    QueryEvent,
    GtidEvent,
    MariadbGtidEvent,
    MariadbGtid,
    HeartbeatLogEvent,
]
_NOT_BOUNDARY = ("BEGIN", "SAVEPOINT", "ROLLBACK TO", "XA START", "XA END")


class PositionTracker:
    """The transaction boundary, binlog file and executed GTIDs of one binlog stream."""

    def __init__(self, start: BinlogPosition) -> None:
        self.boundary = BinlogPosition(start.file, start.pos, 0, start.gtid_set, start.server_id)
        self.file = start.file
        self.server_id = start.server_id
        self.gtids = GtidTracker(start.gtid_set)
        self.in_tx = False

    def on_rotate(self, event: Any) -> None:
        if event.next_binlog == self.file:
            return  # the fake rotate a (re)connection starts with
        self.file = event.next_binlog
        if not self.in_tx:
            self.boundary = self.position(event.position)

    def on_gtid(self, event: Any) -> None:
        self.gtids.begin(event.gtid)
        self.in_tx = True

    def ends_transaction(self, event: Any) -> bool:
        """A QueryEvent ends a transaction (COMMIT, DDL) unless it opens or continues one."""
        query = (
            event.query
            if isinstance(event.query, str)
            else bytes(event.query).decode("utf-8", "replace")
        )
        if query.lstrip()[:11].upper().startswith(_NOT_BOUNDARY):
            self.in_tx = True
            return False
        return True

    def commit(self, event: Any) -> BinlogPosition:
        """XID, COMMIT or DDL: the transaction is over; returns the new boundary."""
        self.gtids.commit()
        self.server_id = self.server_id or event.packet.server_id
        self.boundary = self.position(event.packet.log_pos)
        self.in_tx = False
        return self.boundary

    def replay_from_boundary(self) -> None:
        """A new connection starts again at the boundary: forget the open transaction."""
        self.file = self.boundary.file
        self.gtids.pending = None
        self.in_tx = False

    def position(self, pos: int) -> BinlogPosition:
        return BinlogPosition(self.file, pos, 0, self.gtids.executed, self.server_id)


class RowEmitter:
    """One pipeline's rows: its tables, the rows it emitted of the open transaction, and the
    held-back last rows event. ``start`` may be inside a transaction (``row_skip`` rows done)."""

    def __init__(self, start: BinlogPosition, tables: TableFilter, emit: Emit,
                 on_table: OnTable) -> None:
        self.tables = tables
        self._emit = emit
        self._on_table = on_table
        self._seen: set[str] = set()
        self._pending: list[ChangeEvent] | None = None
        self._skip = start.row_skip
        self._tx_rows = 0
        self._done_rows = start.row_skip
        self._tx_boundary = BinlogPosition(start.file, start.pos, 0, start.gtid_set,
                                           start.server_id)
        self.in_tx = start.row_skip > 0  # inside a transaction that has rows of its tables

    def resume_position(self, tracker: PositionTracker) -> BinlogPosition:
        """Where a reader of its own must start so nothing emitted repeats or is lost (still
        right after an ``emit`` raised: nothing is counted as done before it returned)."""
        b = self._tx_boundary if self.in_tx else tracker.boundary
        return BinlogPosition(b.file, b.pos, self._done_rows, b.gtid_set, b.server_id)

    def on_table_map(self, shape: TableShape, tracker: PositionTracker) -> None:
        self._enter(tracker)
        if shape.fingerprint not in self._seen:
            self._on_table(shape)
            self._seen.add(shape.fingerprint)

    def on_rows(self, event: Any, shape: TableShape, op: Op, tracker: PositionTracker) -> None:
        self._enter(tracker)
        images = row_images(event, shape, op, tracker.file)
        events = self._change_events(event, shape, op, images, tracker)
        if events:
            if self._pending:
                self._flush_pending()
            self._pending = events

    def commit(self, boundary: BinlogPosition) -> None:
        """The transaction ended at ``boundary``: its last row carries it."""
        pending = self._pending
        if pending:
            last = pending[-1]
            last.tx_end = True
            last.position = boundary
            self._emit(pending)
        self._pending = None
        self._tx_rows = self._done_rows = self._skip = 0
        self.in_tx = False

    def replay_from_boundary(self) -> None:
        """A new connection replays the open transaction: skip the rows already emitted."""
        self._pending = None
        self._skip = self._done_rows
        self._tx_rows = 0

    def _enter(self, tracker: PositionTracker) -> None:
        if not self.in_tx:
            self._tx_boundary = tracker.boundary
            self.in_tx = True

    def _flush_pending(self) -> None:
        pending = self._pending
        assert pending is not None
        self._emit(pending)
        self._pending = None
        self._done_rows = pending[-1].position.row_skip

    def _change_events(
        self, event: Any, shape: TableShape, op: Op, images: list[Images],
        tracker: PositionTracker,
    ) -> list[ChangeEvent]:
        header = event.packet
        end_pos = header.log_pos
        server_id = header.server_id
        file = tracker.file
        prefix = f"{server_id}:{file}:{end_pos}:"
        gtid = tracker.gtids.pending
        b = tracker.boundary
        tx_id = gtid or f"{b.file}:{b.pos}"
        db, table, key = shape.schema, shape.table, shape.primary_key
        ts_ms = event.timestamp * 1000
        pos = end_pos - header.event_size
        size_bytes = header.event_size // max(1, len(images))
        b_file, b_pos, b_gtids, b_server = b.file, b.pos, b.gtid_set, b.server_id
        events: list[ChangeEvent] = []
        append = events.append
        tx_rows, skip = self._tx_rows, self._skip
        for index, (before, after) in enumerate(images):
            tx_rows += 1
            if tx_rows <= skip:
                continue
            position = BinlogPosition(b_file, b_pos, tx_rows, b_gtids, b_server)
            # Positional, in ChangeEvent's field order (checked below): 3x cheaper than keywords.
            append(ChangeEvent(prefix + str(index), op, db, table, before, after, key, ts_ms,
                               server_id, file, pos, gtid, tx_id, position, False, size_bytes))
        self._tx_rows = tx_rows
        return events


_CHANGE_EVENT_FIELDS = ("event_id", "op", "db", "table", "before", "after", "primary_key",
                        "ts_ms", "server_id", "file", "pos", "gtid", "tx_id", "position",
                        "tx_end", "size_bytes")
if ChangeEvent.__struct_fields__ != _CHANGE_EVENT_FIELDS:
    raise ImportError("ChangeEvent's fields changed: update RowEmitter._change_events")


class EventRouter:
    """Consumes one reader's binlog events in order and emits the rows of matching tables."""

    def __init__(self, start: BinlogPosition, tables: TableFilter, shapes: TableShapes,
                 emit: Emit, on_table: OnTable) -> None:
        self.tracker = PositionTracker(start)
        self.rows = RowEmitter(start, tables, emit, on_table)
        self._tables = tables
        self._shapes = shapes
        self._by_table_id: dict[int, TableShape] = {}
        self._handlers: dict[type, Callable[[Any], None]] = {
            WriteRowsEvent: self._on_rows,
            UpdateRowsEvent: self._on_rows,
            DeleteRowsEvent: self._on_rows,
            CachedTableMapEvent: self._on_table_map,
            RotateEvent: self.tracker.on_rotate,
            XidEvent: self._end_transaction,
            Xid: self._end_transaction,
            QueryEvent: self._on_query,
            GtidEvent: self.tracker.on_gtid,
            MariadbGtidEvent: self.tracker.on_gtid,
            MariadbGtid: self.tracker.on_gtid,
        }

    @property
    def resume_position(self) -> BinlogPosition:
        """Where a new connection must start so nothing emitted repeats and nothing is lost."""
        return self.rows.resume_position(self.tracker)

    @property
    def at_boundary(self) -> bool:
        """Between transactions: nothing held back, nothing half-read."""
        return not self.tracker.in_tx and not self.rows.in_tx

    def handle(self, event: Any) -> None:
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event)

    def _on_table_map(self, event: Any) -> None:
        self.tracker.in_tx = True
        if self._tables.matches(event.schema, event.table):
            shape = self._shapes.shape_of(event)
            self._by_table_id[event.table_id] = shape
            self.rows.on_table_map(shape, self.tracker)
        else:
            self._by_table_id.pop(event.table_id, None)
            event.table_map.pop(event.table_id, None)  # its rows events are dropped unparsed

    def _on_query(self, event: Any) -> None:
        if self.tracker.ends_transaction(event):
            self._end_transaction(event)

    def _end_transaction(self, event: Any) -> None:
        self.rows.commit(self.tracker.commit(event))

    def _on_rows(self, event: Any) -> None:
        shape = self._by_table_id.get(event.table_id)
        if shape is None:
            return
        self.tracker.in_tx = True
        self.rows.on_rows(event, shape, ROW_OPS[type(event)], self.tracker)


_IMAGES_ATTR = "_deltaforge_images"


def row_images(event: Any, shape: TableShape, op: Op, file: str) -> list[Images]:
    """The converted (before, after) images of a rows event, computed once per event object:
    every pipeline of a shared stream reuses them (they are never modified downstream).
    The table's fast decoder reads them, or the library's decoder where it cannot."""
    images: list[Images] | None = event.__dict__.get(_IMAGES_ATTR)
    if images is None:
        try:
            images = shape.images(event, op)
        except Exception as exc:  # the library and converters raise many kinds on bad data
            where = f"{file}:{event.packet.log_pos} table {shape.schema}.{shape.table}"
            raise SourceDecodeError(f"cannot decode rows event at {where}: {exc!r}") from exc
        setattr(event, _IMAGES_ATTR, images)
    return images
