"""Positions, resumes, DDL, rotation, filters and failures of BinlogReader against MariaDB."""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from pymysqlreplication import BinLogStreamReader

from deploy.local.mariadb import MariaDBServer
from deploy.local.processes import free_port
from state.records import BinlogPosition
from state.spec import MysqlConfigSpec
from tests.support.source import assert_quiet, run, take
from workers.backoff import Backoff
from workers.events import ChangeEvent
from workers.source.connection import (
    PausingSocketIO,
    connect,
    connection_settings,
    preferred_tls_context,
)
from workers.source.dsn import parse_dsn
from workers.source.errors import (
    SourceAuthError,
    SourceConfigError,
    SourcePositionLostError,
    SourceUnreachableError,
)
from workers.source.items import Progress, SourceFailure, SourceItem
from workers.source.mysql import BinlogReader, current_binlog_end
from workers.source.tablemap_cache import CachedTableMapEvent
from workers.source.tables import TableFilter


def source_config(dsn: str, tables: list[str]) -> MysqlConfigSpec:
    return MysqlConfigSpec(id="positions", dsn=dsn, tables=tables, heartbeat_s=1, read_timeout_s=5)


@contextmanager
def reading(config: MysqlConfigSpec, start: BinlogPosition) -> Iterator[queue.Queue[SourceItem]]:
    out: queue.Queue[SourceItem] = queue.Queue(maxsize=10_000)
    reader = BinlogReader("positions", config, start, out)
    reader.start()
    try:
        yield out
    finally:
        reader.stop()
        assert not reader._thread.is_alive()


def failure(out: queue.Queue[SourceItem], timeout_s: float = 20.0) -> SourceFailure:
    item = out.get(timeout=timeout_s)
    while isinstance(item, Progress):
        item = out.get(timeout=timeout_s)
    assert isinstance(item, SourceFailure), item
    return item


@pytest.fixture
def db(mariadb: MariaDBServer, unique_name: str) -> Iterator[str]:
    conn = mariadb.connect()
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {unique_name}")
        cur.execute(f"CREATE TABLE {unique_name}.t (id INT PRIMARY KEY, v VARCHAR(20))")
    yield unique_name
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE {unique_name}")
    conn.close()


def write_transactions(mariadb: MariaDBServer, db: str) -> None:
    """Rows 1, then 2-5 in one transaction (two statements), then 6, then 7."""
    run(
        mariadb,
        f"INSERT INTO {db}.t VALUES (1, 'a')",
        "BEGIN",
        f"INSERT INTO {db}.t VALUES (2, 'b'), (3, 'c')",
        f"INSERT INTO {db}.t VALUES (4, 'd'), (5, 'e')",
        "COMMIT",
        f"INSERT INTO {db}.t VALUES (6, 'f')",
        f"UPDATE {db}.t SET v = 'g' WHERE id = 6",
    )


def ids(events: list[ChangeEvent]) -> list[Any]:
    return [(e.after or e.before or {}).get("id") for e in events]


def test_positions_mark_boundaries_and_resume_without_duplicates(
    mariadb: MariaDBServer, db: str
) -> None:
    config = source_config(mariadb.cdc_dsn(), [f"{db}.t"])
    start = current_binlog_end(config)
    write_transactions(mariadb, db)
    with reading(config, start) as out:
        first = take(out, 7)
    assert ids(first) == [1, 2, 3, 4, 5, 6, 6]
    assert [e.tx_end for e in first] == [True, False, False, False, True, True, True]
    assert [e.position.row_skip for e in first] == [0, 1, 2, 3, 0, 0, 0]
    boundary = first[0].position
    assert all(e.position.file == boundary.file for e in first[1:4])
    assert {e.position.pos for e in first[1:4]} == {boundary.pos}
    assert len({e.tx_id for e in first}) == 4 and first[1].tx_id == first[4].tx_id
    assert first[4].gtid and first[4].position.gtid_set and "-" in first[4].position.gtid_set
    assert first[0].position.server_id == start.server_id
    for resume_at in (1, 2, 3, 4):  # mid-transaction (row_skip) and boundaries
        with reading(config, first[resume_at].position) as out:
            again = take(out, 6 - resume_at)
            assert_quiet(out, 0.5)
        assert [e.event_id for e in again] == [e.event_id for e in first[resume_at + 1 :]]
        assert [e.position for e in again] == [e.position for e in first[resume_at + 1 :]]


