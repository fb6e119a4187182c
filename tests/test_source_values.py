"""Exact values through the real binlog: every column type, read back by BinlogReader."""

from __future__ import annotations

import datetime
import os
import queue
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from deploy.local.mariadb import MariaDBServer
from state.records import BinlogPosition
from state.spec import MysqlConfigSpec
from tests.support.source import take
from workers.source.items import SourceItem
from workers.source.mysql import BinlogReader, current_binlog_end
from workers.source.values import (
    decode_mysql_latin1,
    fix_negative_time_us,
    float32,
    parse_json_text,
    time_converter,
)

FSPS = range(7)
BIG_BLOB = os.urandom(200_000)
JSON_DOC = {"a": [1, 2.5, "x"], "b": None, "c": {"d": True, "é": "😀"}}


def source_config(mariadb: MariaDBServer, db: str) -> MysqlConfigSpec:
    return MysqlConfigSpec(
        id=f"test-{db}", dsn=mariadb.cdc_dsn(), tables=[f"{db}.*"], heartbeat_s=1, read_timeout_s=5
    )


@contextmanager
def reading(config: MysqlConfigSpec, start: BinlogPosition) -> Iterator[queue.Queue[SourceItem]]:
    out: queue.Queue[SourceItem] = queue.Queue(maxsize=1000)
    reader = BinlogReader("values", config, start, out)
    reader.start()
    try:
        yield out
    finally:
        reader.stop()


def column_ddl() -> str:
    temporal = [f"t{n} TIME({n}), dtt{n} DATETIME({n}), ts{n} TIMESTAMP({n}) NULL" for n in FSPS]
    return f"""
        id INT PRIMARY KEY,
        ti TINYINT, tu TINYINT UNSIGNED, si SMALLINT, su SMALLINT UNSIGNED,
        mi MEDIUMINT, mu MEDIUMINT UNSIGNED, ii INT, iu INT UNSIGNED,
        bi BIGINT, bu BIGINT UNSIGNED,
        d1 DECIMAL(10,4), d2 DECIMAL(65,30), d0 DECIMAL(5,0),
        fl FLOAT, db DOUBLE, dt DATE, {", ".join(temporal)}, yr YEAR,
        ch CHAR(5) CHARACTER SET utf8mb4, vc VARCHAR(50) CHARACTER SET utf8mb4,
        l1 VARCHAR(20) CHARACTER SET latin1, l1t TEXT CHARACTER SET latin1,
        tx TEXT CHARACTER SET utf8mb4, bn BINARY(4), vb VARBINARY(10), bl LONGBLOB,
        en ENUM('a','b','c'), st SET('x','y','z'), bt BIT(10), b1 BIT(1), b64 BIT(64), js JSON
    """


def digits(n: int) -> str:
    return "123456"[:n]


def dot(n: int) -> str:
    return f".{digits(n)}" if n else ""


