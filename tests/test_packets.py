"""The fast event builders against mysql-replication's own, on a binlog a real MariaDB wrote.

Every packet of a mixed workload (inserts, updates and deletes of one and many rows, several
tables and schemas, a table of 300 columns, DDL, explicit transactions) is built twice: by the
library's ``BinLogPacketWrapper`` and by ``wrap_packet``. The wrappers, the events (every
attribute, row images included, read by the library's own decoder) and where each leaves the
packet's cursor must be the same; and most packets must really have taken the fast path.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from pymysql.protocol import MysqlPacket
from pymysqlreplication import BinLogStreamReader, binlogstream
from pymysqlreplication.constants import BINLOG
from pymysqlreplication.event import FormatDescriptionEvent, RotateEvent
from pymysqlreplication.packet import BinLogPacketWrapper
from pymysqlreplication.row_event import RowsEvent, TableMapEvent

from deploy.local.mariadb import CDC_PASSWORD, CDC_USER, MariaDBServer
from state.spec import MysqlConfigSpec
from workers.source import packets
from workers.source.mysql import current_binlog_end
from workers.source.stream import STREAM_EVENTS

WIDE_COLUMNS = 300  # the column count takes three bytes in rows events
ALLOWED = frozenset([*STREAM_EVENTS, FormatDescriptionEvent, TableMapEvent, RotateEvent])
LIBRARY_ALLOWED = ALLOWED - {packets.Xid, packets.MariadbGtid}  # a reader asking for no slim one
HEADER_FIELDS = ("timestamp", "event_type", "server_id", "event_size", "log_pos", "flags")
FAST_TYPES = {BINLOG.XID_EVENT, BINLOG.MARIADB_GTID_EVENT, BINLOG.TABLE_MAP_EVENT,
              BINLOG.WRITE_ROWS_EVENT_V1, BINLOG.UPDATE_ROWS_EVENT_V1,
              BINLOG.DELETE_ROWS_EVENT_V1}


class Captured:
    def __init__(self, stream: BinLogStreamReader, packets: list[bytes]) -> None:
        self.packets = packets
        self.use_checksum = stream._BinLogStreamReader__use_checksum
        self.post_header_lengths = stream._BinLogStreamReader__post_header_lengths
        self.mysql_version = stream.mysql_version


class Control:
    """What building an event asks of the control connection."""

    charset = "utf8mb4"

    def _get_dbms(self) -> str:
        return "mariadb"


@pytest.fixture(scope="module")
def captured(mariadb: MariaDBServer) -> Captured:
    wide = ", ".join(f"c{i} TINYINT" for i in range(WIDE_COLUMNS))
    mariadb.execute(
        "CREATE DATABASE pk_a", "CREATE DATABASE pk_b",
        "CREATE TABLE pk_a.items (id INT PRIMARY KEY, name VARCHAR(40), qty INT)",
        "CREATE TABLE pk_a.nokey (note TEXT, at DATETIME(3))",
        f"CREATE TABLE pk_a.wide (id INT PRIMARY KEY, {wide})",
        "CREATE TABLE pk_b.other (id INT PRIMARY KEY, v DOUBLE)",
    )
    config = MysqlConfigSpec(id="packets", dsn=mariadb.cdc_dsn("pk_a"), tables=["pk_a.*"])
    start = current_binlog_end(config)
    statements = []
    for i in range(6):
        statements += [
            f"INSERT INTO pk_a.items VALUES ({i}, 'item {i}', {i * 3})",
            f"INSERT INTO pk_b.other VALUES ({i}, {i / 7})",
            f"INSERT INTO pk_a.nokey VALUES ('note {i}', NOW(3))",
            f"INSERT INTO pk_a.wide (id, c0, c299) VALUES ({i}, {i}, -{i})",
        ]
    statements += [
        "INSERT INTO pk_a.items VALUES (10, 'a', 1), (11, 'b', 2), (12, NULL, NULL)",
        "UPDATE pk_a.items SET qty = qty + 1",
        "UPDATE pk_a.wide SET c150 = 7 WHERE id < 3",
        "BEGIN", "INSERT INTO pk_a.items VALUES (20, 'tx', 0)",
        "UPDATE pk_b.other SET v = -v", "DELETE FROM pk_a.nokey", "COMMIT",
        "ALTER TABLE pk_a.items ADD COLUMN extra VARCHAR(10) DEFAULT 'x'",
        "INSERT INTO pk_a.items VALUES (30, 'after ddl', 5, 'y')",
        "DELETE FROM pk_a.items WHERE id >= 10",
        "DELETE FROM pk_a.wide",
    ]
    mariadb.execute(*statements)
    end = current_binlog_end(config)
    return capture(mariadb, start.file, start.pos, (end.file, end.pos))


def capture(mariadb: MariaDBServer, file: str, pos: int, end: tuple[str, int]) -> Captured:
    stream = BinLogStreamReader(
        connection_settings={"host": mariadb.host, "port": mariadb.port, "user": CDC_USER,
                             "password": CDC_PASSWORD},
        server_id=4245, log_file=file, log_pos=pos, resume_stream=True, blocking=False,
        is_mariadb=False,
    )
    installed = binlogstream.BinLogPacketWrapper
    raw: list[bytes] = []

    def spy(pkt: Any, *args: Any) -> Any:
        raw.append(bytes(pkt._data))
        return installed(pkt, *args)

    binlogstream.BinLogPacketWrapper = spy
    try:
        for _event in stream:
            if (stream.log_file, stream.log_pos) >= end:
                break
        return Captured(stream, raw)
    finally:
        binlogstream.BinLogPacketWrapper = installed
        stream.close()


def build_all(build: Any, captured: Captured, only_schemas: list[str] | None,
              allowed: frozenset[type]) -> list[tuple[Any, ...]]:
    """Each packet built as ``fetchone`` would, summarised for comparison."""
    table_map: dict[int, Any] = {}
    control = Control()
    out = []
    for data in captured.packets:
        pkt = MysqlPacket(data, "utf8")
        wrapper = build(pkt, table_map, control, captured.mysql_version, captured.use_checksum,
                        allowed, None, None, only_schemas, None, False, False, False, True,
                        False, False, captured.post_header_lengths)
        event = wrapper.event
        if wrapper.event_type == BINLOG.TABLE_MAP_EVENT and event is not None:
            table_map[event.table_id] = event.get_table()
        rows = event.rows if isinstance(event, RowsEvent) else None
        out.append((type(event), attributes(wrapper), attributes(event), pkt._position, rows))
    return out


def attributes(obj: Any) -> dict[str, Any] | None:
    """An object's attributes; those that are library objects by their own attributes."""
    if obj is None:
        return None
    skip = {"event", "table_map", "_ctl_connection", "memo"}
    fields = vars(obj) if hasattr(obj, "__dict__") else {
        name: getattr(obj, name) for name in type(obj).__slots__}
    return {k: attributes(v) if _is_library(v) else v
            for k, v in fields.items() if k not in skip}


