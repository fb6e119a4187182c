"""KafkaSink against a real broker: topic per table, primary-key keys, order, outcomes, failures."""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections import defaultdict
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from state.records import BinlogPosition
from state.spec import KafkaConfigSpec, NativeEnvelopeSpec
from workers.envelopes import build_encoder
from workers.events import ChangeEvent
from workers.sinks.batches import BatchOutcome
from workers.sinks.errors import SinkEventError, SinkUnavailableError
from workers.sinks.kafka import KafkaSink

PARTITIONS = 3


def make_event(table: str, row_id: int, version: int, op: str = "u", **changes: Any) -> ChangeEvent:
    after = {"id": row_id, "version": version, "payload": b"\x00\x01"} if op != "d" else None
    before = {"id": row_id, "version": version - 1, "payload": b""} if op != "c" else None
    fields: dict[str, Any] = dict(
        event_id=f"1:bin.000001:{row_id * 1000 + version}:0", op=op, db="shop", table=table,
        before=before, after=after, primary_key=("id",), ts_ms=1700000000000 + version,
        server_id=1, file="bin.000001", pos=row_id * 1000 + version, gtid=None, tx_id=None,
        position=BinlogPosition("bin.000001", row_id * 1000 + version), tx_end=True,
        size_bytes=50,
    )
    fields.update(changes)
    return ChangeEvent(**fields)


def spec(brokers: str, topic: str, **changes: Any) -> KafkaConfigSpec:
    return KafkaConfigSpec(id="primary", brokers=brokers, topic=topic, **changes)


def drain(sink: KafkaSink, timeout_s: float) -> list[BatchOutcome]:
    """Poll until no batch is in flight; fail the test after timeout_s."""
    outcomes: list[BatchOutcome] = []
    deadline = time.monotonic() + timeout_s
    while sink.in_flight_batches():
        assert time.monotonic() < deadline, f"batches still in flight after {timeout_s}s"
        sink.poll(0.1)
        outcomes.extend(sink.take_completed())
    return outcomes


def consume(bootstrap: str, topic: str, expected: int, timeout_s: float = 30.0) -> list[Message]:
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"test-{uuid.uuid4().hex}",
        "auto.offset.reset": "earliest", "enable.auto.commit": False,
    })
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    messages: list[Message] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(messages) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                messages.append(message)
    finally:
        consumer.close()
    assert len(messages) == expected, f"{topic}: got {len(messages)} of {expected} messages"
    return messages


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def prefix(kafka: Any) -> str:
    name = f"sinktest{uuid.uuid4().hex[:8]}"
    for table in ("orders", "items"):
        kafka.create_topic(f"{name}.shop.{table}", partitions=PARTITIONS)
    return name


def test_batches_land_per_table_keyed_by_pk_in_order(kafka: Any, prefix: str) -> None:
    topic = prefix + ".${source.db}.${source.table}"
    sink = KafkaSink("orders-db", "acme", spec(kafka.bootstrap, topic))
    events = [make_event(table, row_id, version)
              for version in range(1, 6) for row_id in range(1, 9) for table in ("orders", "items")]
    batches = [events[i:i + 20] for i in range(0, len(events), 20)]
    try:
        for batch_id, batch in enumerate(batches, start=1):
            sink.send_batch(batch_id, batch)
        outcomes = drain(sink, 30.0)
    finally:
        sink.close()

    assert [o.batch_id for o in outcomes] == list(range(1, len(batches) + 1))
    assert [(o.delivered, o.failed, o.error) for o in outcomes] == [(20, 0, None)] * len(batches)
    assert all(o.bytes > 0 and o.latency_s >= 0 for o in outcomes)

    encode = build_encoder(NativeEnvelopeSpec(), "orders-db", "acme")
    for table in ("orders", "items"):
        sent = [e for e in events if e.table == table]
        messages = consume(kafka.bootstrap, f"{prefix}.shop.{table}", len(sent))
        by_key: dict[bytes, list[Message]] = defaultdict(list)
        for message in sorted(messages, key=lambda m: (m.partition(), m.offset())):
            by_key[message.key()].append(message)
        assert set(by_key) == {str(row_id).encode() for row_id in range(1, 9)}
        assert len({m.partition() for m in messages}) > 1, "keys spread over partitions"
        for key, keyed in by_key.items():
            assert len({m.partition() for m in keyed}) == 1, "one row stays in one partition"
            expected = [encode(e) for e in sent if str(e.after["id"]).encode() == key]  # type: ignore[index]
            assert [m.value() for m in keyed] == expected, "values in send order"
        document = json.loads(messages[0].value())
        assert document["source"]["table"] == table and document["tenant_id"] == "acme"


