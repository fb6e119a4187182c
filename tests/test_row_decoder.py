"""The fast row decoder against mysql-replication's decoder, on binlogs a real MariaDB wrote.

Hypothesis generates rows of a table with every column type (NULLs, extremes, fractional
seconds, multi-byte and latin1 text, large blobs, JSON documents, GEOMETRY), writes them as
inserts, updates and deletes, and every rows event is decoded both ways: the values must be
identical (same types, same key order) and equal to the documented conversions of what was
written. Then the fallback: what the fast decoder does not read goes to the library, counted.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pymysql
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as tally
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from pymysql.protocol import MysqlPacket
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.constants import FIELD_TYPE
from pymysqlreplication.packet import BinLogPacketWrapper
from pymysqlreplication.row_event import (
    DeleteRowsEvent,
    TableMapEvent,
    UpdateRowsEvent,
    WriteRowsEvent,
)

from deploy.local.mariadb import CDC_PASSWORD, CDC_USER, MariaDBServer
from state.records import BinlogPosition
from state.spec import MysqlConfigSpec
from workers.events import Op
from workers.metrics import count_decode_fallback
from workers.source.connection import json_columns
from workers.source.decode import Images
from workers.source.mysql import current_binlog_end
from workers.source.stream import STREAM_EVENTS, row_images
from workers.source.tablemap import TableShape, TableShapes, library_images
from workers.source.tablemap_cache import CachedTableMapEvent
from workers.source.values import float32

FSPS = range(7)
ENUM_LABELS = ("a", "b", "c")
WIDE_ENUM = tuple(f"e{i}" for i in range(300))  # two-byte ENUM index
SET_LABELS = ("x", "y", "z")
WIDE_SET = tuple(f"s{i}" for i in range(20))  # three-byte SET mask
DECIMALS = {"d1": (10, 4), "d2": (65, 30), "d0": (5, 0), "d3": (18, 9), "d4": (4, 4),
            "d5": (30, 10), "d6": (65, 0)}
BITS = {"b1": 1, "b10": 10, "b17": 17, "b64": 64}
INTS = {
    "ti": (-(2**7), 2**7 - 1), "tu": (0, 2**8 - 1), "si": (-(2**15), 2**15 - 1),
    "su": (0, 2**16 - 1), "mi": (-(2**23), 2**23 - 1), "mu": (0, 2**24 - 1),
    "ii": (-(2**31), 2**31 - 1), "iu": (0, 2**32 - 1), "bi": (-(2**63), 2**63 - 1),
    "bu": (0, 2**64 - 1),
}
INT_TYPES = {"t": "TINYINT", "s": "SMALLINT", "m": "MEDIUMINT", "i": "INT", "b": "BIGINT"}
# MySQL latin1: cp1252 plus the five bytes it leaves undefined as C1 controls.
LATIN1 = "".join(
    bytes([b]).decode("cp1252", "ignore") or chr(b) for b in range(0x20, 0x100) if b != 0x7F
)
ROW_OPS: dict[type, Op] = {WriteRowsEvent: "c", UpdateRowsEvent: "u", DeleteRowsEvent: "d"}
BIG = {size: random.Random(size).randbytes(size) for size in (70_000, 100_000, 250_000)}


def column_ddl() -> str:
    ints = [f"{name} {INT_TYPES[name[0]]}{' UNSIGNED' if name[1] == 'u' else ''}"
            for name in INTS]
    decimals = [f"{name} DECIMAL({p},{s})" for name, (p, s) in DECIMALS.items()]
    temporal = [f"t{n} TIME({n}), dtt{n} DATETIME({n}), ts{n} TIMESTAMP({n}) NULL" for n in FSPS]
    enums = ", ".join(f"'{label}'" for label in ENUM_LABELS)
    wide_enum = ", ".join(f"'{label}'" for label in WIDE_ENUM)
    sets = ", ".join(f"'{label}'" for label in SET_LABELS)
    wide_set = ", ".join(f"'{label}'" for label in WIDE_SET)
    bits = [f"{name} BIT({n})" for name, n in BITS.items()]
    return ", ".join([
        "id INT PRIMARY KEY", "rev INT NOT NULL", *ints, "fl FLOAT", "db DOUBLE", *decimals,
        "dt DATE", *temporal, "yr YEAR",
        "ch CHAR(5) CHARACTER SET utf8mb4", "vc VARCHAR(300) CHARACTER SET utf8mb4",
        "vs VARCHAR(20) CHARACTER SET utf8mb4", "l1 VARCHAR(20) CHARACTER SET latin1",
        "l1c CHAR(10) CHARACTER SET latin1", "l1t TEXT CHARACTER SET latin1",
        "tx TEXT CHARACTER SET utf8mb4", "mt MEDIUMTEXT CHARACTER SET utf8mb4",
        "bn BINARY(4)", "vb VARBINARY(300)", "tb TINYBLOB", "bl LONGBLOB",
        f"en ENUM({enums})", f"en2 ENUM({wide_enum})", f"st SET({sets})", f"st2 SET({wide_set})",
        *bits, "js JSON", "g GEOMETRY",
    ])


# ---- values: (what is written, what the documented conversion gives) ----------------------


@dataclass(frozen=True)
class Cell:
    """A value to write (``param``, bound to ``sql``) and its documented decoded value."""

    param: Any
    expected: Any
    sql: str = "%s"


NULL = Cell(None, None)


def cells(inner: st.SearchStrategy[Cell]) -> st.SearchStrategy[Cell]:
    return st.one_of(st.just(NULL), inner)


def integer(low: int, high: int) -> st.SearchStrategy[Cell]:
    values = st.one_of(st.sampled_from([low, high, 0, -1 if low < 0 else 1]),
                       st.integers(low, high))
    return values.map(lambda v: Cell(v, v))


@st.composite
def decimal_cell(draw: st.DrawFn, precision: int, scale: int) -> Cell:
    whole = draw(st.one_of(st.just(10 ** (precision - scale) - 1),
                           st.integers(0, 10 ** (precision - scale) - 1)))
    part = draw(st.integers(0, 10**scale - 1)) if scale else 0
    sign = "-" if draw(st.booleans()) and (whole or part) else ""
    text = f"{sign}{whole}.{part:0{scale}d}" if scale else f"{sign}{whole}"
    return Cell(text, text)


def float_cell() -> st.SearchStrategy[Cell]:
    floats = st.floats(width=32, allow_nan=False, allow_infinity=False, allow_subnormal=False)
    return floats.map(lambda v: Cell(v, float32(v) + 0.0))  # the server stores -0.0 as 0.0


def double_cell() -> st.SearchStrategy[Cell]:
    floats = st.floats(allow_nan=False, allow_infinity=False, allow_subnormal=False)
    return floats.map(lambda v: Cell(v, v + 0.0))


def digits(fsp: int, micro: int) -> str:
    return f".{micro // 10 ** (6 - fsp):0{fsp}d}" if fsp else ""


@st.composite
def time_cell(draw: st.DrawFn, fsp: int) -> Cell:
    hours = draw(st.integers(0, 838))
    minute, second = draw(st.integers(0, 59)), draw(st.integers(0, 59))
    micro = draw(st.integers(0, 999_999)) // 10 ** (6 - fsp) * 10 ** (6 - fsp)
    if hours == 838:
        minute, second, micro = min(minute, 59), min(second, 58), micro
    negative = draw(st.booleans()) and (hours or minute or second or micro)
    text = f"{'-' if negative else ''}{hours:02d}:{minute:02d}:{second:02d}{digits(fsp, micro)}"
    return Cell(text, text)


@st.composite
def datetime_cell(draw: st.DrawFn, fsp: int) -> Cell:
    if draw(st.integers(0, 9)) == 0:
        return Cell("0000-00-00 00:00:00", None)
    moment = draw(st.datetimes(datetime.datetime(1000, 1, 1), datetime.datetime(9999, 12, 31)))
    micro = moment.microsecond // 10 ** (6 - fsp) * 10 ** (6 - fsp)
    text = moment.strftime("%Y-%m-%d %H:%M:%S") + digits(fsp, micro)
    return Cell(text, text)


@st.composite
def timestamp_cell(draw: st.DrawFn, fsp: int) -> Cell:
    if draw(st.integers(0, 9)) == 0:
        return Cell("0000-00-00 00:00:00", None)
    moment = draw(st.datetimes(datetime.datetime(1970, 1, 1, 0, 0, 1),
                               datetime.datetime(2038, 1, 19, 3, 14, 7)))
    micro = moment.microsecond // 10 ** (6 - fsp) * 10 ** (6 - fsp)
    if moment == datetime.datetime(2038, 1, 19, 3, 14, 7):
        micro = 0
    base = moment.strftime("%Y-%m-%d %H:%M:%S")
    return Cell(base + digits(fsp, micro), base.replace(" ", "T") + digits(fsp, micro) + "Z")


@st.composite
def date_cell(draw: st.DrawFn) -> Cell:
    if draw(st.integers(0, 9)) == 0:
        return Cell("0000-00-00", None)
    day = draw(st.dates(datetime.date(1000, 1, 1), datetime.date(9999, 12, 31))).isoformat()
    return Cell(day, day)


def year_cell() -> st.SearchStrategy[Cell]:
    return st.one_of(st.just(Cell(0, 0)), st.integers(1901, 2155).map(lambda y: Cell(y, y)))


def text_cell(max_size: int, alphabet: str | None = None,
              char: bool = False) -> st.SearchStrategy[Cell]:
    chars = (st.characters(codec="utf-8") if alphabet is None
             else st.sampled_from(alphabet))
    texts = st.text(chars, max_size=max_size)
    return texts.map(lambda t: Cell(t, t.rstrip(" ") if char else t))


def binary_cell(max_size: int, pad_to: int = 0) -> st.SearchStrategy[Cell]:
    values = st.binary(max_size=max_size)
    if pad_to:
        return values.map(lambda b: Cell(b, b.ljust(pad_to, b"\x00")))
    return values.map(lambda b: Cell(b, b))


def blob_cell() -> st.SearchStrategy[Cell]:
    big = st.sampled_from(sorted(BIG)).map(lambda size: Cell(BIG[size], BIG[size]))
    return st.one_of(binary_cell(200), big)


def set_cell(labels: tuple[str, ...]) -> st.SearchStrategy[Cell]:
    chosen = st.sets(st.sampled_from(labels), max_size=len(labels))
    return chosen.map(lambda s: Cell(",".join(s), ",".join(x for x in labels if x in s)))


def bit_cell(bits: int) -> st.SearchStrategy[Cell]:
    return st.integers(0, 2**bits - 1).map(lambda v: Cell(v, v))


JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=30),
)
JSON_DOCS = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=5),
                            st.dictionaries(st.text(max_size=10), inner, max_size=5)),
    max_leaves=20,
)


def json_cell() -> st.SearchStrategy[Cell]:
    large = st.integers(1, 3).map(lambda k: {"blob": "é😀" * 5000 * k, "n": list(range(100))})
    docs = st.one_of(JSON_DOCS, large)
    return docs.map(lambda doc: Cell(json.dumps(doc), json.loads(json.dumps(doc))))


def geometry_cell() -> st.SearchStrategy[Cell]:
    coordinates = st.floats(-1e6, 1e6, allow_nan=False)

    def point(x: float, y: float) -> Cell:
        wkb = struct.pack("<BIdd", 1, 1, x, y)
        return Cell(wkb, b"\x00\x00\x00\x00" + wkb, "ST_GeomFromWKB(%s)")

    return st.builds(point, coordinates, coordinates)


def column_strategies() -> dict[str, st.SearchStrategy[Cell]]:
    found: dict[str, st.SearchStrategy[Cell]] = {
        name: integer(low, high) for name, (low, high) in INTS.items()
    }
    found |= {"fl": float_cell(), "db": double_cell(), "dt": date_cell(), "yr": year_cell()}
    found |= {name: decimal_cell(p, s) for name, (p, s) in DECIMALS.items()}
    for n in FSPS:
        found |= {f"t{n}": time_cell(n), f"dtt{n}": datetime_cell(n), f"ts{n}": timestamp_cell(n)}
    found |= {
        "ch": text_cell(5, char=True), "vc": text_cell(300), "vs": text_cell(20),
        "l1": text_cell(20, LATIN1), "l1c": text_cell(10, LATIN1, char=True),
        "l1t": text_cell(300, LATIN1), "tx": text_cell(300), "mt": text_cell(2000),
        "bn": binary_cell(4, pad_to=4), "vb": binary_cell(300), "tb": binary_cell(255),
        "bl": blob_cell(),
        "en": st.sampled_from(ENUM_LABELS).map(lambda v: Cell(v, v)),
        "en2": st.sampled_from(WIDE_ENUM).map(lambda v: Cell(v, v)),
        "st": set_cell(SET_LABELS), "st2": set_cell(WIDE_SET),
        "js": json_cell(), "g": geometry_cell(),
    }
    found |= {name: bit_cell(n) for name, n in BITS.items()}
    return found


NOT_NULL = column_strategies()
COLUMNS = {name: cells(strategy) for name, strategy in NOT_NULL.items()}


@st.composite
def row_cells(draw: st.DrawFn) -> dict[str, Cell]:
    """A whole row; a third of them without NULLs (the decoder's other code path)."""
    with_nulls = draw(st.integers(0, 2)) > 0
    strategies = COLUMNS if with_nulls else NOT_NULL
    row = {name: draw(strategy) for name, strategy in strategies.items()}
    tally("row with NULLs" if with_nulls else "row without NULLs")
    if len(row["bl"].param or b"") >= 70_000:
        tally("large blob")
    if len(row["js"].param or "") >= 10_000:
        tally("large JSON")
    return row


@st.composite
def change_cells(draw: st.DrawFn) -> dict[str, Cell]:
    names = draw(st.sets(st.sampled_from(sorted(COLUMNS)), min_size=1, max_size=8))
    return {name: draw(COLUMNS[name]) for name in sorted(names)}


@dataclass
class Batch:
    """One hypothesis example: rows inserted, then some updated, then some deleted."""

    inserts: list[dict[str, Cell]]
    updates: list[tuple[int, dict[str, Cell]]]
    deletes: list[int]


@st.composite
def batches(draw: st.DrawFn) -> Batch:
    inserts = draw(st.lists(row_cells(), min_size=1, max_size=8))
    count = len(inserts)
    updated = draw(st.lists(st.integers(0, count - 1), max_size=4, unique=True))
    updates = [(index, draw(change_cells())) for index in updated]
    deletes = draw(st.lists(st.integers(0, count - 1), max_size=3, unique=True))
    tally(f"updates: {bool(updates)}, deletes: {bool(deletes)}")
    return Batch(inserts, updates, deletes)


# ---- writing and reading the binlog --------------------------------------------------------


@dataclass
class Table:
    server: MariaDBServer
    db: str
    conn: pymysql.connections.Connection
    next_id: int = 1
    shapes: TableShapes = field(default_factory=TableShapes)

    def config(self) -> MysqlConfigSpec:
        return MysqlConfigSpec(id=f"test-{self.db}", dsn=self.server.cdc_dsn(),
                               tables=[f"{self.db}.*"])

    def write(self, batch: Batch) -> list[tuple[str, Any, Any]]:
        """Run the batch; the expected (op, before, after) documented images, in order."""
        model: dict[int, dict[str, Any]] = {}
        expected: list[tuple[str, Any, Any]] = []
        with self.conn.cursor() as cur:
            ids = []
            for cells_ in batch.inserts:
                row_id = self.next_id
                self.next_id += 1
                ids.append(row_id)
                full = {"id": Cell(row_id, row_id), "rev": Cell(0, 0), **cells_}
                cur.execute(*insert_sql(self.db, full))
                model[row_id] = {name: cell.expected for name, cell in full.items()}
                expected.append(("c", None, dict(model[row_id])))
            for index, changes in batch.updates:
                row_id = ids[index]
                before = dict(model[row_id])
                changes = {"rev": Cell(before["rev"] + 1, before["rev"] + 1), **changes}
                cur.execute(*update_sql(self.db, row_id, changes))
                model[row_id] |= {name: cell.expected for name, cell in changes.items()}
                expected.append(("u", before, dict(model[row_id])))
            for index in batch.deletes:
                row_id = ids[index]
                cur.execute(f"DELETE FROM {self.db}.t WHERE id = %s", (row_id,))
                expected.append(("d", dict(model.pop(row_id)), None))
        return expected


def insert_sql(db: str, row: dict[str, Cell]) -> tuple[str, list[Any]]:
    names = ", ".join(row)
    marks = ", ".join(cell.sql for cell in row.values())
    return f"INSERT INTO {db}.t ({names}) VALUES ({marks})", [c.param for c in row.values()]


def update_sql(db: str, row_id: int, changes: dict[str, Cell]) -> tuple[str, list[Any]]:
    sets = ", ".join(f"{name} = {cell.sql}" for name, cell in changes.items())
    return (f"UPDATE {db}.t SET {sets} WHERE id = %s",
            [cell.param for cell in changes.values()] + [row_id])


def rows_events(server: MariaDBServer, start: BinlogPosition,
                end: BinlogPosition) -> Iterator[Any]:
    """Every event from ``start`` to ``end`` (the library's objects, rows not read yet)."""
    stream = BinLogStreamReader(
        connection_settings={"host": server.host, "port": server.port, "user": CDC_USER,
                             "passwd": CDC_PASSWORD},
        server_id=4243, log_file=start.file, log_pos=start.pos, resume_stream=True,
        blocking=False, only_events=STREAM_EVENTS, is_mariadb=False,
    )
    try:
        for event in stream:
            yield event
            if (stream.log_file, stream.log_pos) >= (end.file, end.pos):
                return
    finally:
        stream.close()


def both_ways(shapes: TableShapes, server: MariaDBServer, db: str, start: BinlogPosition,
              end: BinlogPosition) -> list[tuple[str, list[Images], list[Images]]]:
    """(op, fast images, library images) of every rows event of ``db``."""
    decoded: list[tuple[str, list[Images], list[Images]]] = []
    for shape, event, op in decoded_events(shapes, server, db, start, end):
        assert shape.decoder is not None, shape.fallback_reason
        fast = shape.decoder.images(event, op)  # first: it checks the library's cursor
        decoded.append((op, fast, library_images(shape, event, op)))
    return decoded


def decoded_events(shapes: TableShapes, server: MariaDBServer, db: str, start: BinlogPosition,
                   end: BinlogPosition) -> list[tuple[TableShape, Any, Op]]:
    """(shape, event, op) of every rows event of ``db``, rows not read yet."""
    found: list[tuple[TableShape, Any, Op]] = []
    shape: TableShape | None = None
    for event in rows_events(server, start, end):
        if isinstance(event, TableMapEvent):
            shape = shapes.shape_of(event) if event.schema == db else None
        elif type(event) in ROW_OPS and shape is not None and event.schema == db:
            found.append((shape, event, ROW_OPS[type(event)]))
    return found


@pytest.fixture(scope="module")
def table(mariadb: MariaDBServer) -> Iterator[Table]:
    db = f"t_rows_{random.Random().randrange(16**8):08x}"
    conn = mariadb.connect()
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {db}")
        cur.execute(f"CREATE TABLE {db}.t ({column_ddl()}) DEFAULT CHARSET=utf8mb4")
        cur.execute("SET time_zone = '+00:00', sql_mode = 'STRICT_ALL_TABLES'")
    ctl = mariadb.connect()
    shapes = TableShapes(lambda schema, name: json_columns(ctl, schema, name))
    yield Table(mariadb, db, conn, shapes=shapes)
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE {db}")
    conn.close()
    ctl.close()


def exact(value: Any) -> str:
    """A comparison key that tells types apart (1 vs 1.0 vs True) and keeps key order."""
    return repr(value)


# ---- the differential test ---------------------------------------------------------------


@settings(max_examples=50, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                  HealthCheck.large_base_example,
                                  HealthCheck.function_scoped_fixture])