def test_binlog_end_start_reads_only_new_rows(mariadb: MariaDBServer, db: str) -> None:
    config = source_config(mariadb.cdc_dsn(), [f"{db}.*"])
    run(mariadb, f"INSERT INTO {db}.t VALUES (1, 'old')")
    start = current_binlog_end(config)
    with reading(config, start) as out:
        run(mariadb, f"INSERT INTO {db}.t VALUES (2, 'new')")
        events = take(out, 1)
        assert_quiet(out, 1.0)
    assert ids(events) == [2]
    assert events[0].file == start.file and events[0].pos >= start.pos


def test_ddl_changes_columns_mid_stream(mariadb: MariaDBServer, db: str) -> None:
    config = source_config(mariadb.cdc_dsn(), [f"{db}.t"])
    start = current_binlog_end(config)
    run(
        mariadb,
        f"INSERT INTO {db}.t VALUES (1, 'a')",
        f"ALTER TABLE {db}.t ADD COLUMN n INT UNSIGNED DEFAULT 7",
        f"INSERT INTO {db}.t VALUES (2, 'b', 4294967295)",
        f"ALTER TABLE {db}.t RENAME COLUMN v TO label",
        f"INSERT INTO {db}.t VALUES (3, 'c', 3)",
        f"ALTER TABLE {db}.t DROP COLUMN n",
        f"INSERT INTO {db}.t VALUES (4, 'd')",
        f"TRUNCATE TABLE {db}.t",
        f"INSERT INTO {db}.t VALUES (5, 'e')",
    )
    with reading(config, start) as out:
        events = take(out, 5)
    assert [e.after for e in events] == [
        {"id": 1, "v": "a"},
        {"id": 2, "v": "b", "n": 4294967295},
        {"id": 3, "label": "c", "n": 3},
        {"id": 4, "label": "d"},
        {"id": 5, "label": "e"},
    ]
    ddl_boundary = events[1].position  # the ALTER is a boundary: resuming there sees row 2 only
    with reading(config, events[0].position) as out:
        assert ids(take(out, 4)) == [2, 3, 4, 5]
    assert ddl_boundary.row_skip == 0


def test_rotation_in_the_middle(mariadb: MariaDBServer, db: str) -> None:
    config = source_config(mariadb.cdc_dsn(), [f"{db}.t"])
    start = current_binlog_end(config)
    run(
        mariadb,
        f"INSERT INTO {db}.t VALUES (1, 'a')",
        "FLUSH BINARY LOGS",
        f"INSERT INTO {db}.t VALUES (2, 'b')",
    )
    with reading(config, start) as out:
        events = take(out, 2)
    assert events[0].file == start.file
    assert events[1].file != start.file and events[1].position.file == events[1].file
    with reading(config, events[0].position) as out:
        assert [e.event_id for e in take(out, 1)] == [events[1].event_id]


