"""One binlog stream per MySQL server per worker, shared by the worker's pipelines on it.

Every dump connection receives and parses the server's whole binlog, so one connection per
pipeline costs pipelines x server traffic. A ``BinlogStream`` reads once and hands each
``Subscription`` (one pipeline) the rows of its tables only: position, file and GTIDs are
tracked once per stream, a ``RowEmitter`` per pipeline counts its own rows, and a rows event
is decoded once however many pipelines want it.

A subscription is in one of three states:
- waiting: its start is ahead of the stream; it is attached when the stream gets there;
- attached: it receives events from the stream;
- catching up: its start is behind the stream, or its queue was full (a slow or stopped
  pipeline must not stall the others): a reader of its own (``BinlogReader``) delivers from
  its position and hands over to the stream at a transaction boundary the stream has not
  passed yet.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
import zlib
from functools import partial
from typing import Any

import msgspec
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import (
    GtidEvent,
    HeartbeatLogEvent,
    MariadbGtidEvent,
    QueryEvent,
    RotateEvent,
    XidEvent,
)

from state.records import BinlogPosition, binlog_file_number, min_position
from state.spec import MysqlConfigSpec
from workers.metrics import count_decode_fallback
from workers.source.dsn import parse_dsn
from workers.source.errors import SourceError, SourceUnreachableError
from workers.source.items import Progress, SourceItem, TableSeen
from workers.source.mysql import BinlogFollower, BinlogReader, StopReading
from workers.source.packets import MariadbGtid, Xid
from workers.source.stream import ROW_OPS, PositionTracker, RowEmitter
from workers.source.stream_metrics import StreamMetrics
from workers.source.tablemap import TableShape, TableShapes
from workers.source.tablemap_cache import CachedTableMapEvent
from workers.source.tables import TableFilter

log = logging.getLogger(__name__)
GATHER_QUIET_S = 0.5  # start reading once no pipeline joined for this long ...
GATHER_MAX_S = 5.0  # ... or this long after the first one joined
PROGRESS_INTERVAL_S = 1.0
CONSUMING_S = 5.0  # a pipeline that took from its queue this recently is consuming ...
ROOM_WAIT_S = 2.0  # ... and the stream waits this long for room before leaving it behind ...
BACKED_UP_SHARE = 0.25  # ... unless this share of its pipelines is backed up too
ROOM_POLL_S = 0.1  # how often a wait for room checks whether it should still wait
ServerKey = tuple[str, int, int | None]  # host, port, server_id: not the DSN's user


class _Lagging(Exception):
    """A subscriber's queue is full."""


def _consuming(out: queue.Queue[SourceItem]) -> bool:
    return time.monotonic() - getattr(out, "taken_at", 0.0) <= CONSUMING_S


def stream_server_id(slot: int, key: ServerKey) -> int:
    """The stream's replica id: stable per worker slot and server, apart from pipelines' ids."""
    host, port, server_id = key
    return 1 + zlib.crc32(f"stream/{slot}/{host}:{port}/{server_id}".encode()) % 4_000_000_000


def _sort_key(file: str, pos: int) -> tuple[int, str, int, int]:
    """``BinlogPosition(file, pos).sort_key()`` (called for every event of the stream)."""
    return (_file_number(file), file, pos, 0)


@functools.lru_cache(maxsize=64)
def _file_number(file: str) -> int:
    return binlog_file_number(file)


class Subscription:
    """One pipeline's source when streams are shared (the same interface as BinlogReader)."""

    def __init__(self, stream_for: Any, pipeline: str, config: MysqlConfigSpec,
                 start: BinlogPosition, out: queue.Queue[SourceItem]) -> None:
        self._stream_for = stream_for
        self.name = pipeline
        self.config = config
        self.start_position = start
        self.out = out
        self.tables = TableFilter(config.tables)
        self.emitter: RowEmitter | None = None  # set while attached
        self.catchup: BinlogReader | None = None
        self.stream: BinlogStream | None = None
        self.reconnects = 0
        self.closed = False

    def start(self) -> None:
        self.stream = self._stream_for(self)

    def stop(self) -> None:
        """Leave the stream; after this returns nothing more is put on ``out``."""
        if self.stream is not None:
            self.stream.unsubscribe(self)

    def put_nowait(self, item: SourceItem) -> None:
        """Hand over ``item`` (on the stream thread); a full queue is for the stream to
        resolve (``BinlogStream.on_full``)."""
        try:
            self.out.put_nowait(item)
        except queue.Full:
            assert self.stream is not None
            self.stream.on_full(self, item)

    def put_events(self, events: list[Any]) -> None:
        self.put_nowait(events)

    def put_table(self, shape: TableShape) -> None:
        self.put_nowait(TableSeen(shape.schema_record()))