@given(batch=batches())
def test_fast_decoder_equals_library_and_documented_values(table: Table, batch: Batch) -> None:
    start = current_binlog_end(table.config())
    expected = table.write(batch)
    end = current_binlog_end(table.config())
    decoded = both_ways(table.shapes, table.server, table.db, start, end)
    rows = [(op, before, after) for op, fast, _ in decoded for before, after in fast]
    assert [exact(r) for _, fast, lib in decoded for r in fast] == \
        [exact(r) for _, fast, lib in decoded for r in lib]
    assert len(rows) == len(expected)
    for (op, before, after), (want_op, want_before, want_after) in zip(rows, expected,
                                                                          strict=True):
        assert op == want_op
        assert_documented(before, want_before)
        assert_documented(after, want_after)
    assert not table.shapes.fallbacks.rows


def assert_documented(actual: dict[str, Any] | None, expected: dict[str, Any] | None) -> None:
    if expected is None:
        assert actual is None
        return
    assert actual is not None
    wrong = {k: (actual[k], v) for k, v in expected.items() if exact(actual[k]) != exact(v)}
    assert not wrong, wrong


# ---- fallback: the library decodes what the fast decoder does not read, counted -------------


def fallback_count(pipeline: str, reason: str) -> float:
    labels = {"pipeline": pipeline, "reason": reason}
    return REGISTRY.get_sample_value("deltaforge_source_decode_fallback_total", labels) or 0.0


