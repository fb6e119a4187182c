"""Turns mysql-replication events into ``ChangeEvent`` lists with resumable positions.

Positions: ``boundary`` is the position after the last XID / COMMIT / DDL; each event's
``position`` is that boundary plus the rows of the transaction delivered so far, except the
last row of a transaction, whose position is the next boundary (``tx_end=True``). The last
rows event is held back until the next rows event or the commit shows whether it ends the
transaction. Pure logic: no connection, no thread.
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
    TableMapEvent,
    UpdateRowsEvent,
    WriteRowsEvent,
)

from state.records import BinlogPosition
from workers.events import ChangeEvent, Op
from workers.source.errors import SourceDecodeError
from workers.source.gtids import GtidTracker
from workers.source.tablemap import TableShape, TableShapes
from workers.source.tables import TableFilter

Emit = Callable[[list[ChangeEvent]], None]
ROW_EVENTS = (WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent)
STREAM_EVENTS = [
    *ROW_EVENTS,
    TableMapEvent,
    RotateEvent,
    XidEvent,
    QueryEvent,
    GtidEvent,
    MariadbGtidEvent,
    HeartbeatLogEvent,
]
_NOT_BOUNDARY = ("BEGIN", "SAVEPOINT", "ROLLBACK TO", "XA START", "XA END")


class EventRouter:
    """Consumes binlog events in order and emits the rows of matching tables."""

    def __init__(
        self, start: BinlogPosition, tables: TableFilter, shapes: TableShapes, emit: Emit
    ) -> None:
        self.boundary = BinlogPosition(start.file, start.pos, 0, start.gtid_set, start.server_id)
        self.file = start.file
        self._server_id = start.server_id
        self._tables = tables
        self._shapes = shapes
        self._emit = emit
        self._gtids = GtidTracker(start.gtid_set)
        self._by_table_id: dict[int, TableShape] = {}
        self._pending: list[ChangeEvent] | None = None
        self._skip = start.row_skip
        self._tx_rows = 0
        self._done_rows = start.row_skip
        self._in_tx = False
        self._handlers: dict[type, Callable[[Any], None]] = {
            WriteRowsEvent: self._on_write,
            UpdateRowsEvent: self._on_update,
            DeleteRowsEvent: self._on_delete,
            TableMapEvent: self._on_table_map,
            RotateEvent: self._on_rotate,
            XidEvent: self._end_transaction,
            QueryEvent: self._on_query,
            GtidEvent: self._on_gtid,
            MariadbGtidEvent: self._on_gtid,
        }

    @property
    def resume_position(self) -> BinlogPosition:
        """Where a new connection must start so nothing emitted repeats and nothing is lost."""
        b = self.boundary
        return BinlogPosition(b.file, b.pos, self._done_rows, b.gtid_set, b.server_id)

    def handle(self, event: Any) -> None:
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event)

    def _on_rotate(self, event: Any) -> None:
        if event.next_binlog == self.file:
            return  # the fake rotate a (re)connection starts with
        self.file = event.next_binlog
        if not self._in_tx:
            self.boundary = self._position(event.position)

    def _on_gtid(self, event: Any) -> None:
        self._gtids.begin(event.gtid)
        self._in_tx = True

    def _on_table_map(self, event: Any) -> None:
        self._in_tx = True
        if self._tables.matches(event.schema, event.table):
            self._by_table_id[event.table_id] = self._shapes.shape_of(event)
        else:
            self._by_table_id.pop(event.table_id, None)

    def _on_query(self, event: Any) -> None:
        query = (
            event.query
            if isinstance(event.query, str)
            else bytes(event.query).decode("utf-8", "replace")
        )
        if query.lstrip()[:11].upper().startswith(_NOT_BOUNDARY):
            self._in_tx = True
            return
        self._end_transaction(event)

    def _end_transaction(self, event: Any) -> None:
        """XID, COMMIT or DDL: the transaction is over; its last row carries the new boundary."""
        self._gtids.commit()
        self._server_id = self._server_id or event.packet.server_id
        self.boundary = self._position(event.packet.log_pos)
        pending, self._pending = self._pending, None
        self._tx_rows = self._done_rows = self._skip = 0
        self._in_tx = False
        if pending:
            last = pending[-1]
            last.tx_end = True
            last.position = self.boundary
            self._emit(pending)

    def _position(self, pos: int) -> BinlogPosition:
        return BinlogPosition(self.file, pos, 0, self._gtids.executed, self._server_id)

    def _on_write(self, event: Any) -> None:
        self._rows(event, "c")

    def _on_update(self, event: Any) -> None:
        self._rows(event, "u")

    def _on_delete(self, event: Any) -> None:
        self._rows(event, "d")

    def _rows(self, event: Any, op: Op) -> None:
        shape = self._by_table_id.get(event.table_id)
        if shape is None:
            return
        self._in_tx = True
        events = self._decode(event, shape, op)
        if events:
            if self._pending:
                self._flush_pending()
            self._pending = events

    def _decode(self, event: Any, shape: TableShape, op: Op) -> list[ChangeEvent]:
        try:
            return self._change_events(event, shape, op, event.rows)
        except Exception as exc:  # the library and converters raise many kinds on bad data
            where = f"{self.file}:{event.packet.log_pos} table {shape.schema}.{shape.table}"
            raise SourceDecodeError(f"cannot decode rows event at {where}: {exc!r}") from exc

    def _flush_pending(self) -> None:
        pending, self._pending = self._pending, None
        assert pending is not None
        self._done_rows = pending[-1].position.row_skip
        self._emit(pending)

    def _change_events(
        self, event: Any, shape: TableShape, op: Op, rows: list[dict[str, Any]]
    ) -> list[ChangeEvent]:
        header = event.packet
        end_pos = header.log_pos
        prefix = f"{header.server_id}:{self.file}:{end_pos}:"
        gtid = self._gtids.pending
        tx_id = gtid or f"{self.boundary.file}:{self.boundary.pos}"
        b = self.boundary
        common = {
            "op": op,
            "db": shape.schema,
            "table": shape.table,
            "primary_key": shape.primary_key,
            "ts_ms": event.timestamp * 1000,
            "server_id": header.server_id,
            "file": self.file,
            "pos": end_pos - header.event_size,
            "gtid": gtid,
            "tx_id": tx_id,
            "tx_end": False,
            "size_bytes": header.event_size // max(1, len(rows)),
        }
        images = _IMAGES[op]
        events = []
        for index, row in enumerate(rows):
            self._tx_rows += 1
            if self._tx_rows <= self._skip:
                continue
            before, after = images(shape, row)
            position = BinlogPosition(b.file, b.pos, self._tx_rows, b.gtid_set, b.server_id)
            events.append(
                ChangeEvent(
                    event_id=prefix + str(index),
                    before=before,
                    after=after,
                    position=position,
                    **common,
                )
            )
        return events


Images = tuple[dict[str, Any] | None, dict[str, Any] | None]


def _insert_images(shape: TableShape, row: dict[str, Any]) -> Images:
    return None, shape.convert(row["values"], row["none_sources"])


def _delete_images(shape: TableShape, row: dict[str, Any]) -> Images:
    return shape.convert(row["values"], row["none_sources"]), None


def _update_images(shape: TableShape, row: dict[str, Any]) -> Images:
    before = shape.convert(row["before_values"], row["before_none_sources"])
    return before, shape.convert(row["after_values"], row["after_none_sources"])


_IMAGES: dict[str, Callable[[TableShape, dict[str, Any]], Images]] = {
    "c": _insert_images,
    "d": _delete_images,
    "u": _update_images,
}
