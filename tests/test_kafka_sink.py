"""KafkaSink against a real broker: topic per table, primary-key keys, order, outcomes, failures,
and sinks of several pipelines sharing one producer."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from deploy.local.kafka import KafkaBroker
from state.records import BinlogPosition
from state.spec import KafkaConfigSpec, NativeEnvelopeSpec
from tests.conftest import running
from tests.support.kafka_read import Record, read_topic
from tests.support.proxy import TcpProxy
from workers.envelopes import build_encoder
from workers.events import ChangeEvent
from workers.sinks.batches import BatchOutcome
from workers.sinks.errors import SinkEventError, SinkUnavailableError
from workers.sinks.kafka import KafkaSink
from workers.sinks.producers import ProducerPool

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
            key = message.key()
            assert key is not None
            by_key[key].append(message)
        assert set(by_key) == {str(row_id).encode() for row_id in range(1, 9)}
        assert len({m.partition() for m in messages}) > 1, "keys spread over partitions"
        for key, keyed in by_key.items():
            assert len({m.partition() for m in keyed}) == 1, "one row stays in one partition"
            expected = [encode(e) for e in sent if str(e.after["id"]).encode() == key]  # type: ignore[index]
            assert [m.value() for m in keyed] == expected, "values in send order"
        document = json.loads(messages[0].value() or b"null")
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


# ---- sinks of several pipelines on one shared producer ------------------------------------


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KafkaBroker, TcpProxy]]:
    """A private broker advertised at a proxy's port, so ``proxy.cut()`` cuts every connection."""
    port = free_port()
    controller_port = next(p for p in iter(free_port, None) if p != port)
    with TcpProxy("127.0.0.1", port) as proxy:
        broker = KafkaBroker(tmp_path_factory.mktemp("kafka-shared"), port, controller_port,
                             advertised_port=proxy.port)
        with running("Kafka (proxied)", broker):
            yield broker, proxy


def drain_through(poller: KafkaSink, sinks: list[KafkaSink],
                  timeout_s: float) -> list[list[BatchOutcome]]:
    """Poll only ``poller`` until no sink has a batch in flight; each sink's outcomes."""
    outcomes: list[list[BatchOutcome]] = [[] for _ in sinks]
    deadline = time.monotonic() + timeout_s
    while any(sink.in_flight_batches() for sink in sinks):
        assert time.monotonic() < deadline, f"batches still in flight after {timeout_s}s"
        poller.poll(0.1)
        for taken, sink in zip(outcomes, sinks, strict=True):
            taken.extend(sink.take_completed())
    return outcomes


def summary(outcomes: list[BatchOutcome]) -> list[tuple[int, int, int]]:
    return [(o.batch_id, o.delivered, o.failed) for o in outcomes]


def event_ids_of(records: list[Record], pipeline: str) -> list[str]:
    """The event ids in ``records``, after checking that ``pipeline`` wrote every one."""
    assert {r.value["source"]["name"] for r in records} == {pipeline}
    return sorted(r.value["event_id"] for r in records)


def ids(events: list[ChangeEvent]) -> list[str]:
    return sorted(e.event_id for e in events)


def client_errors(caplog: pytest.LogCaptureFixture) -> dict[str, list[logging.LogRecord]]:
    """The sinks' ``kafka client error`` log records, by pipeline."""
    found: dict[str, list[logging.LogRecord]] = defaultdict(list)
    for record in caplog.records:
        if record.msg.startswith("kafka client error"):
            found[str(record.args[0])].append(record)  # type: ignore[index]
    return found