@pytest.fixture
def scratch(mariadb: MariaDBServer, unique_name: str) -> Iterator[Table]:
    conn = mariadb.connect()
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {unique_name}")
    yield Table(mariadb, unique_name, conn)
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE {unique_name}")
    conn.close()


def test_unsupported_column_type_goes_to_the_library_and_is_counted(scratch: Table) -> None:
    """MariaDB's pre-5.6 DATETIME format (mysql56_temporal_format=OFF) is not read by the fast
    decoder: its rows come from the library, with the documented values, counted."""
    db, conn = scratch.db, scratch.conn
    with conn.cursor() as cur:
        cur.execute("SET GLOBAL mysql56_temporal_format = OFF")
        try:
            cur.execute(f"CREATE TABLE {db}.t (id INT PRIMARY KEY, at DATETIME, n INT)")
        finally:
            cur.execute("SET GLOBAL mysql56_temporal_format = ON")
        start = current_binlog_end(scratch.config())
        cur.execute(f"INSERT INTO {db}.t VALUES (1, '2024-02-29 10:11:12', 5), (2, NULL, 6)")
        end = current_binlog_end(scratch.config())
    pipeline = f"fallback-{db}"
    shapes = TableShapes(on_fallback=lambda shape, reason, rows:
                         count_decode_fallback(pipeline, reason, rows))
    [(shape, event, op)] = decoded_events(shapes, scratch.server, db, start, end)
    assert shape.decoder is None and shape.fallback_reason == "type:DATETIME"
    images = row_images(event, shape, op, start.file)
    assert images == [(None, {"id": 1, "at": "2024-02-29 10:11:12", "n": 5}),
                      (None, {"id": 2, "at": None, "n": 6})]
    assert shapes.fallbacks.rows == {"type:DATETIME": 2}
    assert fallback_count(pipeline, "type:DATETIME") == 2