def test_backpressure_when_local_queue_is_full(kafka: Any, prefix: str) -> None:
    conf = {"queue.buffering.max.messages": 5, "linger.ms": 50}
    sink = KafkaSink("p", "t", spec(kafka.bootstrap, f"{prefix}.shop.orders", client_conf=conf))
    events = [make_event("orders", row_id, 1) for row_id in range(200)]
    try:
        sink.send_batch(1, events)
        outcomes = drain(sink, 30.0)
        assert sink.flush(5.0)
    finally:
        sink.close()
    assert [(o.batch_id, o.delivered, o.failed) for o in outcomes] == [(1, 200, 0)]


def test_routing_error_rejects_one_event_and_keeps_those_before(kafka: Any, prefix: str) -> None:
    sink = KafkaSink("p", "t", spec(kafka.bootstrap, prefix + ".shop.${after.target}"))
    good = make_event("orders", 1, 1, after={"id": 1, "target": "orders"})
    bad = make_event("orders", 2, 1, op="d")
    try:
        with pytest.raises(SinkEventError) as caught:
            sink.send_batch(7, [good, bad, good])
        outcomes = drain(sink, 30.0)
    finally:
        sink.close()
    assert caught.value.kind == "routing error" and caught.value.index == 1
    assert caught.value.event is bad and "after.target" in caught.value.message
    assert [(o.batch_id, o.delivered, o.failed) for o in outcomes] == [(7, 1, 0)]


def test_unreachable_broker_fails_the_batch_within_send_timeout() -> None:
    brokers = f"127.0.0.1:{free_port()}"
    sink = KafkaSink("p", "t", spec(brokers, "never", send_timeout_secs=2))
    started = time.monotonic()
    try:
        sink.send_batch(1, [make_event("orders", 1, 1), make_event("orders", 2, 1)])
        outcomes = drain(sink, 10.0)
        with pytest.raises(SinkUnavailableError, match=brokers):
            sink.check_connection(1.0)
    finally:
        sink.close()
    assert time.monotonic() - started < 8.0
    [outcome] = outcomes
    assert (outcome.delivered, outcome.failed) == (0, 2)
    assert outcome.error is not None and "timed out" in outcome.error


def test_message_too_large_is_an_event_error() -> None:
    conf = {"message.max.bytes": 1000}
    sink = KafkaSink("p", "t", spec(f"127.0.0.1:{free_port()}", "big", client_conf=conf))
    big = make_event("orders", 1, 1, after={"id": 1, "blob": b"x" * 5000})
    try:
        with pytest.raises(SinkEventError) as caught:
            sink.send_batch(1, [big])
        [outcome] = sink.take_completed()
    finally:
        sink.close()
    assert caught.value.kind == "serialization error"
    assert "too large" in caught.value.message.lower()
    assert (outcome.batch_id, outcome.delivered, outcome.failed) == (1, 0, 0)


def test_serialization_error_is_an_event_error() -> None:
    sink = KafkaSink("p", "t", spec(f"127.0.0.1:{free_port()}", "x"))
    try:
        with pytest.raises(SinkEventError) as caught:
            sink.send_batch(1, [make_event("orders", 1, 1, after={"id": 1, "x": object()})])
        [outcome] = sink.take_completed()
    finally:
        sink.close()
    assert caught.value.kind == "serialization error"
    assert (outcome.batch_id, outcome.delivered, outcome.failed) == (1, 0, 0)
    assert sink.in_flight_batches() == 0