def test_table_filter_patterns(mariadb: MariaDBServer, db: str) -> None:
    run(
        mariadb,
        f"CREATE TABLE {db}.orders_2024 (id INT PRIMARY KEY)",
        f"CREATE TABLE {db}.other (id INT PRIMARY KEY)",
    )
    config = source_config(mariadb.cdc_dsn(), [f"{db}.orders%", f"{db}.t"])
    start = current_binlog_end(config)
    run(
        mariadb,
        f"INSERT INTO {db}.other VALUES (1)",
        f"INSERT INTO {db}.orders_2024 VALUES (2)",
        f"INSERT INTO {db}.t VALUES (3, 'x')",
        "BEGIN",
        f"INSERT INTO {db}.t VALUES (4, 'y')",
        f"INSERT INTO {db}.other VALUES (5)",
        "COMMIT",
    )
    with reading(config, start) as out:
        events = take(out, 3)
        assert_quiet(out, 1.0)
    assert [(e.table, ids([e])[0], e.tx_end) for e in events] == [
        ("orders_2024", 2, True),
        ("t", 3, True),
        ("t", 4, True),
    ]


def test_filter_patterns_unit() -> None:
    tables = TableFilter(["shop.orders%", "crm.*", "app.users"])
    assert tables.matches("shop", "orders_2024") and tables.matches("crm", "anything")
    assert tables.matches("app", "users") and not tables.matches("app", "users2")
    assert not tables.matches("shop", "customers") and tables.schemas == ["app", "crm", "shop"]
    everything = TableFilter([])
    assert everything.matches("x", "y") and not everything.matches("mysql", "user")
    assert everything.schemas is None


def test_bad_password_is_an_auth_failure(mariadb: MariaDBServer) -> None:
    dsn = f"mysql://cdc:wrong@{mariadb.host}:{mariadb.port}/"
    config = source_config(dsn, [])
    with pytest.raises(SourceAuthError, match=f"cdc@127.0.0.1:{mariadb.port}"):
        current_binlog_end(config)
    with reading(config, BinlogPosition("mysql-bin.000001", 4)) as out:
        error = failure(out).error
    assert isinstance(error, SourceAuthError)
    assert "REPLICATION SLAVE" in str(error) and "wrong" not in str(error)


def test_purged_binlog_is_position_lost(mariadb: MariaDBServer, db: str) -> None:
    config = source_config(mariadb.cdc_dsn(), [f"{db}.t"])
    old = current_binlog_end(config)
    run(mariadb, f"INSERT INTO {db}.t VALUES (1, 'a')", "FLUSH BINARY LOGS")
    purge_to(mariadb, current_binlog_end(config).file)
    with reading(config, old) as out:
        error = failure(out).error
    assert isinstance(error, SourcePositionLostError)
    assert "re-snapshot" in str(error)


def purge_to(mariadb: MariaDBServer, newest: str, timeout_s: float = 20.0) -> None:
    """PURGE until it took effect (MariaDB keeps files its binlog checkpoint still needs)."""
    conn = mariadb.connect()
    deadline = time.monotonic() + timeout_s
    with conn.cursor() as cur:
        while True:
            cur.execute(f"PURGE BINARY LOGS TO '{newest}'")
            cur.execute("SHOW BINARY LOGS")
            if cur.fetchone()[0] == newest:
                break
            assert time.monotonic() < deadline, "binlog was not purged"
            time.sleep(0.2)
    conn.close()


def test_unreachable_port() -> None:
    config = source_config(f"mysql://cdc:cdcpw@127.0.0.1:{free_port()}/", [])
    with pytest.raises(SourceUnreachableError, match="127.0.0.1"):
        current_binlog_end(config)


def test_reader_retries_unreachable_and_stops_promptly() -> None:
    config = source_config(f"mysql://cdc:cdcpw@127.0.0.1:{free_port()}/", [])
    out: queue.Queue[SourceItem] = queue.Queue()
    reader = BinlogReader("retry", config, BinlogPosition("mysql-bin.000001", 4), out)
    reader.start()
    time.sleep(1.5)
    started = time.monotonic()
    reader.stop()
    assert time.monotonic() - started < 2.0 and out.empty()