def test_minimal_row_image_goes_to_the_library_and_is_counted(scratch: Table) -> None:
    """An update logged with binlog_row_image=MINIMAL has partial images: library path."""
    db, conn = scratch.db, scratch.conn
    with conn.cursor() as cur:
        cur.execute(f"CREATE TABLE {db}.t (id INT PRIMARY KEY, a VARCHAR(10), b INT)")
        cur.execute(f"INSERT INTO {db}.t VALUES (1, 'x', 1)")
        start = current_binlog_end(scratch.config())
        cur.execute("SET SESSION binlog_row_image = 'MINIMAL'")
        cur.execute(f"UPDATE {db}.t SET b = 2 WHERE id = 1")
        cur.execute("SET SESSION binlog_row_image = 'FULL'")
        cur.execute(f"UPDATE {db}.t SET b = 3 WHERE id = 1")
        end = current_binlog_end(scratch.config())
    shapes = TableShapes(on_fallback=lambda shape, reason, rows:
                         count_decode_fallback(f"minimal-{db}", reason, rows))
    (shape, minimal, op), (_, full, _) = decoded_events(shapes, scratch.server, db, start, end)
    assert shape.decoder is not None
    assert row_images(minimal, shape, op, start.file) == [({"id": 1, "a": None, "b": None},
                                                           {"id": None, "a": None, "b": 2})]
    assert row_images(full, shape, op, start.file) == [({"id": 1, "a": "x", "b": 2},
                                                        {"id": 1, "a": "x", "b": 3})]
    assert shapes.fallbacks.rows == {"partial_image": 1}
    assert fallback_count(f"minimal-{db}", "partial_image") == 1