def test_pipelines_share_a_producer_and_each_get_their_own_outcomes(
        kafka: Any, prefix: str) -> None:
    """Two pipelines' sinks (different sink ids) on one producer, polled only through one of
    them: each gets exactly its own batches, successes and a broker-side rejection alike; the
    rejection leaves the producer working for both; each topic holds exactly its pipeline's
    events."""
    kafka.create_topic(f"{prefix}.b.items")
    kafka.create_topic(f"{prefix}.b.small", config={"max.message.bytes": "1000"})
    pool = ProducerPool()
    a = KafkaSink("pipe-a", "acme", spec(kafka.bootstrap, f"{prefix}.shop.orders"), pool=pool)
    b = KafkaSink("pipe-b", "beta", KafkaConfigSpec(
        id="audit", brokers=kafka.bootstrap, topic=prefix + ".b.${source.table}"), pool=pool)
    a_events = [make_event("orders", row_id, version)
                for version in (1, 2) for row_id in range(1, 11)]
    b_events = [make_event("items", row_id, version)
                for version in (3, 4) for row_id in range(1, 6)]
    too_big = make_event("small", 1, 3, after={"id": 1, "blob": os.urandom(3000)})
    try:
        assert len(pool) == 1
        a.send_batch(1, a_events[:10])
        b.send_batch(1, b_events[:5])
        a.send_batch(2, a_events[10:15])
        b.send_batch(2, [too_big])
        first = drain_through(a, [a, b], 30.0)
        a.send_batch(3, a_events[15:])
        b.send_batch(3, b_events[5:])
        second = drain_through(b, [a, b], 30.0)
    finally:
        a.close()
        b.close()
    assert len(pool) == 0

    assert summary(first[0] + second[0]) == [(1, 10, 0), (2, 5, 0), (3, 5, 0)]
    assert summary(first[1] + second[1]) == [(1, 5, 0), (2, 0, 1), (3, 5, 0)]
    rejected = first[1][1].error
    assert rejected is not None and "too large" in rejected.lower()
    assert [o.error for o in first[0] + second[0] + second[1]] == [None] * 4
    a_records = read_topic(kafka.bootstrap, f"{prefix}.shop.orders", len(a_events), 30.0)
    assert event_ids_of(a_records, "pipe-a") == ids(a_events)
    b_records = read_topic(kafka.bootstrap, f"{prefix}.b.items", len(b_events), 30.0)
    assert event_ids_of(b_records, "pipe-b") == ids(b_events)


def test_closing_one_sink_leaves_the_other_undisturbed(kafka: Any, prefix: str) -> None:
    """A sink closed while the other still has messages queued on the shared producer: the
    other's messages are not purged, its later batches go out, its flush waits for them."""
    pool = ProducerPool()
    a = KafkaSink("pipe-a", "acme", spec(kafka.bootstrap, f"{prefix}.shop.orders"), pool=pool)
    b = KafkaSink("pipe-b", "acme", spec(kafka.bootstrap, f"{prefix}.shop.items"), pool=pool)
    queued = [make_event("items", row_id, 1) for row_id in range(1, 51)]
    later = [make_event("items", row_id, 2) for row_id in range(1, 51)]
    try:
        a.send_batch(1, [make_event("orders", 1, 1)])
        b.send_batch(1, queued)  # not polled yet: still in the producer when a closes
        a.close()
        a.close()  # a second close releases nothing more
        assert len(pool) == 1
        b.send_batch(2, later)
        assert b.flush(30.0)
        assert summary(b.take_completed()) == [(1, 50, 0), (2, 50, 0)]
    finally:
        b.close()
    assert len(pool) == 0
    records = read_topic(kafka.bootstrap, f"{prefix}.shop.items", 100, 30.0)
    assert event_ids_of(records, "pipe-b") == ids(queued + later)


