"""The MySQL/MariaDB binlog source: where the binlog ends, and a reader thread that streams it."""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pymysql
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import HeartbeatLogEvent, QueryEvent, RotateEvent, XidEvent

from state.records import BinlogPosition
from state.spec import MysqlConfigSpec
from workers.backoff import Backoff
from workers.events import ChangeEvent
from workers.metrics import count_decode_fallback
from workers.source.connection import (
    Connection,
    DumpConnection,
    check_server,
    classify,
    connect,
    connection_settings,
    json_columns,
    server_session,
)
from workers.source.dsn import MysqlDsn, parse_dsn
from workers.source.errors import SourceConfigError, SourceError, SourceUnreachableError
from workers.source.items import Progress, SourceFailure, SourceItem, TableSeen
from workers.source.packets import Xid
from workers.source.stream import STREAM_EVENTS, EventRouter
from workers.source.tablemap import TableShape, TableShapes
from workers.source.tables import TableFilter

__all__ = ["BinlogFollower", "BinlogReader", "SourceFailure", "SourceItem", "current_binlog_end"]

log = logging.getLogger(__name__)
_PARSE_ERROR = 1064
_PUT_POLL_S = 0.2
_BOUNDARY_EVENTS = (XidEvent, Xid, QueryEvent, RotateEvent, HeartbeatLogEvent)
Handover = Callable[[BinlogPosition], bool]


def current_binlog_end(config: MysqlConfigSpec) -> BinlogPosition:
    """The server's current binlog end (file, pos, executed GTIDs, server id)."""
    with server_session(config) as (conn, dsn):
        return _binlog_end(conn, dsn)


def _binlog_end(conn: Any, dsn: MysqlDsn) -> BinlogPosition:
    with conn.cursor() as cur:
        status = _binlog_status(cur)
        if status is None:
            raise SourceConfigError(f"binary logging is off on {dsn.address} (enable log_bin)")
        mariadb = "mariadb" in conn.get_server_info().lower()
        cur.execute(
            "SELECT @@GLOBAL.gtid_binlog_pos" if mariadb else "SELECT @@GLOBAL.gtid_executed"
        )
        gtid = str(cur.fetchone()[0] or "").replace("\n", "") or None
        cur.execute("SELECT @@server_id")
        server_id = int(cur.fetchone()[0])
    return BinlogPosition(str(status[0]), int(status[1]), 0, gtid, server_id)


def _binlog_status(cur: Any) -> Any:
    try:
        cur.execute("SHOW MASTER STATUS")
    except pymysql.err.ProgrammingError as exc:  # MySQL 8.4 removed SHOW MASTER STATUS
        if exc.args[0] != _PARSE_ERROR:
            raise
        cur.execute("SHOW BINARY LOG STATUS")
    return cur.fetchone()


class StopReading(Exception):
    """Raised inside the reader thread once ``stop()`` was called or it handed over."""