def test_a_decoder_error_goes_to_the_library(scratch: Table) -> None:
    """Bytes the fast decoder trips over are decoded by the library instead (never lost)."""
    db, conn = scratch.db, scratch.conn
    with conn.cursor() as cur:
        cur.execute(f"CREATE TABLE {db}.t (id INT PRIMARY KEY, a VARCHAR(10))")
        start = current_binlog_end(scratch.config())
        cur.execute(f"INSERT INTO {db}.t VALUES (1, 'x'), (2, 'y')")
        end = current_binlog_end(scratch.config())
    shapes = TableShapes()
    [(shape, event, op)] = decoded_events(shapes, scratch.server, db, start, end)
    assert shape.decoder is not None

    def broken(data: bytes, start: int, end: int) -> list[dict[str, Any]]:
        raise IndexError("index out of range")

    broken_shape = dataclasses.replace(
        shape, decoder=dataclasses.replace(shape.decoder, decode_images=broken))
    assert broken_shape.images(event, op) == [(None, {"id": 1, "a": "x"}),
                                              (None, {"id": 2, "a": "y"})]
    assert shapes.fallbacks.rows == {"decode_error": 2}


def test_rows_of_one_event_are_decoded_once_for_every_router(scratch: Table) -> None:
    """A shared stream hands one event object to several pipelines' routers: each table map
    gives every router the server's charsets, and the rows are decoded once."""
    db, conn = scratch.db, scratch.conn
    with conn.cursor() as cur:
        cur.execute(f"CREATE TABLE {db}.t (id INT PRIMARY KEY, a VARCHAR(10) CHARACTER SET latin1)")
        start = current_binlog_end(scratch.config())
        cur.execute(f"INSERT INTO {db}.t VALUES (1, 'café')")
        end = current_binlog_end(scratch.config())
    first, second = TableShapes(), TableShapes()
    shape = other = None
    for event in rows_events(scratch.server, start, end):
        if isinstance(event, TableMapEvent) and event.schema == db:
            shape, other = first.shape_of(event), second.shape_of(event)
        elif type(event) in ROW_OPS and shape is not None and other is not None:
            assert shape.fingerprint == other.fingerprint
            assert [c.get("charset") for c in other.columns] == [None, "cp1252"]
            images = row_images(event, shape, "c", start.file)
            assert row_images(event, other, "c", start.file) is images
            assert images == [(None, {"id": 1, "a": "café"})]