def test_client_failure_reaches_every_sink_and_both_recover(
        proxied: tuple[KafkaBroker, TcpProxy], caplog: pytest.LogCaptureFixture) -> None:
    """Every connection to the broker is cut: both sinks on the shared producer hear the client
    error (error_cb is per producer) and see their own batches time out; once the network is
    back, both deliver again, and each topic holds exactly its pipeline's delivered events."""
    broker, proxy = proxied
    topics = {name: f"{name}.{uuid.uuid4().hex[:8]}" for name in ("pipe-a", "pipe-b")}
    for topic in topics.values():
        broker.create_topic(topic)
    pool = ProducerPool()
    sinks = [KafkaSink(name, "acme", spec(proxy.address, topic, send_timeout_secs=3), pool=pool)
             for name, topic in topics.items()]
    a, b = sinks

    def round_(batch_id: int, version: int) -> dict[str, list[ChangeEvent]]:
        sent = {}
        for sink, name in zip(sinks, topics, strict=True):
            sent[name] = [make_event("orders", row_id, version) for row_id in range(1, 11)]
            sink.send_batch(batch_id, sent[name])
        return sent

    caplog.set_level(logging.DEBUG, logger="workers.sinks.kafka")
    try:
        assert len(pool) == 1
        before = round_(1, 1)
        assert [summary(o) for o in drain_through(a, sinks, 30.0)] == [[(1, 10, 0)]] * 2
        proxy.cut()
        round_(2, 2)
        cut_outcomes = drain_through(b, sinks, 30.0)
        assert [summary(o) for o in cut_outcomes] == [[(2, 0, 10)]] * 2
        assert all("timed out" in str(o[0].error) for o in cut_outcomes)
        heard = client_errors(caplog)
        assert set(heard) == set(topics), "the client error reached both pipelines' sinks"
        for sink in sinks:
            with pytest.raises(SinkUnavailableError, match="brokers are down|transport"):
                sink.check_connection(1.0)
        proxy.restore()
        after = round_(3, 3)
        assert [summary(o) for o in drain_through(a, sinks, 60.0)] == [[(3, 10, 0)]] * 2
    finally:
        proxy.restore()
        for sink in sinks:
            sink.close()
    for name, topic in topics.items():
        expected = before[name] + after[name]
        records = read_topic(broker.bootstrap, topic, len(expected), 30.0)
        assert event_ids_of(records, name) == ids(expected)