def _is_library(value: Any) -> bool:
    module = type(value).__module__
    return module.startswith(("pymysqlreplication", "pymysql.protocol", "workers.source"))


@pytest.mark.parametrize(("only_schemas", "allowed"), [
    (None, LIBRARY_ALLOWED),
    (["pk_a"], LIBRARY_ALLOWED),
    (None, frozenset([FormatDescriptionEvent, TableMapEvent, RotateEvent])),
], ids=["all", "one-schema", "rows-not-asked-for"])
def test_fast_events_equal_the_librarys(captured: Captured, only_schemas: list[str] | None,
                                        allowed: frozenset[type],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    kinds = Counter(data[5] for data in captured.packets)
    assert kinds[BINLOG.WRITE_ROWS_EVENT_V1] >= 20 and kinds[BINLOG.UPDATE_ROWS_EVENT_V1] >= 3
    assert kinds[BINLOG.DELETE_ROWS_EVENT_V1] >= 3 and kinds[BINLOG.QUERY_EVENT] >= 1

    library = build_all(BinLogPacketWrapper, captured, only_schemas, allowed)
    by_library: Counter[int] = Counter()

    def counted(pkt: Any, *args: Any) -> Any:
        by_library[pkt._data[5]] += 1
        return BinLogPacketWrapper(pkt, *args)

    monkeypatch.setattr(packets, "library_wrapper", counted)
    fast = build_all(packets.wrap_packet, captured, only_schemas, allowed)

    assert len(fast) == len(library)
    for index, (ours, theirs) in enumerate(zip(fast, library, strict=True)):
        assert ours == theirs, f"packet {index} (type {captured.packets[index][5]})"
    assert not set(by_library) & FAST_TYPES - {BINLOG.TABLE_MAP_EVENT}, by_library
    # A table map body is parsed by the library the first time only (one per table version).
    assert by_library[BINLOG.TABLE_MAP_EVENT] <= 5
    fast_built = sum(kinds[k] for k in FAST_TYPES) - by_library[BINLOG.TABLE_MAP_EVENT]
    assert fast_built > 0.9 * sum(kinds[k] for k in FAST_TYPES)


def test_slim_commits_and_gtids_carry_what_the_librarys_do(captured: Captured) -> None:
    """Asked for ``Xid`` and ``MariadbGtid``, XID and GTID packets come as those: the header
    fields and the GTID text are the library's; every other event is still the library's
    own, attribute for attribute."""
    library = build_all(BinLogPacketWrapper, captured, None, ALLOWED)
    fast = build_all(packets.wrap_packet, captured, None, ALLOWED)
    slim: Counter[int] = Counter()
    for index, (ours, theirs) in enumerate(zip(fast, library, strict=True)):
        kind = captured.packets[index][5]
        if kind not in (BINLOG.XID_EVENT, BINLOG.MARIADB_GTID_EVENT):
            assert ours == theirs, f"packet {index} (type {kind})"
            continue
        event_class, header, event, _, _ = ours
        _, library_header, library_event, _, _ = theirs
        assert event_class is {BINLOG.XID_EVENT: packets.Xid,
                               BINLOG.MARIADB_GTID_EVENT: packets.MariadbGtid}[kind]
        assert header is not None and library_header is not None and event is not None
        assert {k: header[k] for k in HEADER_FIELDS} == {
            k: library_header[k] for k in HEADER_FIELDS}, f"packet {index}"
        assert event["timestamp"] == library_event["timestamp"]
        if kind == BINLOG.MARIADB_GTID_EVENT:
            assert event["gtid"] == library_event["gtid"]
        slim[kind] += 1
    assert slim[BINLOG.XID_EVENT] >= 20 and slim[BINLOG.MARIADB_GTID_EVENT] >= 25


def test_the_stream_reader_builds_through_the_fast_path() -> None:
    assert binlogstream.BinLogPacketWrapper is packets.wrap_packet