class BinlogStream(BinlogFollower):
    """Reads one server's binlog once for every subscription of this worker on that server."""

    def __init__(self, key: ServerKey, config: MysqlConfigSpec, slot: int) -> None:
        own = msgspec.structs.replace(config, server_id=stream_server_id(slot, key))
        super().__init__(f"stream-{key[0]}:{key[1]}", own)
        self.key = key
        self.label = f"{key[0]}:{key[1]}"
        self._lock = threading.Lock()
        self._waiting: dict[str, Subscription] = {}
        self._attached: dict[str, Subscription] = {}
        self._catching_up: dict[str, Subscription] = {}
        self._matches: dict[tuple[str, str], tuple[Subscription, ...]] = {}
        self._by_table_id: dict[int, tuple[TableShape, tuple[Subscription, ...]]] = {}
        self._touched: list[Subscription] = []
        self._shapes = TableShapes(self._json_columns, on_fallback=self._count_fallback)
        self._tracker: PositionTracker | None = None
        self._next: tuple[str, int] | None = None  # file and position where the next event starts
        self._joined_at = time.monotonic()
        self._first_joined_at = self._joined_at
        self._progress_at = 0.0
        self.dead = False
        self.detaches = 0
        self.last_event_ts_ms = 0
        self.at_end = False  # a heartbeat came after the last event
        self._handlers: dict[type, Any] = {
            CachedTableMapEvent: self._on_table_map,
            XidEvent: self._on_commit,
            Xid: self._on_commit,
            QueryEvent: self._on_query,
            GtidEvent: self._on_gtid,
            MariadbGtidEvent: self._on_gtid,
            MariadbGtid: self._on_gtid,
        }

    # ---- membership (worker loop and catch-up threads) ---------------------------------------

    def subscribe(self, sub: Subscription) -> bool:
        """Join: waiting if the stream has not passed ``sub``'s start, else catching up.
        False when the stream has ended (the caller opens a new one)."""
        with self._lock:
            if self.dead:
                return False
            self._joined_at = time.monotonic()
            sub.stream = self
            start = sub.start_position
            if self._next_start is None or start.sort_key() >= self._next_start:
                self._wait_for(sub)
            else:
                self._start_catchup(sub, start)
        return True

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            sub.closed = True
            self._remove(sub)
            catchup, sub.catchup = sub.catchup, None
            if not (self._waiting or self._attached or self._catching_up):
                self.dead = True
                self._stop.set()
        if catchup is not None:
            catchup.stop()  # outside the lock: its thread may be waiting for it to hand over
        if self.dead:
            self.stop(timeout_s=0.0)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {"attached": len(self._attached), "waiting": len(self._waiting),
                    "catching_up": len(self._catching_up)}

    def lag_s(self, now_wall: float) -> float:
        if self.at_end or not self.last_event_ts_ms:
            return 0.0
        return max(0.0, now_wall - self.last_event_ts_ms / 1000)

    def _remove(self, sub: Subscription) -> None:
        for group in (self._waiting, self._attached, self._catching_up):
            group.pop(sub.name, None)
        sub.emitter = None
        self._matches.clear()
        self._by_table_id = {tid: (shape, tuple(s for s in subs if s is not sub))
                             for tid, (shape, subs) in self._by_table_id.items()}

    def _start_catchup(self, sub: Subscription, position: BinlogPosition) -> None:
        """Called with the lock held."""
        self._remove(sub)
        self._catching_up[sub.name] = sub
        sub.catchup = BinlogReader(sub.name, sub.config, position, sub.out,
                                   handover=partial(self._take_over, sub))
        sub.catchup.start()
        log.info("pipeline catching up on its own stream=%s pipeline=%s from=%s",
                 self.label, sub.name, position)

    def _take_over(self, sub: Subscription, position: BinlogPosition) -> bool:
        """A catch-up reader at a boundary: the stream takes over if it has not passed it."""
        passed = self._next_start  # read without the lock first: most offers are far behind
        if passed is not None and position.sort_key() < passed:
            return False
        with self._lock:
            if sub.closed:
                return True
            if self.dead or self._next_start is None or position.sort_key() < self._next_start:
                return False
            self._catching_up.pop(sub.name, None)
            sub.catchup = None
            sub.start_position = position
            self._wait_for(sub)
        log.info("pipeline rejoins the shared stream stream=%s pipeline=%s at=%s",
                 self.label, sub.name, position)
        return True

    # ---- the stream thread -----------------------------------------------------------------

    @property
    def _next_start(self) -> tuple[int, str, int, int] | None:
        """The sort key of where the next event starts (kept as file and position: it moves
        with every event and is compared only when pipelines join or hand over)."""
        next_ = self._next
        return None if next_ is None else _sort_key(*next_)

    @property
    def resume_position(self) -> BinlogPosition:
        if self._tracker is None:
            return BinlogPosition("", 0)
        return self._tracker.boundary

    def _run(self) -> None:
        if self._gather():
            super()._run()

    def _gather(self) -> bool:
        """Wait until pipelines stop joining, then start at the lowest position they need."""
        while not self._stop.is_set():
            now = time.monotonic()
            until = min(self._joined_at + GATHER_QUIET_S, self._first_joined_at + GATHER_MAX_S)
            if now >= until:
                break
            self._stop.wait(until - now)
        with self._lock:
            start = min_position([s.start_position for s in self._waiting.values()])
            if self._stop.is_set() or start is None:
                self.dead = True
                return False
            self._tracker = PositionTracker(start)
            self._next = (start.file, start.pos)
        return True

    def _new_session(self) -> BinlogPosition:
        with self._lock:
            assert self._tracker is not None
            tracker = self._tracker
            tracker.replay_from_boundary()
            for sub in self._attached.values():
                assert sub.emitter is not None
                sub.emitter.replay_from_boundary()
                sub.reconnects += 1
            self._touched = [s for s in self._attached.values() if s.emitter and s.emitter.in_tx]
            self._by_table_id.clear()
            self._next = (tracker.boundary.file, tracker.boundary.pos)
            return tracker.boundary

    def _follow(self, stream: BinLogStreamReader) -> None:
        stop = self._stop
        for event in stream:
            if stop.is_set():
                raise StopReading
            with self._lock:
                self._dispatch(event)
            if self._backoff.attempts:
                self._backoff.reset_after_success()  # this session delivers: reconnects reset
        raise SourceUnreachableError(f"{self._dsn.address} ended the binlog stream")

    def _on_fatal(self, error: SourceError) -> None:
        """Every pipeline continues on a reader of its own, which reports the error itself
        if its own position hits it too."""
        with self._lock:
            self.dead = True
            for sub in [*self._waiting.values(), *self._attached.values()]:
                self._start_catchup(sub, self._resume_of(sub))

    def _dispatch(self, event: Any) -> None:
        kind = type(event)
        tracker = self._tracker
        assert tracker is not None
        if kind is RotateEvent:
            self._on_rotate(event, tracker)
            return
        if kind is HeartbeatLogEvent:
            self._on_heartbeat()
            return
        header = event.packet
        if self._waiting:
            self._attach_reached(_sort_key(tracker.file, header.log_pos - header.event_size))
        self._next = (tracker.file, header.log_pos)
        self.last_event_ts_ms = event.timestamp * 1000
        self.at_end = False
        op = ROW_OPS.get(kind)
        if op is not None:
            self._on_rows(event, op, tracker)
            return
        handler = self._handlers.get(kind)
        if handler is not None:
            handler(event)

    def _wait_for(self, sub: Subscription) -> None:
        """Wait until the stream reaches ``sub``'s start; attach at once if it is there, between
        transactions. Called with the lock held."""
        self._waiting[sub.name] = sub
        tracker = self._tracker
        if tracker is not None and not tracker.in_tx and self._next_start is not None:
            self._attach_reached(self._next_start)

    def _attach_reached(self, event_start: tuple[int, str, int, int]) -> None:
        for name, sub in list(self._waiting.items()):
            if sub.start_position.sort_key()[:3] <= event_start[:3]:
                del self._waiting[name]
                sub.emitter = RowEmitter(sub.start_position, sub.tables, sub.put_events,
                                         sub.put_table)
                self._attached[name] = sub
                self._matches.clear()
                if sub.start_position.row_skip:
                    self._touched.append(sub)

    def _on_rotate(self, event: Any, tracker: PositionTracker) -> None:
        file = tracker.file
        tracker.on_rotate(event)
        if tracker.file != file:
            self._next = (tracker.file, event.position)

    def _on_heartbeat(self) -> None:
        self.at_end = True
        self._report_progress(force=True)

    def _on_gtid(self, event: Any) -> None:
        assert self._tracker is not None
        self._tracker.on_gtid(event)

    def _on_table_map(self, event: Any) -> None:
        tracker = self._tracker
        assert tracker is not None
        tracker.in_tx = True
        subs = self._subscribers_of(event.schema, event.table)
        if not subs:
            self._by_table_id.pop(event.table_id, None)
            # The reader forgets the table too: its rows events are then dropped unparsed
            # (``packets``), as for a filtered table. Pipelines join only between
            # transactions, and every transaction maps its tables again.
            event.table_map.pop(event.table_id, None)
            return
        shape = self._shapes.shape_of(event)
        self._by_table_id[event.table_id] = (shape, subs)
        for sub in subs:
            self._deliver(sub, self._table_map_to, sub, shape, tracker)

    def _table_map_to(self, sub: Subscription, shape: TableShape,
                      tracker: PositionTracker) -> None:
        assert sub.emitter is not None
        if not sub.emitter.in_tx:
            self._touched.append(sub)
        sub.emitter.on_table_map(shape, tracker)

    def _on_rows(self, event: Any, op: Any, tracker: PositionTracker) -> None:
        entry = self._by_table_id.get(event.table_id)
        if entry is None:
            return
        shape, subs = entry
        for sub in subs:
            if sub.emitter is not None:
                self._deliver(sub, sub.emitter.on_rows, event, shape, op, tracker)

    def _on_query(self, event: Any) -> None:
        assert self._tracker is not None
        if self._tracker.ends_transaction(event):
            self._on_commit(event)

    def _on_commit(self, event: Any) -> None:
        assert self._tracker is not None
        boundary = self._tracker.commit(event)
        touched, self._touched = self._touched, []
        for sub in touched:
            if sub.emitter is not None:
                self._deliver(sub, sub.emitter.commit, boundary)
        self._report_progress(force=False)

    def _deliver(self, sub: Subscription, step: Any, *args: Any) -> None:
        """Hand ``sub`` one step; a full queue detaches it onto a reader of its own."""
        try:
            step(*args)
        except _Lagging:
            self.detaches += 1
            self._start_catchup(sub, self._resume_of(sub))

    def on_full(self, sub: Subscription, item: SourceItem) -> None:
        """``sub``'s queue is full (called on the stream thread, holding the lock).

        When several pipelines of the stream are backed up at once (``_backed_up_widely``),
        the worker itself is behind: its CPU or its Kafka producer cannot keep up. Readers of
        their own would parse the same binlog again and make it worse, so the stream waits
        for room, holding the binlog back. A lone laggard is moved to a reader of its own
        (``_Lagging``): at once when it is not taking items (stuck on a failed sink), after
        ``ROOM_WAIT_S`` when it is (a slow sink). The lock is released while waiting: the
        worker loop may need it (pipelines starting, stopping, metrics) before it gets round
        to making room. A pipeline that left meanwhile drops ``item``.
        """
        if not _consuming(sub.out) and not self._backed_up_widely():
            raise _Lagging
        self._lock.release()
        try:
            deadline = time.monotonic() + ROOM_WAIT_S
            while not sub.closed:
                try:
                    sub.out.put(item, timeout=ROOM_POLL_S)
                    return
                except queue.Full:
                    pass
                if self._stop.is_set():
                    raise StopReading
                if time.monotonic() >= deadline and not self._backed_up_widely():
                    raise _Lagging
        finally:
            self._lock.acquire()

    def _backed_up_widely(self) -> bool:
        """Two or more of the attached pipelines have half-full queues and are taking from
        them (a shared cause: the worker's CPU, its Kafka producer), or a ``BACKED_UP_SHARE``
        of them, taking or not (Kafka stalled for the whole worker)."""
        subs = list(self._attached.values())  # without the lock: a copy made in one step
        backed_up = [s for s in subs if 0 < s.out.maxsize <= 2 * s.out.qsize()]
        if len(backed_up) >= max(2.0, BACKED_UP_SHARE * len(subs)):
            return True
        return sum(1 for s in backed_up if _consuming(s.out)) >= 2

    def _resume_of(self, sub: Subscription) -> BinlogPosition:
        assert self._tracker is not None
        if sub.emitter is None:
            return sub.start_position  # still waiting: nothing was delivered yet
        return sub.emitter.resume_position(self._tracker)

    def _count_fallback(self, shape: TableShape, reason: str, rows: int) -> None:
        """Rows the library decoded, counted for every pipeline that gets them."""
        for sub in self._subscribers_of(shape.schema, shape.table):
            count_decode_fallback(sub.name, reason, rows)

    def _subscribers_of(self, schema: str, table: str) -> tuple[Subscription, ...]:
        subs = self._matches.get((schema, table))
        if subs is None:
            subs = tuple(s for s in self._attached.values() if s.tables.matches(schema, table))
            self._matches[(schema, table)] = subs
        return subs

    def _report_progress(self, force: bool) -> None:
        """Tell idle subscribers where the stream is (at most once a second, or at a
        heartbeat), so they can checkpoint and report a true lag without rows of their own."""
        now = time.monotonic()
        if not force and now - self._progress_at < PROGRESS_INTERVAL_S:
            return
        self._progress_at = now
        assert self._tracker is not None
        ts_ms = int(time.time() * 1000) if self.at_end else self.last_event_ts_ms
        progress = Progress(self._tracker.boundary, ts_ms, self.at_end)
        for sub in self._attached.values():
            if sub.emitter is not None and not sub.emitter.in_tx:
                try:
                    sub.out.put_nowait(progress)
                except queue.Full:
                    pass  # busy with rows; it learns the position from them