# ---- MySQL layouts MariaDB does not write: v2 rows events with extra data, binary JSON ------


class _Control:
    charset = "utf8mb4"

    def _get_dbms(self) -> str:
        return "mysql"


def _binary_json(value: Any) -> tuple[int, bytes]:
    """(type, bytes) of a value in MySQL's binary JSON (small containers only)."""
    if value is None or isinstance(value, bool):
        return 0x04, bytes([{None: 0, True: 1, False: 2}[value]])
    if isinstance(value, int):
        return (0x05, struct.pack("<h", value)) if -(2**15) <= value < 2**15 else (
            0x09, struct.pack("<q", value))
    if isinstance(value, float):
        return 0x0B, struct.pack("<d", value)
    if isinstance(value, str):
        raw = value.encode()
        assert len(raw) < 128
        return 0x0C, bytes([len(raw)]) + raw
    if isinstance(value, list):
        return 0x02, _small_container([], value)
    return 0x00, _small_container(list(value), list(value.values()))


def _small_container(keys: list[str], values: list[Any]) -> bytes:
    count = len(values)
    header = 4 + 4 * len(keys) + 3 * count
    key_bytes = [k.encode() for k in keys]
    offset = header + sum(len(k) for k in key_bytes)
    key_entries, entries, tail = b"", b"", b""
    position = header
    for key in key_bytes:
        key_entries += struct.pack("<HH", position, len(key))
        position += len(key)
    for value in values:
        kind, data = _binary_json(value)
        if kind in (0x04, 0x05):  # inline in a small container
            entries += bytes([kind]) + data.ljust(2, b"\x00")
        else:
            entries += bytes([kind]) + struct.pack("<H", offset + len(tail))
            tail += data
    body = key_entries + entries + b"".join(key_bytes) + tail
    return struct.pack("<HH", count, 4 + len(body)) + body


