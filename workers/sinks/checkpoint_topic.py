"""The compacted Kafka topic that holds exactly-once sinks' source positions.

Each batch's transaction writes ``pipeline/sink_id -> position`` here together with the batch's
messages, so output and position commit atomically (KIP-618's design). On start the position
is read back with ``read_committed``, once no transaction is open below the partitions' ends.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import msgspec
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from state.records import BinlogPosition
from workers.sinks.errors import HangingTransaction, SinkUnavailableError

STABLE_POLL_S = 0.1


class PositionRecord(msgspec.Struct, frozen=True):
    """The value stored under ``pipeline/sink_id``."""

    pipeline: str
    sink_id: str
    position: BinlogPosition
    written_at: float


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(PositionRecord)


def record_key(pipeline: str, sink_id: str) -> bytes:
    return f"{pipeline}/{sink_id}".encode()


def encode_position(pipeline: str, sink_id: str, position: BinlogPosition) -> bytes:
    return _ENCODER.encode(PositionRecord(pipeline, sink_id, position, time.time()))


def ensure_topic(config: dict[str, Any], topic: str, timeout_s: float) -> None:
    """Create the compacted topic if it is missing (an existing one is left as it is)."""
    admin = AdminClient({k: v for k, v in config.items() if not k.startswith("transaction")})
    if topic in admin.list_topics(timeout=timeout_s).topics:
        return
    future = admin.create_topics([NewTopic(topic, num_partitions=1, config={
        "cleanup.policy": "compact", "min.compaction.lag.ms": "60000"})])[topic]
    try:
        future.result(timeout_s)
    except KafkaException as exc:
        error = exc.args[0] if exc.args else None
        if not (isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS):
            raise SinkUnavailableError(f"cannot create checkpoint topic {topic}: {exc}") from None


def read_position(config: dict[str, Any], topic: str, pipeline: str, sink_id: str,
                  timeout_s: float) -> BinlogPosition | None:
    """The last committed position of ``pipeline/sink_id``, or None if it never committed.

    Call it after ``init_transactions``: every earlier transaction of this sink is then complete
    (committed or aborted), so what it wrote is all below the partitions' current ends. The
    read waits until the last stable offset reaches those ends: other pipelines sharing the
    topic may have a transaction open across them, and a ``read_committed`` read that stopped
    at an open transaction would miss a later committed position of ours and re-send from an
    older one. A transaction of ours still open there is a hanging one (``HangingTransaction``).
    """
    key = record_key(pipeline, sink_id)
    deadline = time.monotonic() + timeout_s
    committed = Consumer(_consumer_config(config, "read_committed"))
    uncommitted = Consumer(_consumer_config(config, "read_uncommitted"))
    try:
        numbers = committed.list_topics(topic, timeout=timeout_s).topics[topic].partitions
        partitions = [TopicPartition(topic, p) for p in numbers]
        ends = {tp.partition: _end(uncommitted, tp, deadline) for tp in partitions}
        for tp in partitions:
            _wait_stable(committed, uncommitted, tp, ends[tp.partition], key, deadline)
        committed.assign([TopicPartition(topic, p, 0) for p in numbers])
        return _scan(committed, key, len(partitions), deadline)
    finally:
        committed.close()
        uncommitted.close()


def _consumer_config(producer_config: dict[str, Any], isolation: str) -> dict[str, Any]:
    shared = {k: v for k, v in producer_config.items()
              if k.startswith(("bootstrap.", "security.", "sasl.", "ssl."))}
    return {**shared, "group.id": f"deltaforge-checkpoint-reader-{uuid.uuid4()}",
            "isolation.level": isolation, "enable.auto.commit": False,
            "enable.partition.eof": True, "auto.offset.reset": "earliest"}


def _end(consumer: Consumer, tp: TopicPartition, deadline: float) -> int:
    """The partition's end: its high watermark for a read_uncommitted consumer, its last stable
    offset for a read_committed one."""
    try:
        _, end = consumer.get_watermark_offsets(tp, timeout=_left(deadline), cached=False)
    except KafkaException as exc:
        raise SinkUnavailableError(f"checkpoint topic {tp.topic}[{tp.partition}]: cannot read "
                                   f"its end offsets ({exc})") from None
    return int(end)


def _wait_stable(committed: Consumer, uncommitted: Consumer, tp: TopicPartition, end: int,
                 key: bytes, deadline: float) -> None:
    """Wait until no transaction is open below ``end`` on this partition."""
    while (stable := _end(committed, tp, deadline)) < end:
        owner = _key_at(uncommitted, tp, stable, deadline)
        if owner == key:
            raise HangingTransaction(tp.topic, tp.partition, stable, key.decode())
        if time.monotonic() > deadline:
            raise SinkUnavailableError(
                f"checkpoint topic {tp.topic}[{tp.partition}]: the transaction that wrote "
                f"{_describe_key(owner)} at offset {stable} is still open, so positions "
                "committed after it cannot be read yet; retrying")
        time.sleep(STABLE_POLL_S)


def _key_at(consumer: Consumer, tp: TopicPartition, offset: int, deadline: float
            ) -> bytes | None:
    """The key of the record at ``offset`` (the first record of the oldest open transaction)."""
    consumer.assign([TopicPartition(tp.topic, tp.partition, offset)])
    while time.monotonic() < deadline:
        for message in consumer.consume(1, timeout=0.5):
            if message.error() is None:
                return message.key()
    return None


def _describe_key(key: bytes | None) -> str:
    return "an unknown record" if key is None else f"the position of {key.decode()!r}"


def _left(deadline: float) -> float:
    return max(0.1, deadline - time.monotonic())


def _scan(consumer: Consumer, key: bytes, partitions: int, deadline: float
          ) -> BinlogPosition | None:
    found: BinlogPosition | None = None
    at_end: set[int] = set()
    while len(at_end) < partitions:
        if time.monotonic() > deadline:
            raise SinkUnavailableError("checkpoint topic not read to its end in time")
        for message in consumer.consume(1000, timeout=0.5):
            error, value = message.error(), message.value()
            if error is not None and error.code() == KafkaError._PARTITION_EOF:
                at_end.add(int(message.partition() or 0))
            elif error is None and message.key() == key and value is not None:
                found = _DECODER.decode(value).position
    return found