def test_a_fatal_error_retires_the_shared_producer(
        kafka: Any, prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    """After a fatal client error (librdkafka's error_cb, called here as librdkafka would) every
    sink on the producer hears it; the next sink opened gets a fresh producer and delivers, and
    the retired one is closed when its last sink closes."""
    pool = ProducerPool()
    config = spec(kafka.bootstrap, f"{prefix}.shop.orders")
    a = KafkaSink("pipe-a", "acme", config, pool=pool)
    b = KafkaSink("pipe-b", "acme", config, pool=pool)
    retired = a._client
    caplog.set_level(logging.DEBUG, logger="workers.sinks.kafka")
    retired._on_error(KafkaError(KafkaError._FATAL, "injected fatal error", fatal=True))
    heard = client_errors(caplog)
    assert set(heard) == {"pipe-a", "pipe-b"}
    assert all(r.levelno == logging.ERROR for records in heard.values() for r in records)

    fresh = KafkaSink("pipe-c", "acme", config, pool=pool)
    try:
        assert fresh._client is not retired and len(pool) == 1
        a.close()
        b.close()
        with pytest.raises(RuntimeError):  # closed: librdkafka's handle is gone
            retired.producer.poll(0)
        fresh.send_batch(1, [make_event("orders", 1, 1)])
        assert summary(drain(fresh, 30.0)) == [(1, 1, 0)]
    finally:
        fresh.close()
    assert len(pool) == 0


def test_a_batch_waiting_long_for_its_reports_stops_the_sink_taking_more(
        proxied: tuple[KafkaBroker, TcpProxy]) -> None:
    """Slow brokers (their answers held back): once this sink's oldest batch has waited a
    sixth of ``send_timeout_secs`` for its reports, ``has_room`` says no, so the client
    buffer never holds more than the brokers take before messages time out. The batch
    still arrives once they answer, and the room comes back."""
    broker, proxy = proxied
    topic = f"room.{uuid.uuid4().hex[:8]}"
    broker.create_topic(topic)
    sink = KafkaSink("pipe-room", "acme", spec(proxy.address, topic, send_timeout_secs=6),
                     pool=ProducerPool())
    try:
        sink.check_connection(10.0)
        proxy.hang_replies()
        sent = [make_event("orders", row_id, 1) for row_id in range(1, 6)]
        sink.send_batch(1, sent)
        assert sink.has_room(), "a young batch leaves room"
        time.sleep(1.3)  # past 6 s / 6
        sink.poll(0.1)
        assert sink.in_flight_batches() == 1 and not sink.has_room()
        proxy.restore()
        assert summary(drain_through(sink, [sink], 30.0)[0]) == [(1, 5, 0)]
        assert sink.has_room()
    finally:
        proxy.restore()
        sink.close()
    assert event_ids_of(read_topic(broker.bootstrap, topic, 5, 30.0), "pipe-room") == ids(sent)


SMALL_QUEUE = {"queue.buffering.max.messages": 20}  # the queue-wide rules apply from 1 message


def shared_sinks(broker: KafkaBroker, proxy: TcpProxy) -> tuple[KafkaSink, KafkaSink]:
    """Two connected sinks on one producer with a small queue, writing to a new topic; room
    age 1 s (6 s / 6)."""
    topic = f"room.{uuid.uuid4().hex[:8]}"
    broker.create_topic(topic)
    pool = ProducerPool()
    busy, idle = (KafkaSink(name, "acme", spec(proxy.address, topic, send_timeout_secs=6,
                                               client_conf=SMALL_QUEUE), pool=pool)
                  for name in ("pipe-busy", "pipe-idle"))
    assert len(pool) == 1
    busy.check_connection(10.0)
    return busy, idle


def test_a_slow_shared_queue_stops_every_sink_on_it_until_it_moves_again(
        proxied: tuple[KafkaBroker, TcpProxy]) -> None:
    """The batch a shared producer completed last took longer than a sixth of
    ``send_timeout_secs``: while messages are queued, no sink on it takes more, also one with
    nothing in flight of its own (each batch waits behind the others' in the one queue). A
    quick batch later gives the room back."""
    broker, proxy = proxied
    busy, idle = shared_sinks(broker, proxy)
    try:
        proxy.hang_replies()
        busy.send_batch(1, [make_event("orders", 1, 1)])
        time.sleep(1.3)  # past 6 s / 6
        proxy.restore()
        (slow,) = drain_through(busy, [busy], 30.0)[0]
        assert slow.latency_s >= 1.0 and idle.has_room(), "nothing queued: room"
        proxy.hang_replies()
        busy.send_batch(2, [make_event("orders", 2, 1)])
        assert not idle.has_room(), "queued behind a slow queue"
        proxy.restore()
        (quick,) = drain_through(busy, [busy], 30.0)[0]
        assert quick.latency_s < 1.0 and idle.has_room()
    finally:
        proxy.restore()
        busy.close()
        idle.close()


def test_a_queue_where_nothing_completes_stops_every_sink_on_it(
        proxied: tuple[KafkaBroker, TcpProxy]) -> None:
    """A burst before any batch came back (no latency to go by yet): once messages have been
    queued for a sixth of ``send_timeout_secs`` without any batch completing, no sink adds
    more, so the burst cannot grow into a queue that times out. The first completion gives
    the room back."""
    broker, proxy = proxied
    busy, idle = shared_sinks(broker, proxy)
    try:
        proxy.hang_replies()
        busy.send_batch(1, [make_event("orders", 1, 1)])
        assert idle.has_room(), "queued just now"
        time.sleep(1.3)  # past 6 s / 6, nothing completed
        assert not idle.has_room()
        proxy.restore()
        drain_through(busy, [busy], 30.0)
        assert idle.has_room()
    finally:
        proxy.restore()
        busy.close()
        idle.close()
