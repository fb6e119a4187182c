"""The native encoder splices its JSON from parts (the part shared by the rows of one rows
event is encoded once): byte for byte what encoding the ``NativeEvent`` struct gives."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from state.records import BinlogPosition
from state.spec import DebeziumEnvelopeSpec, NativeEnvelopeSpec
from workers.envelopes import _json, build_encoder, native_event, source_version
from workers.events import ChangeEvent

VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.text(max_size=20),
    st.binary(max_size=10), st.floats(allow_nan=False, allow_infinity=False),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.text(), max_size=3),
)
ROWS = st.one_of(st.none(), st.dictionaries(st.text(max_size=10), VALUES, max_size=6))


@st.composite
def change_events(draw: st.DrawFn) -> ChangeEvent:
    gtid = draw(st.one_of(st.none(), st.just("0-1-42"), st.text(max_size=12)))
    return ChangeEvent(
        event_id=draw(st.text(max_size=30)), op=draw(st.sampled_from(["c", "u", "d", "r"])),
        db=draw(st.sampled_from(["shop", "bench", 'we"ird\\'])), table=draw(st.text(max_size=8)),
        before=draw(ROWS), after=draw(ROWS), primary_key=("id",),
        ts_ms=draw(st.sampled_from([0, 1700000000123])), server_id=draw(st.sampled_from([0, 1])),
        file=draw(st.sampled_from(["mysql-bin.000001", "mysql-bin.000002"])),
        pos=draw(st.sampled_from([4, 4711])), gtid=gtid,
        tx_id=draw(st.one_of(st.none(), st.just(gtid), st.just("mysql-bin.000001:4"))),
        position=BinlogPosition("mysql-bin.000001", 4), tx_end=draw(st.booleans()),
        size_bytes=1,
    )


@settings(max_examples=300, deadline=None)
@given(events=st.lists(change_events(), min_size=1, max_size=12),
       tenant=st.sampled_from(["", "acme", 'a"b']))
def test_spliced_native_and_debezium_equal_the_struct_encoding(events: list[ChangeEvent],
                                                               tenant: str) -> None:
    native = build_encoder(NativeEnvelopeSpec(), "orders", tenant)
    debezium = build_encoder(DebeziumEnvelopeSpec(), "orders", tenant)
    version = source_version()
    for event in events:
        expected = _json.encode(native_event(event, "orders", tenant, version))
        assert native(event) == expected
        assert debezium(event) == b'{"schema":null,"payload":' + expected + b"}"


def test_rows_of_one_rows_event_share_their_source_part() -> None:
    encode = build_encoder(NativeEnvelopeSpec(), "orders", "acme")
    base: dict[str, Any] = dict(
        event_id="1:f:9:0", op="c", db="shop", table="t", before=None, after={"id": 1},
        primary_key=("id",), ts_ms=5, server_id=1, file="f", pos=9, gtid=None, tx_id="f:4",
        position=BinlogPosition("f", 4), tx_end=False, size_bytes=1)
    first = encode(ChangeEvent(**base))
    second = encode(ChangeEvent(**(base | {"event_id": "1:f:9:1", "after": {"id": 2}})))
    moved = encode(ChangeEvent(**(base | {"ts_ms": 6})))
    assert b'"source":{' in first and second.replace(b'"id":2', b'"id":1').replace(
        b":9:1", b":9:0") == first
    assert b'"ts_ms":6' in moved
