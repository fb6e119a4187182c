"""The compacted Kafka topic that holds exactly-once sinks' source positions.

Each batch's transaction writes ``pipeline/sink_id -> position`` here together with the batch's
messages, so output and position commit atomically (KIP-618's design). On start the position
is read back with ``read_committed``.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import msgspec
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from state.records import BinlogPosition
from workers.sinks.errors import SinkUnavailableError


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
    """The last committed position of ``pipeline/sink_id``, or None if it never committed."""
    consumer = Consumer(_consumer_config(config))
    try:
        partitions = consumer.list_topics(topic, timeout=timeout_s).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        return _scan(consumer, record_key(pipeline, sink_id), len(partitions), timeout_s)
    finally:
        consumer.close()


def _consumer_config(producer_config: dict[str, Any]) -> dict[str, Any]:
    shared = {k: v for k, v in producer_config.items()
              if k.startswith(("bootstrap.", "security.", "sasl.", "ssl."))}
    return {**shared, "group.id": f"deltaforge-checkpoint-reader-{uuid.uuid4()}",
            "isolation.level": "read_committed", "enable.auto.commit": False,
            "enable.partition.eof": True, "auto.offset.reset": "earliest"}


def _scan(consumer: Consumer, key: bytes, partitions: int, timeout_s: float
          ) -> BinlogPosition | None:
    found: BinlogPosition | None = None
    at_end: set[int] = set()
    deadline = time.monotonic() + timeout_s
    while len(at_end) < partitions:
        if time.monotonic() > deadline:
            raise SinkUnavailableError(f"checkpoint topic not read to its end in {timeout_s:g}s")
        for message in consumer.consume(1000, timeout=0.5):
            error, value = message.error(), message.value()
            if error is not None and error.code() == KafkaError._PARTITION_EOF:
                at_end.add(int(message.partition() or 0))
            elif error is None and message.key() == key and value is not None:
                found = _DECODER.decode(value).position
    return found