def _packet(event_type: int, body: bytes) -> MysqlPacket:
    body += b"\x00" * 4  # the checksum's place
    header = struct.pack("<cIBIIIH", b"\0", 1700000000, event_type, 1, 19 + len(body), 4, 0)
    return MysqlPacket(header + body, "utf8")


def _event(table_map: dict[int, Any], event_type: int, body: bytes) -> Any:
    allowed = frozenset([CachedTableMapEvent, *ROW_OPS])  # what our readers ask for
    return BinLogPacketWrapper(_packet(event_type, body), table_map, _Control(), (8, 0, 36), True,
                               allowed, None, None, None, None, False, False, False, True, False,
                               False, None).event


def _table_map_body(table_id: int) -> bytes:
    types = bytes([FIELD_TYPE.LONG, FIELD_TYPE.JSON, FIELD_TYPE.VARCHAR])
    metadata = bytes([4]) + struct.pack("<H", 400)  # JSON length bytes, VARCHAR max length
    names = b"".join(bytes([len(n)]) + n for n in (b"id", b"doc", b"name"))
    optional = (bytes([1, 1, 0x00])  # signedness: the INT is signed
                + bytes([2, 1, 45])  # default charset utf8mb4_general_ci
                + bytes([4, len(names)]) + names)
    return (struct.pack("<Q", table_id)[:6] + b"\x00\x00" + b"\x02db\x00" + b"\x01t\x00"
            + bytes([3]) + types + bytes([len(metadata)]) + metadata + b"\x06" + optional)