def high_row() -> tuple[dict[str, Any], dict[str, Any]]:
    """(values to insert, expected values) with maximum values and positive temporals."""
    ints = {
        "ti": 127,
        "tu": 255,
        "si": 32767,
        "su": 65535,
        "mi": 8388607,
        "mu": 16777215,
        "ii": 2147483647,
        "iu": 4294967295,
        "bi": 9223372036854775807,
        "bu": 18446744073709551615,
    }
    insert: dict[str, Any] = {"id": 1, **ints, "d1": "123456.7890", "d2": "1.5", "d0": "99999"}
    expect: dict[str, Any] = {
        "id": 1,
        **ints,
        "d1": "123456.7890",
        "d2": "1.500000000000000000000000000000",
        "d0": "99999",
    }
    insert |= {"fl": 1.1, "db": 2.2, "dt": "2024-02-29", "yr": 2155}
    expect |= {"fl": 1.1, "db": 2.2, "dt": "2024-02-29", "yr": 2155}
    for n in FSPS:
        insert |= {
            f"t{n}": f"838:59:58{dot(n)}",
            f"dtt{n}": f"9999-12-31 23:59:58{dot(n)}",
            f"ts{n}": f"2038-01-19 03:14:06{dot(n)}",
        }
        expect |= {
            f"t{n}": f"838:59:58{dot(n)}",
            f"dtt{n}": f"9999-12-31 23:59:58{dot(n)}",
            f"ts{n}": f"2038-01-19T03:14:06{dot(n)}Z",
        }
    text = {"ch": "ab", "vc": "héllo 😀 мир", "l1": "café", "l1t": "Ærø ½ €", "tx": "ünïcode ✓"}
    insert |= text | {"bn": b"ab", "vb": b"\x00\xff\x10", "bl": BIG_BLOB, "en": "b", "st": "z,x"}
    expect |= text | {
        "bn": b"ab\x00\x00",
        "vb": b"\x00\xff\x10",
        "bl": BIG_BLOB,
        "en": "b",
        "st": "x,z",
    }
    insert |= {
        "bt": 513,
        "b1": 1,
        "b64": 18446744073709551615,
        "js": '{"a": [1, 2.5, "x"], "b": null, "c": {"d": true, "é": "😀"}}',
    }
    expect |= {"bt": 513, "b1": 1, "b64": 18446744073709551615, "js": JSON_DOC}
    return insert, expect


def low_row() -> tuple[dict[str, Any], dict[str, Any]]:
    """(values to insert, expected values) with minimum values and negative times."""
    ints = {
        "ti": -128,
        "tu": 0,
        "si": -32768,
        "su": 0,
        "mi": -8388608,
        "mu": 0,
        "ii": -2147483648,
        "iu": 0,
        "bi": -9223372036854775808,
        "bu": 0,
    }
    insert: dict[str, Any] = {
        "id": 2,
        **ints,
        "d1": "-1234.5600",
        "d2": "-12345678901234567890.0123456789",
        "d0": "-5",
    }
    expect: dict[str, Any] = {
        "id": 2,
        **ints,
        "d1": "-1234.5600",
        "d2": "-12345678901234567890.012345678900000000000000000000",
        "d0": "-5",
    }
    insert |= {"fl": -0.5, "db": -1e-300, "dt": "1000-01-01", "yr": 1901}
    expect |= {"fl": -0.5, "db": -1e-300, "dt": "1000-01-01", "yr": 1901}
    for n in FSPS:
        insert |= {
            f"t{n}": f"-01:02:03{dot(n)}",
            f"dtt{n}": f"1000-01-01 00:00:00{dot(n)}",
            f"ts{n}": f"1970-01-01 00:00:01{dot(n)}",
        }
        expect |= {
            f"t{n}": f"-01:02:03{dot(n)}",
            f"dtt{n}": f"1000-01-01 00:00:00{dot(n)}",
            f"ts{n}": f"1970-01-01T00:00:01{dot(n)}Z",
        }
    text = {"ch": "", "vc": "", "l1": b"ca\x81\x8de", "l1t": "", "tx": ""}
    insert |= text | {"bn": b"\x00\x00\x00\x01", "vb": b"", "bl": b"", "en": "a", "st": ""}
    expect |= text | {
        "l1": "ca\x81\x8de",
        "bn": b"\x00\x00\x00\x01",
        "vb": b"",
        "bl": b"",
        "en": "a",
        "st": "",
    }
    insert |= {"bt": 0, "b1": 0, "b64": 0, "js": "[]"}
    expect |= {"bt": 0, "b1": 0, "b64": 0, "js": []}
    return insert, expect


def insert_sql(db: str, row: dict[str, Any]) -> tuple[str, list[Any]]:
    names = ", ".join(row)
    marks = ", ".join("%s" for _ in row)
    return f"INSERT INTO {db}.t ({names}) VALUES ({marks})", list(row.values())


