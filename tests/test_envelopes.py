"""Envelopes write DeltaForge's JSON shapes byte for byte, with exact values."""

from __future__ import annotations

import json
from typing import Any

import pytest

from state.records import BinlogPosition
from state.spec import CloudEventsEnvelopeSpec, DebeziumEnvelopeSpec, NativeEnvelopeSpec
from workers.envelopes import build_encoder, source_version
from workers.events import ChangeEvent

GTID = "3e11fa47-71ca-11e1-9e33-c80aa9429562:23"
ROW = {"id": 1, "name": "Alice", "balance": "12.50", "photo": b"\x00\xff",
       "big": 18446744073709551615, "note": None}


def make_event(**changes: Any) -> ChangeEvent:
    fields: dict[str, Any] = dict(
        event_id="1:mysql-bin.000003:4711:0", op="c", db="shop", table="customers", before=None,
        after=dict(ROW), primary_key=("id",), ts_ms=1700000000123, server_id=1,
        file="mysql-bin.000003", pos=4711, gtid=GTID, tx_id=GTID,
        position=BinlogPosition("mysql-bin.000003", 4711), tx_end=True, size_bytes=100,
    )
    fields.update(changes)
    return ChangeEvent(**fields)


NATIVE_INSERT = (
    '{"before":null,'
    '"after":{"id":1,"name":"Alice","balance":"12.50","photo":"AP8=",'
    '"big":18446744073709551615,"note":null},'
    '"source":{"version":"VERSION","connector":"mysql","name":"orders-db",'
    '"ts_ms":1700000000123,"db":"shop","table":"customers","server_id":1,'
    '"gtid":"3e11fa47-71ca-11e1-9e33-c80aa9429562:23","file":"mysql-bin.000003","pos":4711},'
    '"op":"c","ts_ms":1700000000123,'
    '"transaction":{"id":"3e11fa47-71ca-11e1-9e33-c80aa9429562:23"},'
    '"event_id":"1:mysql-bin.000003:4711:0","tenant_id":"acme","tx_end":true}'
)


def native(event: ChangeEvent) -> bytes:
    return build_encoder(NativeEnvelopeSpec(), "orders-db", "acme")(event)


def test_native_insert_exact_bytes() -> None:
    expected = NATIVE_INSERT.replace("VERSION", source_version())
    assert native(make_event()).decode() == expected


def test_debezium_wraps_native_with_null_schema() -> None:
    encode = build_encoder(DebeziumEnvelopeSpec(), "orders-db", "acme")
    expected = '{"schema":null,"payload":' + NATIVE_INSERT.replace("VERSION", source_version())
    assert encode(make_event()).decode() == expected + "}"


def test_cloudevents_insert_exact_bytes() -> None:
    encode = build_encoder(CloudEventsEnvelopeSpec(type_prefix="com.acme.cdc"), "orders-db", "x")
    assert encode(make_event()).decode() == (
        '{"specversion":"1.0","id":"1:mysql-bin.000003:4711:0",'
        '"source":"deltaforge/orders-db/shop.customers","type":"com.acme.cdc.created",'
        '"time":"2023-11-14T22:13:20.123Z","datacontenttype":"application/json",'
        '"subject":"shop.customers",'
        '"data":{"after":{"id":1,"name":"Alice","balance":"12.50","photo":"AP8=",'
        '"big":18446744073709551615,"note":null},"op":"c"}}'
    )


@pytest.mark.parametrize(("op", "name"), [("c", "created"), ("u", "updated"),
                                          ("d", "deleted"), ("r", "snapshot")])
def test_cloudevents_type_and_images_per_op(op: str, name: str) -> None:
    before = dict(ROW) if op in ("u", "d") else None
    after = dict(ROW) if op != "d" else None
    encode = build_encoder(CloudEventsEnvelopeSpec(type_prefix="p"), "pl", "t")
    document = json.loads(encode(make_event(op=op, before=before, after=after)))
    assert document["type"] == f"p.{name}"
    assert document["data"]["op"] == op
    assert ("before" in document["data"]) == (before is not None)
    assert ("after" in document["data"]) == (after is not None)


def test_cloudevents_time_keeps_milliseconds_across_seconds() -> None:
    encode = build_encoder(CloudEventsEnvelopeSpec(), "pl", "t")
    times = [json.loads(encode(make_event(ts_ms=ts)))["time"]
             for ts in (1700000000999, 1700000001000, 1700000001001, 5)]
    assert times == ["2023-11-14T22:13:20.999Z", "2023-11-14T22:13:21.000Z",
                     "2023-11-14T22:13:21.001Z", "1970-01-01T00:00:00.005Z"]


def test_native_omits_absent_optionals_like_deltaforge() -> None:
    document = json.loads(native(make_event(gtid=None, tx_id=None, tx_end=False)))
    assert "gtid" not in document["source"]
    assert "transaction" not in document
    assert "tx_end" not in document
    assert "snapshot" not in document["source"]


def test_native_delete_keeps_null_after_and_snapshot_marks_reads() -> None:
    delete = json.loads(native(make_event(op="d", before=dict(ROW), after=None)))
    assert delete["after"] is None and delete["before"]["id"] == 1
    read = json.loads(native(make_event(op="r")))
    assert read["source"]["snapshot"] == "true"


def test_values_stay_exact() -> None:
    after = {"u64": 18446744073709551615, "i64": -9223372036854775808, "dec": "99999999999.0001",
             "bin": b"\x00\x01\xfe\xff", "empty": b"", "json": {"a": [1, None]}, "f": 1.5,
             "nothing": None, "text": 'quote " and \\ and \u00e9'}
    document = json.loads(native(make_event(after=after)))
    assert document["after"] == {
        "u64": 18446744073709551615, "i64": -9223372036854775808, "dec": "99999999999.0001",
        "bin": "AAH+/w==", "empty": "", "json": {"a": [1, None]}, "f": 1.5, "nothing": None,
        "text": 'quote " and \\ and \u00e9',
    }


def test_encoding_is_stable_across_calls_and_encoders() -> None:
    event = make_event()
    first = native(event)
    encode = build_encoder(NativeEnvelopeSpec(), "orders-db", "acme")
    assert {encode(event) for _ in range(5)} == {first}
    assert event.after == ROW  # the event is not modified


def test_unencodable_value_raises_type_error() -> None:
    with pytest.raises(TypeError):
        native(make_event(after={"id": 1, "x": object()}))
