"""Decoder alone: mysql-replication's row decoding vs the fast decoder, on the same events.

    python3 -m benchmarks.decoder [--items 20000] [--all-types 5000] [--rounds 5]
                                  [--out benchmarks/results/decoder.json]

Starts a private MariaDB, writes rows into two tables (the drain benchmark's 8-column
``items`` table, inserted and then updated, and ``all_types`` with every column type, about
a tenth of its values NULL) and captures their binlog events as raw packets. Then, round
after round, the packets are parsed into fresh event objects (untimed: the library caches
decoded rows on the event) and decoded both ways, each timed: the library's ``event.rows``
plus our converters (what ``TableShape.images`` falls back to) and ``RowDecoder.images``.
The best round of each counts, in CPU seconds of this process (the machine is shared, so
wall time would mostly measure the neighbours). Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pymysql.protocol import MysqlPacket
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.packet import BinLogPacketWrapper
from pymysqlreplication.row_event import (
    DeleteRowsEvent,
    TableMapEvent,
    UpdateRowsEvent,
    WriteRowsEvent,
)

from benchmarks.dataset import CREATE_TABLE, DATABASE, INSERT, TABLE, item_row
from benchmarks.drain import machine
from deploy.local.mariadb import CDC_PASSWORD, CDC_USER, MariaDBServer
from deploy.local.processes import free_port
from state.records import BinlogPosition
from state.spec import MysqlConfigSpec
from workers.source.decode import Images
from workers.source.mysql import current_binlog_end
from workers.source.tablemap import TableShape, TableShapes, library_images

ROW_EVENTS = {WriteRowsEvent: "c", UpdateRowsEvent: "u", DeleteRowsEvent: "d"}
ALL_TYPES = "all_types"
BATCH_ROWS = 500
Decode = Callable[[TableShape, Any, str], list[Images]]


@dataclass(frozen=True)
class Capture:
    """Raw packets of a binlog range and the stream settings needed to parse them again."""

    packets: list[bytes]
    use_checksum: bool
    post_header_lengths: Any
    mysql_version: tuple[int, ...]


@dataclass(frozen=True)
class Case:
    name: str
    rows: int
    library_s: float
    fast_s: float

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "rows": self.rows,
                "library_rows_per_s": round(self.rows / self.library_s),
                "fast_rows_per_s": round(self.rows / self.fast_s),
                "library_us_per_row": round(self.library_s / self.rows * 1e6, 2),
                "fast_us_per_row": round(self.fast_s / self.rows * 1e6, 2),
                "ratio": round(self.library_s / self.fast_s, 2)}


# ---- the all-types table ---------------------------------------------------------------------

ColumnValue = Callable[[random.Random, int], Any]


def _text(rng: random.Random, size: int, alphabet: str) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randrange(size)))


ALL_TYPE_COLUMNS: list[tuple[str, str, ColumnValue]] = [
    ("ti", "TINYINT", lambda r, i: r.randrange(-128, 128)),
    ("tu", "TINYINT UNSIGNED", lambda r, i: r.randrange(256)),
    ("si", "SMALLINT", lambda r, i: r.randrange(-(2**15), 2**15)),
    ("mi", "MEDIUMINT UNSIGNED", lambda r, i: r.randrange(2**24)),
    ("ii", "INT", lambda r, i: r.randrange(-(2**31), 2**31)),
    ("bu", "BIGINT UNSIGNED", lambda r, i: r.randrange(2**64)),
    ("fl", "FLOAT", lambda r, i: r.uniform(-1e6, 1e6)),
    ("db", "DOUBLE", lambda r, i: r.uniform(-1e12, 1e12)),
    ("d1", "DECIMAL(10,2)", lambda r, i: f"{r.randrange(-10**8, 10**8) / 100:.2f}"),
    ("d2", "DECIMAL(30,10)", lambda r, i: f"{r.randrange(10**19)}.{r.randrange(10**10):010d}"),
    ("dt", "DATE", lambda r, i: (datetime(2000, 1, 1) + timedelta(days=i % 9000)).date()),
    ("tm", "TIME(3)", lambda r, i: f"{r.randrange(-838, 839)}:{r.randrange(60):02d}:30.125"),
    ("dtt", "DATETIME(6)", lambda r, i: datetime(2024, 1, 1) + timedelta(microseconds=i * 7919)),
    ("ts", "TIMESTAMP(3) NULL", lambda r, i: datetime(2024, 1, 1) + timedelta(seconds=i * 3.7)),
    ("yr", "YEAR", lambda r, i: 1901 + i % 255),
    ("ch", "CHAR(8)", lambda r, i: f"c{i % 10_000_000}"),
    ("vc", "VARCHAR(100)", lambda r, i: _text(r, 60, "abcdé😀 xyz")),
    ("l1", "VARCHAR(40) CHARACTER SET latin1", lambda r, i: _text(r, 30, "abcdé€ ")),
    ("tx", "TEXT", lambda r, i: _text(r, 300, "lorem ipsum dolor ")),
    ("bn", "BINARY(16)", lambda r, i: r.randbytes(16)),
    ("vb", "VARBINARY(64)", lambda r, i: r.randbytes(r.randrange(64))),
    ("bl", "BLOB", lambda r, i: r.randbytes(r.randrange(500))),
    ("en", "ENUM('new','paid','shipped')", lambda r, i: ("new", "paid", "shipped")[i % 3]),
    ("st", "SET('a','b','c','d')", lambda r, i: ",".join(r.sample("abcd", r.randrange(5)))),
    ("bt", "BIT(12)", lambda r, i: r.randrange(4096)),
    ("js", "JSON", lambda r, i: json.dumps({"i": i, "tags": ["x", "y"], "ok": True})),
]


def all_types_ddl() -> str:
    columns = ", ".join(f"{name} {kind}" for name, kind, _ in ALL_TYPE_COLUMNS)
    return f"CREATE TABLE {DATABASE}.{ALL_TYPES} (id INT PRIMARY KEY, {columns})"


def all_types_row(rng: random.Random, i: int) -> tuple[Any, ...]:
    values = [None if rng.random() < 0.1 else value(rng, i) for _, _, value in ALL_TYPE_COLUMNS]
    return (i, *values)


def all_types_insert() -> str:
    names = ", ".join(name for name, _, _ in ALL_TYPE_COLUMNS)
    marks = ", ".join("%s" for _ in range(len(ALL_TYPE_COLUMNS) + 1))
    return f"INSERT INTO {DATABASE}.{ALL_TYPES} (id, {names}) VALUES ({marks})"


# ---- writing and capturing -----------------------------------------------------------------


def write_rows(server: MariaDBServer, items: int, all_types: int) -> dict[str, Capture]:
    """Insert (and update) the rows; the captured binlog of each case."""
    config = MysqlConfigSpec(id="bench-decoder", dsn=server.cdc_dsn(DATABASE),
                             tables=[f"{DATABASE}.*"])
    conn = server.connect()
    captures = {}
    rng = random.Random(6)
    with conn.cursor() as cur:
        cur.execute("SET time_zone = '+00:00'")
        cur.execute(f"CREATE DATABASE {DATABASE}")
        cur.execute(CREATE_TABLE)
        cur.execute(all_types_ddl())
        steps: list[tuple[str, Callable[[], None]]] = [
            ("items insert", lambda: batched(cur, INSERT, [item_row(i) for i in range(items)])),
            ("items update", lambda: update_items(cur, items)),
            ("all_types insert", lambda: batched(
                cur, all_types_insert(), [all_types_row(rng, i) for i in range(all_types)])),
        ]
        for name, step in steps:
            start = current_binlog_end(config)
            step()
            captures[name] = capture(server, start, current_binlog_end(config))
    conn.close()
    return captures


def batched(cur: Any, sql: str, rows: list[tuple[Any, ...]]) -> None:
    for first in range(0, len(rows), BATCH_ROWS):
        cur.executemany(sql, rows[first:first + BATCH_ROWS])


def update_items(cur: Any, items: int) -> None:
    for first in range(0, items, BATCH_ROWS):
        cur.execute(f"UPDATE {DATABASE}.{TABLE} SET qty = qty + 1, note = CONCAT(note, '!') "
                    f"WHERE id >= %s AND id < %s", (first, first + BATCH_ROWS))


def capture(server: MariaDBServer, start: BinlogPosition, end: BinlogPosition) -> Capture:
    stream = BinLogStreamReader(
        connection_settings={"host": server.host, "port": server.port, "user": CDC_USER,
                             "password": CDC_PASSWORD},
        server_id=4244, log_file=start.file, log_pos=start.pos, resume_stream=True,
        blocking=False, only_events=[TableMapEvent, *ROW_EVENTS], is_mariadb=False,
    )
    packets = []
    try:
        for event in stream:
            packets.append(bytes(event.packet.packet._data))
            if (stream.log_file, stream.log_pos) >= (end.file, end.pos):
                break
        return Capture(packets, stream._BinLogStreamReader__use_checksum,
                       stream._BinLogStreamReader__post_header_lengths, stream.mysql_version)
    finally:
        stream.close()


# ---- decoding again and again --------------------------------------------------------------


class _Control:
    """What a parsed event asks of the control connection."""

    charset = "utf8mb4"

    def _get_dbms(self) -> str:
        return "mariadb"


def parse(captured: Capture, shapes: TableShapes) -> Iterator[tuple[TableShape, Any, str]]:
    """Fresh event objects from the packets, as the stream makes them, with their shapes."""
    table_map: dict[int, Any] = {}
    by_table_id: dict[int, TableShape] = {}
    allowed = frozenset([TableMapEvent, *ROW_EVENTS])
    for data in captured.packets:
        wrapper = BinLogPacketWrapper(
            MysqlPacket(data, "utf8"), table_map, _Control(), captured.mysql_version,
            captured.use_checksum, allowed, None, None, None, None, False, False, False, True,
            False, False, captured.post_header_lengths,
        )
        event = wrapper.event
        if isinstance(event, TableMapEvent):
            table_map[event.table_id] = event.get_table()
            by_table_id[event.table_id] = shapes.shape_of(event)
        elif event is not None:
            yield by_table_id[event.table_id], event, ROW_EVENTS[type(event)]


def fast_images(shape: TableShape, event: Any, op: str) -> list[Images]:
    assert shape.decoder is not None, shape.fallback_reason
    return shape.decoder.images(event, op)


def timed(work: list[tuple[TableShape, Any, str]], decode: Decode) -> tuple[float, int]:
    gc.collect()
    rows = 0
    started = time.process_time()
    for shape, event, op in work:
        rows += len(decode(shape, event, op))
    return time.process_time() - started, rows


def measure(name: str, captured: Capture, rounds: int) -> Case:
    shapes = TableShapes(lambda schema, table: frozenset({"js"}))
    best = {"library": float("inf"), "fast": float("inf")}
    rows = 0
    for _ in range(rounds):
        for label, decode in (("library", library_images), ("fast", fast_images)):
            seconds, rows = timed(list(parse(captured, shapes)), decode)
            best[label] = min(best[label], seconds)
    check_equal(captured, shapes)
    return Case(name, rows, best["library"], best["fast"])


def check_equal(captured: Capture, shapes: TableShapes) -> None:
    """The benchmark compares equals: both ways give the same images."""
    for (shape, event, op), (_, again, _) in zip(parse(captured, shapes), parse(captured, shapes),
                                                 strict=True):
        if repr(fast_images(shape, event, op)) != repr(library_images(shape, again, op)):
            raise RuntimeError(f"decoders disagree on {shape.schema}.{shape.table}")


# ---- report ----------------------------------------------------------------------------------


def table(cases: list[Case]) -> str:
    lines = [f"{'':<20}{'rows':>8}{'library rows/s':>16}{'fast rows/s':>13}"
             f"{'library us/row':>16}{'fast us/row':>13}{'ratio':>8}"]
    for case in cases:
        j = case.as_json()
        lines.append(f"{case.name:<20}{case.rows:>8}{j['library_rows_per_s']:>16,}"
                     f"{j['fast_rows_per_s']:>13,}{j['library_us_per_row']:>16.2f}"
                     f"{j['fast_us_per_row']:>13.2f}{j['ratio']:>7.1f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m benchmarks.decoder", description=__doc__)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--all-types", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/decoder.json"))
    args = parser.parse_args(argv)
    started_at = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="df-decoder-") as tmp:
        server = MariaDBServer(Path(tmp) / "mariadb", free_port())
        try:
            server.start()
            captures = write_rows(server, args.items, args.all_types)
        finally:
            server.stop()
    cases = [measure(name, captured, args.rounds) for name, captured in captures.items()]
    print(table(cases))
    command = " ".join(["python3 -m benchmarks.decoder", *(sys.argv[1:] if argv is None else argv)])
    report = {"benchmark": "decoder", "date": started_at.isoformat(timespec="seconds"),
              "command": command, "rounds": args.rounds,
              "cases": [case.as_json() for case in cases], "machine": machine(),
              "load_average_1m": round(os.getloadavg()[0], 2), "timing": "process CPU seconds"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