@pytest.fixture
def typed_table(mariadb: MariaDBServer, unique_name: str) -> Iterator[str]:
    conn = mariadb.connect()
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {unique_name}")
        cur.execute(f"CREATE TABLE {unique_name}.t ({column_ddl()}) DEFAULT CHARSET=utf8mb4")
    yield unique_name
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE {unique_name}")
    conn.close()


def test_every_type_round_trips_exactly(mariadb: MariaDBServer, typed_table: str) -> None:
    db = typed_table
    config = source_config(mariadb, db)
    start = current_binlog_end(config)
    high_in, high = high_row()
    low_in, low = low_row()
    conn = mariadb.connect()
    with conn.cursor() as cur:
        cur.execute("SET time_zone = '+00:00', sql_mode = ''")
        for row in (high_in, low_in, {"id": 3}):
            cur.execute(*insert_sql(db, row))
        cur.execute(
            f"INSERT INTO {db}.t (id, dt, dtt0, dtt6, ts0, ts3, yr) VALUES "
            "(4, '0000-00-00', '0000-00-00 00:00:00', '0000-00-00 00:00:00', "
            "'0000-00-00 00:00:00', '0000-00-00 00:00:00.000', 0)"
        )
        cur.execute(f"UPDATE {db}.t SET tu = 254, vc = 'ünïcode', st = 'y' WHERE id = 1")
        cur.execute(f"DELETE FROM {db}.t WHERE id = 2")
    conn.close()
    with reading(config, start) as out:
        events = take(out, 6)
    nulls = {name: None for name in high if name != "id"}
    zero = nulls | {"id": 4, "yr": 0}
    assert [(e.op, e.primary_key) for e in events] == [
        ("c", ("id",)),
        ("c", ("id",)),
        ("c", ("id",)),
        ("c", ("id",)),
        ("u", ("id",)),
        ("d", ("id",)),
    ]
    assert_row(events[0].after, high)
    assert_row(events[1].after, low)
    assert_row(events[2].after, nulls | {"id": 3})
    assert_row(events[3].after, zero)
    assert_row(events[4].before, high)
    assert_row(events[4].after, high | {"tu": 254, "vc": "ünïcode", "st": "y"})
    assert_row(events[5].before, low)
    assert events[5].after is None and events[0].before is None


def assert_row(actual: dict[str, Any] | None, expected: dict[str, Any]) -> None:
    assert actual is not None
    assert set(actual) == set(expected)
    wrong = {k: (actual[k], expected[k]) for k in expected if actual[k] != expected[k]}
    assert not wrong, wrong
    for key in ("bu", "tu", "b64"):
        assert type(actual[key]) in (int, type(None)), key


# What the library gets wrong, shown on its own output (the live test above proves the fixes).


def test_float_is_the_shortest_decimal_of_the_float32() -> None:
    assert float32(1.100000023841858) == 1.1
    assert float32(-0.5) == -0.5
    assert float32(3.4028234663852886e38) == 3.4028235e38


def test_negative_fractional_time_is_corrected() -> None:
    # '-01:02:03.456' comes out of the library as -(3724 - 0.456) seconds
    assert fix_negative_time_us(-3_723_544_000) == -3_723_456_000
    assert fix_negative_time_us(-500_000) == -500_000
    assert fix_negative_time_us(-3_723_000_000) == -3_723_000_000
    column = type("Column", (), {"fsp": 3})()
    assert time_converter(column)(datetime.timedelta(seconds=-3723.544)) == "-01:02:03.456"


def test_mysql_latin1_decodes_every_byte() -> None:
    assert decode_mysql_latin1(bytes(range(256)))[0x80:0x82] == "€\x81"
    assert decode_mysql_latin1(b"caf\xe9") == "café"


def test_json_text_that_does_not_parse_stays_text() -> None:
    assert parse_json_text('{"a": 1}') == {"a": 1}
    assert parse_json_text("{not json") == "{not json"
