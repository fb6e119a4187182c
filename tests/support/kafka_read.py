"""Read everything a topic holds, with assign() (no group join), for content comparisons."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, TopicPartition


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: str | None
    value: dict[str, Any]


def read_topic(bootstrap: str, topic: str, expect: int, timeout_s: float = 60.0,
               isolation: str = "read_uncommitted") -> list[Record]:
    """Every record of ``topic`` once at least ``expect`` arrived (or the timeout passed)."""
    return read_until(bootstrap, topic, lambda records: len(records) >= expect, timeout_s,
                      isolation)


def read_until(bootstrap: str, topic: str, done: Callable[[list[Record]], bool],
               timeout_s: float = 60.0, isolation: str = "read_uncommitted") -> list[Record]:
    """Every record of ``topic`` read until ``done(records)`` holds (or the timeout passed)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"test-{uuid.uuid4()}",
                         "enable.auto.commit": False, "isolation.level": isolation})
    try:
        partitions = _partitions(consumer, topic, timeout_s)
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        records: list[Record] = []
        deadline = time.monotonic() + timeout_s
        while not done(records) and time.monotonic() < deadline:
            for message in consumer.consume(500, timeout=0.5):
                if message.error() is None:
                    records.append(_record(message))
        return records
    finally:
        consumer.close()


def _partitions(consumer: Consumer, topic: str, timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        metadata = consumer.list_topics(topic, timeout=5).topics.get(topic)
        if metadata is not None and metadata.error is None and metadata.partitions:
            return sorted(metadata.partitions)
        time.sleep(0.2)
    raise AssertionError(f"topic {topic} did not appear within {timeout_s}s")


def _record(message: Any) -> Record:
    key = message.key()
    return Record(message.topic(), message.partition(), message.offset(),
                  None if key is None else key.decode(), json.loads(message.value()))