def _row(row_id: int, doc: Any, name: str | None) -> bytes:
    kind, data = _binary_json(doc)
    value = bytes([kind]) + data
    cells = struct.pack("<i", row_id) + struct.pack("<I", len(value)) + value
    if name is not None:
        cells += struct.pack("<H", len(name.encode())) + name.encode()
    return bytes([0 if name is not None else 0b100]) + cells


DOCS = [{"a": [1, 2.5, "x"], "b": None, "c": {"d": True, "é": "😀"}}, [], 7, -40000, "text",
        {"n": -(2**40), "f": False}]


@pytest.mark.parametrize("extra", [b"", b"\x01\x07\x00"], ids=["plain", "partition info"])
def test_v2_rows_event_with_binary_json_equals_the_library(extra: bytes) -> None:
    table_map: dict[int, Any] = {}
    table_event = _event(table_map, 0x13, _table_map_body(77))
    rows = b"".join(_row(i, doc, None if i % 3 == 2 else f"n{i}é") for i, doc in enumerate(DOCS))
    body = (struct.pack("<Q", 77)[:6] + b"\x01\x00" + struct.pack("<H", 2 + len(extra)) + extra
            + b"\x03\x07" + rows)
    rows_event = _event(table_map, 0x1E, body)  # WRITE_ROWS_EVENT_V2
    shape = TableShapes().shape_of(table_event)
    assert shape.decoder is not None, shape.fallback_reason
    fast = shape.decoder.images(rows_event, "c")
    assert exact(fast) == exact(library_images(shape, rows_event, "c"))
    assert [after for _, after in fast] == [
        {"id": i, "doc": doc, "name": None if i % 3 == 2 else f"n{i}é"}
        for i, doc in enumerate(DOCS)]
