"""Shared binlog streams against a real MariaDB: one stream serves several pipelines, each from
its own position, and a laggard detaches, catches up on its own and rejoins. Compared row by
row."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

from deploy.local.mariadb import MariaDBServer
from state.records import BinlogPosition
from state.spec import MysqlConfigSpec
from tests.support.source import assert_quiet, run, take
from workers.events import ChangeEvent
from workers.source.items import SourceFailure, SourceItem
from workers.source.mysql import current_binlog_end
from workers.source.shared import BinlogStream, StreamRegistry, Subscription
from workers.waker import Waker, WakingQueue

Row = tuple[str, str, int]  # table, op, id


@pytest.fixture
def db(mariadb: MariaDBServer, unique_name: str) -> Iterator[str]:
    run(mariadb, f"CREATE DATABASE {unique_name}",
        *(f"CREATE TABLE {unique_name}.{t} (id INT PRIMARY KEY, v VARCHAR(20))"
          for t in ("a", "b", "c")))
    yield unique_name
    run(mariadb, f"DROP DATABASE {unique_name}")


@pytest.fixture
def registry() -> Iterator[StreamRegistry]:
    streams = StreamRegistry(slot=7, sharing=True)
    yield streams
    for stream in list(streams.streams.values()):
        stream.stop()


def insert(mariadb: MariaDBServer, db: str, table: str, ids: range) -> list[Row]:
    """One transaction per id (so positions between them are boundaries)."""
    run(mariadb, *(f"INSERT INTO {db}.{table} VALUES ({i}, 'v{i}')" for i in ids))
    return [(table, "c", i) for i in ids]


def config(mariadb: MariaDBServer, db: str, name: str, tables: list[str]) -> MysqlConfigSpec:
    return MysqlConfigSpec(id=name, dsn=mariadb.cdc_dsn(), tables=[f"{db}.{t}" for t in tables],
                           heartbeat_s=1, read_timeout_s=5)


def subscribe(registry: StreamRegistry, source: MysqlConfigSpec, start: BinlogPosition,
              queue_items: int = 10_000) -> tuple[Subscription, queue.Queue[SourceItem]]:
    out: queue.Queue[SourceItem] = queue.Queue(maxsize=queue_items)
    sub = registry.open(source.id, source, start, out)
    assert isinstance(sub, Subscription)
    sub.start()
    return sub, out


def rows_of(events: list[ChangeEvent]) -> list[Row]:
    return [(e.table, e.op, (e.after or e.before or {})["id"]) for e in events]


def take_rows(out: queue.Queue[SourceItem], count: int, timeout_s: float = 30.0) -> list[Row]:
    """The next ``count`` rows, in position order; then nothing more for a moment."""
    events = take(out, count, timeout_s)
    assert [e.position.sort_key() for e in events] == sorted(e.position.sort_key()
                                                             for e in events)
    assert_quiet(out, 0.5)
    return rows_of(events)


def dump_connections(mariadb: MariaDBServer) -> int:
    conn = mariadb.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                        "WHERE COMMAND LIKE 'Binlog Dump%'")
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def wait_for(check: object, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def only_stream(registry: StreamRegistry) -> BinlogStream:
    (stream,) = registry.streams.values()
    return stream


def test_each_pipeline_gets_exactly_its_rows_from_its_own_position(
        mariadb: MariaDBServer, db: str, registry: StreamRegistry) -> None:
    source_a = config(mariadb, db, "p-a", ["a"])
    early = current_binlog_end(source_a)
    a_rows = insert(mariadb, db, "a", range(1, 4))
    middle = current_binlog_end(source_a)
    ab_rows = insert(mariadb, db, "b", range(1, 3)) + insert(mariadb, db, "a", range(4, 6))
    late = current_binlog_end(source_a)
    sub_a, out_a = subscribe(registry, source_a, early)
    sub_ab, out_ab = subscribe(registry, config(mariadb, db, "p-ab", ["a", "b"]), middle)
    sub_c, out_c = subscribe(registry, config(mariadb, db, "p-c", ["c"]), late)
    new = insert(mariadb, db, "c", range(1, 3)) + insert(mariadb, db, "a", range(6, 8)) \
        + insert(mariadb, db, "b", range(3, 5))

    expected_a = [r for r in a_rows + ab_rows + new if r[0] == "a"]
    assert take_rows(out_a, len(expected_a)) == expected_a
    expected_ab = [r for r in ab_rows + new if r[0] in "ab"]
    assert take_rows(out_ab, len(expected_ab)) == expected_ab
    expected_c = [r for r in new if r[0] == "c"]
    assert take_rows(out_c, len(expected_c)) == expected_c
    stream = only_stream(registry)
    assert stream.counts() == {"attached": 3, "waiting": 0, "catching_up": 0}
    assert stream.reconnects == 0
    assert dump_connections(mariadb) >= 1
    for sub in (sub_a, sub_ab, sub_c):
        sub.stop()
    assert stream.dead


def test_a_stalled_pipeline_detaches_catches_up_and_rejoins_while_others_flow(
        mariadb: MariaDBServer, db: str, registry: StreamRegistry) -> None:
    source = config(mariadb, db, "p-fast", ["a"])
    start = current_binlog_end(source)
    _, fast = subscribe(registry, source, start)
    slow_sub, slow = subscribe(registry, config(mariadb, db, "p-slow", ["a"]), start,
                               queue_items=3)
    written = insert(mariadb, db, "a", range(1, 21))  # 20 rows events: the slow queue overflows
    assert take_rows(fast, 20) == written  # nobody reads ``slow``: the fast one is not held up
    stream = only_stream(registry)
    wait_for(lambda: stream.counts()["catching_up"] == 1)
    assert stream.detaches == 1

    received = take_rows(slow, 20)
    assert received == written
    wait_for(lambda: stream.counts() == {"attached": 2, "waiting": 0, "catching_up": 0})
    assert slow_sub.catchup is None
    more = insert(mariadb, db, "a", range(21, 24))
    assert take_rows(fast, 3) == more
    assert take_rows(slow, 3) == more


class SlowConsumer:
    """Takes up to ``per_tick`` items from each queue every ``every_s``, the first time after
    ``first_after_s`` (pipelines of a busy worker), into ``taken`` until ``stop``. The queues
    are ``WakingQueue``s, which tell the stream when their consumer last took an item."""

    def __init__(self, queues: list[WakingQueue], every_s: float, per_tick: int = 1,
                 first_after_s: float | None = None) -> None:
        self.queues = queues
        self._first_after_s = every_s if first_after_s is None else first_after_s
        self.taken: list[list[SourceItem]] = [[] for _ in queues]
        self._stop = threading.Event()
        self._every_s = every_s
        self._per_tick = per_tick
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        wait_s = self._first_after_s
        while not self._stop.wait(wait_s):
            wait_s = self._every_s
            for out, taken in zip(self.queues, self.taken, strict=True):
                for _ in range(self._per_tick):
                    try:
                        taken.append(out.get_nowait())
                    except queue.Empty:
                        break

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def slow_subscribe(registry: StreamRegistry, source: MysqlConfigSpec,
                   start: BinlogPosition) -> tuple[Subscription, WakingQueue]:
    out = WakingQueue(2, Waker())
    sub = registry.open(source.id, source, start, out)
    assert isinstance(sub, Subscription)
    sub.start()
    return sub, out


def rows_taken(items: list[SourceItem]) -> list[Row]:
    return rows_of([e for item in items if isinstance(item, list) for e in item])


@pytest.mark.parametrize(("first_after_s", "every_s", "per_tick", "neighbours"),
                         [(2.5, 2.5, 1, 8), (6.0, 0.2, 9, 0)],
                         ids=["two-of-ten-taking-slowly", "all-taking-nothing-for-6s"])
def test_pipelines_backed_up_together_hold_the_stream_instead_of_detaching(
        mariadb: MariaDBServer, db: str, registry: StreamRegistry, first_after_s: float,
        every_s: float, per_tick: int, neighbours: int) -> None:
    """A worker behind on its pipelines: two of ten take an item only every 2.5 s, longer
    than a lone laggard gets (``ROOM_WAIT_S``), or all take nothing for longer than a stuck
    one may (``CONSUMING_S``: a slow Kafka for the whole worker). Readers of their own would
    parse the same binlog again, so the stream waits for them; every pipeline gets every
    row in order."""
    rows = 3
    start = current_binlog_end(config(mariadb, db, "p-one", ["a"]))
    others = [subscribe(registry, config(mariadb, db, f"p-other{i}", ["a"]), start)[1]
              for i in range(neighbours)]
    _, one = slow_subscribe(registry, config(mariadb, db, "p-one", ["a"]), start)
    _, two = slow_subscribe(registry, config(mariadb, db, "p-two", ["a"]), start)
    consumer = SlowConsumer([one, two], every_s, per_tick, first_after_s)
    written = insert(mariadb, db, "a", range(1, rows + 1))
    try:
        wait_for(lambda: all(len(rows_taken(t)) == rows for t in consumer.taken), timeout_s=30)
    finally:
        consumer.stop()
    stream = only_stream(registry)
    assert [rows_taken(t) for t in consumer.taken] == [written, written]
    for out in others:
        assert take_rows(out, rows) == written
    assert stream.detaches == 0
    assert stream.counts() == {"attached": 2 + neighbours, "waiting": 0, "catching_up": 0}


def test_a_lone_slow_pipeline_detaches_while_the_others_flow(
        mariadb: MariaDBServer, db: str, registry: StreamRegistry) -> None:
    """The same slow pipeline among fast ones is a laggard (a slow sink): it goes to a reader
    of its own after ``ROOM_WAIT_S`` and still gets every row."""
    start = current_binlog_end(config(mariadb, db, "p-slow", ["a"]))
    fast = [subscribe(registry, config(mariadb, db, f"p-fast{i}", ["a"]), start)[1]
            for i in range(4)]
    _, slow = slow_subscribe(registry, config(mariadb, db, "p-slow", ["a"]), start)
    consumer = SlowConsumer([slow], every_s=3.0, per_tick=9)
    try:
        written = insert(mariadb, db, "a", range(1, 5))
        for out in fast:
            assert take_rows(out, 4) == written
        stream = only_stream(registry)
        wait_for(lambda: stream.detaches == 1)
        wait_for(lambda: len(rows_taken(consumer.taken[0])) == 4)
    finally:
        consumer.stop()
    assert rows_taken(consumer.taken[0]) == written


def test_pipelines_join_and_leave_a_live_stream_without_restarting_it(
        mariadb: MariaDBServer, db: str, registry: StreamRegistry) -> None:
    source = config(mariadb, db, "p-first", ["a", "b"])
    behind = current_binlog_end(source)
    first_sub, first = subscribe(registry, source, behind)
    rows = insert(mariadb, db, "a", range(1, 4))
    assert take_rows(first, 3) == rows
    stream = only_stream(registry)

    at_end = current_binlog_end(source)
    _, joiner = subscribe(registry, config(mariadb, db, "p-joiner", ["a"]), at_end)
    _, late = subscribe(registry, config(mariadb, db, "p-behind", ["a"]), behind)
    assert only_stream(registry) is stream
    more = insert(mariadb, db, "a", range(4, 6))
    assert take_rows(first, 2) == more
    assert take_rows(joiner, 2) == more
    assert take_rows(late, 5) == rows + more  # caught up on its own from its older position
    wait_for(lambda: stream.counts() == {"attached": 3, "waiting": 0, "catching_up": 0})

    first_sub.stop()
    last = insert(mariadb, db, "a", range(6, 8)) + insert(mariadb, db, "b", range(1, 2))
    assert take_rows(joiner, 2) == last[:2]
    assert take_rows(late, 2) == last[:2]
    assert_quiet(first, 0.5)
    assert stream.reconnects == 0 and not stream.dead
    assert stream.counts()["attached"] == 2


def test_a_transaction_spanning_tables_keeps_positions_for_each_pipeline(
        mariadb: MariaDBServer, db: str, registry: StreamRegistry) -> None:
    source = config(mariadb, db, "p-tx-a", ["a"])
    start = current_binlog_end(source)
    _, only_a = subscribe(registry, source, start)
    _, both = subscribe(registry, config(mariadb, db, "p-tx-ab", ["a", "b"]), start)
    run(mariadb, "BEGIN", f"INSERT INTO {db}.a VALUES (1, 'x'), (2, 'y')",
        f"INSERT INTO {db}.b VALUES (1, 'z')", f"INSERT INTO {db}.a VALUES (3, 'w')", "COMMIT")
    events_a = take_events(only_a, 3)
    events_ab = take_events(both, 4)
    assert [e.position.row_skip for e in events_a] == [1, 2, 0]
    assert [e.position.row_skip for e in events_ab] == [1, 2, 3, 0]
    assert events_a[-1].tx_end and events_ab[-1].tx_end
    assert events_a[-1].position == events_ab[-1].position  # the same boundary
    assert len({e.tx_id for e in events_a + events_ab}) == 1


def take_events(out: queue.Queue[SourceItem], count: int) -> list[ChangeEvent]:
    events: list[ChangeEvent] = []
    while len(events) < count:
        item = out.get(timeout=30)
        assert not isinstance(item, SourceFailure), item.error
        if isinstance(item, list):
            events.extend(item)
    return events


def test_sharing_off_gives_each_pipeline_a_reader_of_its_own(
        mariadb: MariaDBServer, db: str) -> None:
    registry = StreamRegistry(slot=0, sharing=False)
    source = config(mariadb, db, "p-own", ["a"])
    out: queue.Queue[SourceItem] = queue.Queue()
    reader = registry.open("p-own", source, current_binlog_end(source), out)
    assert not isinstance(reader, Subscription)
    reader.start()
    try:
        rows = insert(mariadb, db, "a", range(1, 3))
        assert take_rows(out, 2) == rows
    finally:
        reader.stop()
    assert not registry.streams


def test_a_fatal_stream_error_reaches_every_pipeline_through_a_reader_of_its_own(
        mariadb: MariaDBServer, db: str, registry: StreamRegistry) -> None:
    good = config(mariadb, db, "p-denied-1", ["a"])
    start = current_binlog_end(good)
    wrong = good.dsn.replace("@", "-wrong@", 1)  # the password
    outs = [subscribe(registry, MysqlConfigSpec(id=name, dsn=wrong, tables=good.tables,
                                                heartbeat_s=1, read_timeout_s=5), start)[1]
            for name in ("p-denied-1", "p-denied-2")]
    for out in outs:
        item = out.get(timeout=60)
        assert isinstance(item, SourceFailure), item
        assert "access denied" in str(item.error)
        assert "-wrong" not in str(item.error)


def test_rows_the_library_decodes_are_counted_for_each_pipeline_of_the_stream(
        mariadb: MariaDBServer, db: str, registry: StreamRegistry) -> None:
    try:  # a DATETIME in the pre-5.6 format: the fast decoder leaves it to the library
        run(mariadb, "SET GLOBAL mysql56_temporal_format = OFF",
            f"CREATE TABLE {db}.old (id INT PRIMARY KEY, at DATETIME)")
    finally:
        run(mariadb, "SET GLOBAL mysql56_temporal_format = ON")
    source = config(mariadb, db, f"fb1-{db}", ["old"])
    start = current_binlog_end(source)
    outs = [subscribe(registry, config(mariadb, db, name, ["old"]), start)[1]
            for name in (f"fb1-{db}", f"fb2-{db}")]
    run(mariadb, f"INSERT INTO {db}.old VALUES (1, '2024-02-29 10:11:12'), (2, NULL)")
    for out in outs:
        assert [e.after for e in take(out, 2)] == [{"id": 1, "at": "2024-02-29 10:11:12"},
                                                   {"id": 2, "at": None}]
    for name in (f"fb1-{db}", f"fb2-{db}"):
        assert REGISTRY.get_sample_value("deltaforge_source_decode_fallback_total",
                                         {"pipeline": name, "reason": "type:DATETIME"}) == 2