def test_dsn_parsing_and_redaction() -> None:
    dsn = parse_dsn("mysql://cdc:s%40cret@db.example:3307/shop")
    assert (dsn.host, dsn.port, dsn.user, dsn.password, dsn.database) == (
        "db.example",
        3307,
        "cdc",
        "s@cret",
        "shop",
    )
    assert dsn.redacted() == "mysql://cdc:***@db.example:3307/shop"
    assert "s@cret" not in repr(dsn)
    assert parse_dsn("mysql://u@h/").port == 3306
    for bad in ("postgres://u@h/", "mysql://h:1/", "mysql://u@h:99999999/", "mysql://"):
        with pytest.raises(SourceConfigError):
            parse_dsn(bad)


def test_backoff_grows_is_capped_and_resets() -> None:
    backoff = Backoff(initial_s=0.5, max_s=30.0)
    delays = [backoff.next_delay() for _ in range(12)]
    assert 0.4 <= delays[0] <= 0.6 and 0.8 <= delays[1] <= 1.2
    assert max(delays) <= 30.0 and delays[-1] >= 24.0
    backoff.reset_after_success()
    assert backoff.next_delay() <= 0.6


def test_killed_connection_reconnects_without_loss_or_duplicates(
    mariadb: MariaDBServer, db: str
) -> None:
    config = source_config(mariadb.cdc_dsn(), [f"{db}.t"])
    start = current_binlog_end(config)
    out: queue.Queue[SourceItem] = queue.Queue()
    reader = BinlogReader("kill", config, start, out)
    reader.start()
    try:
        run(mariadb, f"INSERT INTO {db}.t VALUES (1, 'a')")
        first = take(out, 1)
        run(mariadb, *[f"KILL {pid}" for pid in dump_threads(mariadb)])
        run(mariadb, f"INSERT INTO {db}.t VALUES (2, 'b')")
        second = take(out, 1)
        assert_quiet(out, 1.0)
    finally:
        reader.stop()
    assert ids(first + second) == [1, 2]
    assert reader.reconnects >= 1


def dump_threads(mariadb: MariaDBServer) -> list[int]:
    conn = mariadb.connect()
    with conn.cursor() as cur:
        cur.execute("SELECT ID FROM information_schema.PROCESSLIST WHERE COMMAND = 'Binlog Dump'")
        found = [int(row[0]) for row in cur.fetchall()]
    conn.close()
    assert found
    return found


# Statements a DDL parser chokes on (the "poison DDL" of other CDC tools) cannot stop us: we
# parse no DDL text; columns come from each table map (binlog_row_metadata=FULL).
ODD_STATEMENTS = [
    "CREATE USER IF NOT EXISTS 'odd'@'%' IDENTIFIED BY 'x'",
    "ALTER USER 'odd'@'%' PASSWORD EXPIRE NEVER",
    "FLUSH TABLES",
    "CREATE PROCEDURE {db}.p() BEGIN SELECT 1; END",
    "CREATE TABLE {db}.part (id INT PRIMARY KEY) PARTITION BY HASH(id) PARTITIONS 3",
    "ALTER TABLE {db}.t ADD COLUMN note JSON DEFAULT NULL, ALGORITHM=INPLACE",
    "CREATE OR REPLACE VIEW {db}.v AS SELECT id FROM {db}.t",
    "DROP USER 'odd'@'%'",
]


def test_odd_ddl_between_rows_neither_stops_nor_corrupts_the_stream(
        mariadb: MariaDBServer, db: str) -> None:
    config = source_config(mariadb.cdc_dsn(), [f"{db}.t", f"{db}.part"])
    start = current_binlog_end(config)
    statements = []
    for index, odd in enumerate(ODD_STATEMENTS):
        statements += [f"INSERT INTO {db}.t (id, v) VALUES ({index}, 'r{index}')",
                       odd.format(db=db)]
    statements.append(f"INSERT INTO {db}.part VALUES (7)")
    run(mariadb, *statements)
    with reading(config, start) as out:
        events = take(out, len(ODD_STATEMENTS) + 1)
    assert ids(events) == [*range(len(ODD_STATEMENTS)), 7]
    after_alter = events[-2].after
    assert after_alter == {"id": len(ODD_STATEMENTS) - 1, "v": f"r{len(ODD_STATEMENTS) - 1}",
                           "note": None}