class StreamRegistry:
    """The worker's streams by server; hands each pipeline its source."""

    def __init__(self, slot: int, sharing: bool) -> None:
        self.slot = slot
        self.sharing = sharing
        self.streams: dict[ServerKey, BinlogStream] = {}
        self.metrics = StreamMetrics(f"worker-{slot}")

    def open(self, pipeline: str, config: MysqlConfigSpec, start: BinlogPosition,
             out: queue.Queue[SourceItem]) -> BinlogReader | Subscription:
        """The pipeline's source, not started."""
        if not self.sharing:
            return BinlogReader(pipeline, config, start, out)
        return Subscription(self._stream_for, pipeline, config, start, out)

    def _stream_for(self, sub: Subscription) -> BinlogStream:
        key = server_key(sub.config, sub.start_position)
        stream = self.streams.get(key)
        if stream is None or not stream.subscribe(sub):
            stream = BinlogStream(key, sub.config, self.slot)
            stream.subscribe(sub)
            stream.start()
            self.streams[key] = stream
            log.info("binlog stream opened stream=%s worker=%d", stream.label, self.slot)
        return stream

    def report_metrics(self, now_wall: float) -> None:
        """Per-stream gauges and counters; ended streams are forgotten."""
        self.streams = {k: s for k, s in self.streams.items() if not s.dead}
        if self.sharing:
            self.metrics.report(list(self.streams.values()), now_wall)


def server_key(config: MysqlConfigSpec, start: BinlogPosition) -> ServerKey:
    dsn = parse_dsn(config.dsn)
    return dsn.host.lower(), dsn.port, start.server_id