class BinlogFollower:
    """A daemon thread following one server's binlog over one dump connection.

    Transient errors are retried forever with capped backoff from ``resume_position``; a fatal
    one goes to ``on_fatal`` and ends the thread. Subclasses say where a session starts and
    what happens to each event.
    """

    def __init__(self, name: str, config: MysqlConfigSpec) -> None:
        self._name = name
        self._config = config
        self._dsn = parse_dsn(config.dsn)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"binlog-{name}", daemon=True)
        self._ctl: Any = None
        self._stream_conn: Any = None
        self._stream_connects = 0
        self._backoff = Backoff(initial_s=0.5, max_s=30.0)

    @property
    def reconnects(self) -> int:
        """How many times the binlog connection was re-established after the first one."""
        return max(0, self._stream_connects - 1)

    @property
    def resume_position(self) -> BinlogPosition:
        """Where the next connection starts."""
        raise NotImplementedError

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop reading and join the thread."""
        self._stop.set()
        _shutdown(self._stream_conn)
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    def _new_session(self) -> BinlogPosition:
        """Reset per-connection state; returns where the connection starts."""
        raise NotImplementedError

    def _follow(self, stream: BinLogStreamReader) -> None:
        raise NotImplementedError

    def _on_fatal(self, error: SourceError) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        log.info("binlog reader started name=%s source=%s position=%s",
                 self._name, self._dsn.redacted(), self.resume_position)
        while not self._stop.is_set():
            try:
                self._read_session()
            except StopReading:
                break
            except Exception as exc:  # top of the reader loop: classify, then retry or report
                try:
                    if not self._handle_failure(classify(exc, self._dsn)):
                        return
                except StopReading:
                    break
        log.info("binlog reader stopped name=%s position=%s", self._name, self.resume_position)

    def _handle_failure(self, error: SourceError) -> bool:
        """Retry a transient error after a backoff (True), or report a fatal one (False)."""
        if error.fatal:
            log.error("binlog reader failed name=%s error=%s", self._name, error)
            self._on_fatal(error)
            return False
        delay_s = self._backoff.next_delay()
        log.warning(
            "binlog reader retrying name=%s attempt=%d delay_s=%.1f position=%s error=%s",
            self._name, self._backoff.attempts, delay_s, self.resume_position, error,
        )
        self._stop.wait(delay_s)
        return True

    def _read_session(self) -> None:
        """One connection: preflight, then stream until stopped or an error is raised."""
        start = self._new_session()
        self._ctl = connect(self._config, self._dsn)
        stream = self._open_stream(start)
        try:
            check_server(self._ctl, self._dsn)
            self._follow(stream)
        finally:
            stream.close()
            self._ctl.close()

    def _open_stream(self, start: BinlogPosition) -> BinLogStreamReader:
        return BinLogStreamReader(
            connection_settings=connection_settings(self._config, self._dsn),
            server_id=self._config.effective_server_id(),
            log_file=start.file,
            log_pos=start.pos,
            resume_stream=True,
            blocking=True,
            slave_heartbeat=self._config.heartbeat_s,
            only_events=STREAM_EVENTS,
            only_schemas=self._only_schemas(),
            is_mariadb=False,  # True would ignore log_file/log_pos; MariaDB GTIDs arrive anyway
            pymysql_wrapper=self._connect_counted,
            enable_logging=False,
        )

    def _only_schemas(self) -> list[str] | None:
        return None

    def _connect_counted(self, **settings: Any) -> Any:
        """pymysql.connect for the library; counts stream (re)connections, refuses after stop."""
        if self._stop.is_set():
            raise StopReading
        if "cursorclass" in settings:  # the library's control connection sets one
            return Connection(**settings)
        conn = DumpConnection(**settings)
        self._stream_connects += 1
        self._stream_conn = conn
        return conn

    def _json_columns(self, schema: str, table: str) -> frozenset[str]:
        return json_columns(self._ctl, schema, table)


class BinlogReader(BinlogFollower):
    """Streams one pipeline's tables from ``start`` into ``out``.

    Puts ``list[ChangeEvent]`` (one rows event, filtered by table), ``TableSeen`` for each new
    table version, ``Progress`` at each binlog heartbeat, and, on a fatal error, one
    ``SourceFailure`` before the thread ends. A reconnect resumes from the position after the
    last event put on ``out``. With ``handover`` (a catch-up reader), it offers its position at
    each transaction boundary and ends once ``handover`` accepted it (a shared stream takes
    over from there).
    """

    def __init__(
        self,
        pipeline: str,
        config: MysqlConfigSpec,
        start: BinlogPosition,
        out: queue.Queue[SourceItem],
        handover: Handover | None = None,
    ) -> None:
        super().__init__(pipeline, config)
        self._out = out
        self._handover = handover
        self._tables = TableFilter(config.tables)
        self._shapes = TableShapes(self._json_columns, on_fallback=self._count_fallback)
        self._router = self._new_router(start)
        self.handed_over = False

    @property
    def resume_position(self) -> BinlogPosition:
        """Position after the last event put on the queue (where a reconnect resumes)."""
        return self._router.resume_position

    def _new_session(self) -> BinlogPosition:
        start = self._router.resume_position
        self._router = self._new_router(start)
        return start

    def _new_router(self, start: BinlogPosition) -> EventRouter:
        return EventRouter(start, self._tables, self._shapes, self._put, self._on_new_table)

    def _only_schemas(self) -> list[str] | None:
        return self._tables.schemas

    def _follow(self, stream: BinLogStreamReader) -> None:
        handle = self._router.handle
        stop = self._stop
        for event in stream:
            if stop.is_set():
                raise StopReading
            if type(event) is HeartbeatLogEvent:
                self._report_progress()
            handle(event)
            if self._handover is not None and isinstance(event, _BOUNDARY_EVENTS):
                self._offer_handover()
        raise SourceUnreachableError(f"{self._dsn.address} ended the binlog stream")

    def _report_progress(self) -> None:
        """At the binlog's end between transactions: tell the pipeline. (The server sends a
        heartbeat only when it had nothing to send for ``heartbeat_s``.)"""
        if self._router.at_boundary:
            try:
                self._out.put_nowait(Progress(self._router.resume_position,
                                              int(time.time() * 1000), at_end=True))
            except queue.Full:
                pass  # the pipeline has rows to work on; it learns the position from them

    def _offer_handover(self) -> None:
        assert self._handover is not None
        if self._router.at_boundary and self._handover(self._router.resume_position):
            self.handed_over = True
            self._stop.set()
            raise StopReading

    def _on_fatal(self, error: SourceError) -> None:
        self._put_item(SourceFailure(error))

    def _count_fallback(self, shape: TableShape, reason: str, rows: int) -> None:
        count_decode_fallback(self._name, reason, rows)

    def _on_new_table(self, shape: TableShape) -> None:
        self._put_item(TableSeen(shape.schema_record()))

    def _put(self, events: list[ChangeEvent]) -> None:
        self._put_item(events)
        self._backoff.reset_after_success()  # progress: the next fault backs off afresh

    def _put_item(self, item: SourceItem) -> None:
        """Blocking put (backpressure to the binlog) that still notices ``stop()``."""
        while True:
            try:
                self._out.put(item, timeout=_PUT_POLL_S)
                return
            except queue.Full:
                if self._stop.is_set():
                    raise StopReading from None


def _shutdown(conn: Any) -> None:
    """Wake a thread blocked reading the binlog socket."""
    sock = getattr(conn, "_sock", None)
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