def test_a_compressed_binlog_fails_loudly_instead_of_missing_rows(
    mariadb: MariaDBServer, db: str
) -> None:
    """mysql-replication drops MariaDB's compressed rows events without a word."""
    config = source_config(mariadb.cdc_dsn(), [f"{db}.t"])
    start = current_binlog_end(config)
    run(mariadb, "SET GLOBAL log_bin_compress = ON")
    try:
        with reading(config, start) as out:
            error = failure(out).error
    finally:
        run(mariadb, "SET GLOBAL log_bin_compress = OFF")
    assert isinstance(error, SourceConfigError)
    assert "log_bin_compress=ON" in str(error) and "turn it off" in str(error)


def test_connections_share_one_tls_context(mariadb: MariaDBServer, db: str) -> None:
    """PyMySQL's default (PREFERRED) TLS mode, with the context built once per process."""
    config = source_config(mariadb.cdc_dsn(), [f"{db}.t"])
    dsn = parse_dsn(config.dsn)
    first, second = connect(config, dsn), connect(config, dsn)
    try:
        assert first.ctx is second.ctx is preferred_tls_context()
        for conn in (first, second):
            with conn.cursor() as cur:
                cur.execute(f"SELECT COUNT(*) FROM {db}.t")
                assert cur.fetchone() == (0,)
    finally:
        first.close()
        second.close()


def test_table_maps_are_parsed_once_per_distinct_body(mariadb: MariaDBServer, db: str) -> None:
    config = source_config(mariadb.cdc_dsn(), [f"{db}.t"])
    start = current_binlog_end(config)
    run(mariadb, f"INSERT INTO {db}.t VALUES (1, 'a')", f"INSERT INTO {db}.t VALUES (2, 'b')",
        f"ALTER TABLE {db}.t ADD COLUMN w INT", f"INSERT INTO {db}.t VALUES (3, 'c', 7)")
    stream = BinLogStreamReader(
        connection_settings=connection_settings(config), server_id=4242, log_file=start.file,
        log_pos=start.pos, resume_stream=True, blocking=False, only_schemas=[db],
        only_events=[CachedTableMapEvent])
    try:
        maps = list(stream)
    finally:
        stream.close()
    assert [type(m) for m in maps] == [CachedTableMapEvent] * 3
    first, again, altered = maps
    assert again.columns is first.columns  # the second parse was skipped
    assert again.memo is first.memo  # what users derive from it is shared as well
    assert again.packet.log_pos > first.packet.log_pos and again.table == "t"
    assert [c.name for c in altered.columns] == ["id", "v", "w"]
    assert altered.columns is not first.columns
    assert altered.memo is not first.memo


def test_a_dump_connection_reads_what_a_burst_brought_in_one_read() -> None:
    """Nothing waiting: the reader waits for the first bytes, then its pause, and one read takes
    everything that arrived meanwhile. Bytes already waiting are read at once. A timeout is the
    socket's, as for ``recv``."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        raw = PausingSocketIO(ours, pause_s=1.0)
        buffer = bytearray(1024)

        def burst() -> None:
            time.sleep(0.2)  # the reader is waiting by then: nothing was there to read at once
            for part in (b"a", b"bb", b"ccc"):
                theirs.sendall(part)
                time.sleep(0.01)

        writer = threading.Thread(target=burst)
        writer.start()
        assert raw.readinto(buffer) == 6  # a plain socket read returns the first part alone
        writer.join()
        theirs.sendall(b"dddd")
        started = time.monotonic()
        assert raw.readinto(buffer) == 4
        assert time.monotonic() - started < 0.5  # no pause when bytes are waiting
        ours.settimeout(0.1)
        with pytest.raises(TimeoutError):
            raw.readinto(buffer)
