"""What arrived in Kafka: every pipeline topic read from the start by one consumer thread.

Per topic a byte per row id counts deliveries (ids are 1.. per table), so lost and duplicated
rows are known exactly without keeping keys. The broker stamps each message with its append
time (topics use LogAppendTime), so delivery times do not depend on how fast this consumer
reads. For one row in ``sample_every`` (by id) the value is parsed for ``commit_us``, the
server's clock when the INSERT ran: latency = append time - commit time.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import Counter
from dataclasses import dataclass

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

log = logging.getLogger(__name__)


@dataclass
class TopicTally:
    counts: bytearray  # index = row id; deliveries of that id, saturating at 255
    unique: int = 0
    messages: int = 0
    max_id: int = 0

    def add(self, row_id: int) -> bool:
        """Count one delivery; True if it is the id's first."""
        counts = self.counts
        if row_id >= len(counts):
            counts.extend(bytes(max(row_id + 1 - len(counts), len(counts))))
        seen = counts[row_id]
        if seen == 0:
            self.unique += 1
        if seen < 255:
            counts[row_id] = seen + 1
        self.messages += 1
        self.max_id = max(self.max_id, row_id)
        return seen == 0

    def missing(self, last_id: int) -> int:
        """Ids 1..last_id never delivered."""
        delivered = self.counts[1:last_id + 1]
        return last_id - len(delivered) + delivered.count(0)

    def gaps(self) -> int:
        """Ids missing below the highest delivered one: lost, as one pipeline's rows arrive in
        order (one partition) and a replay restarts from a checkpoint before any gap."""
        return self.counts[1:self.max_id + 1].count(0)

    def duplicates(self) -> int:
        return self.messages - self.unique


@dataclass(frozen=True)
class LatencySample:
    commit_s: float
    append_s: float

    @property
    def latency_ms(self) -> float:
        return (self.append_s - self.commit_s) * 1000


class Deliveries:
    """Consumes ``topics`` in a thread until stopped; everything it learned stays readable."""

    def __init__(self, bootstrap: str, topics: list[str], sample_every: int) -> None:
        self.bootstrap, self.topics, self.sample_every = bootstrap, topics, sample_every
        self.tallies = {topic: TopicTally(bytearray(1024)) for topic in topics}
        self.per_second: Counter[int] = Counter()  # append second -> messages
        self.samples: list[LatencySample] = []
        self.watch_above: dict[str, int] = {}  # topic -> id; first later id's append time
        self.first_above_s: dict[str, float] = {}
        self.unique_total = 0
        self.foreign = 0  # messages without an integer key (none expected)
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="deliveries", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(30)

    def watch(self, above: dict[str, int]) -> None:
        """Note when each topic first gets an id above the given one (rows sent after a kill)."""
        self.first_above_s = {}
        self.watch_above = dict(above)

    def delivered_between(self, start_s: float, end_s: float) -> int:
        """Messages the broker appended in [start_s, end_s), by whole seconds."""
        return sum(self.per_second[s] for s in range(int(start_s), int(end_s)))

    def series(self, start_s: float, end_s: float) -> list[int]:
        """Messages appended per second from start_s to end_s (for the JSON)."""
        return [self.per_second[s] for s in range(int(start_s), int(end_s) + 1)]

    def _run(self) -> None:
        consumer = Consumer({"bootstrap.servers": self.bootstrap,
                             "group.id": f"fleet-bench-{uuid.uuid4()}",
                             "enable.auto.commit": False,
                             # Fetches that wait for 1 MB (or 500 ms) rather than return each
                             # new message: the broker and this process spend less of the CPU
                             # the service is measured on. Times come from the broker's stamps.
                             "fetch.wait.max.ms": 500, "fetch.min.bytes": 1_000_000,
                             # errors only: a loaded broker makes librdkafka warn about its
                             # metadata cache in bursts of one line per partition
                             "log_level": 3})
        try:
            consumer.assign([TopicPartition(t, 0, OFFSET_BEGINNING) for t in self.topics])
            while not self.stop_event.is_set():
                for message in consumer.consume(2000, timeout=0.2):
                    if message.error() is None:
                        self._record(message)
        except Exception as exc:  # surfaced by the benchmark through .error
            log.error("deliveries consumer failed: %r", exc)
            self.error = exc
        finally:
            consumer.close()

    def _record(self, message: Message) -> None:
        topic, key = message.topic(), message.key()
        try:
            row_id = int(key)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            self.foreign += 1
            return
        tally = self.tallies[topic]  # type: ignore[index]
        first = tally.add(row_id)
        self.unique_total += first
        append_s = message.timestamp()[1] / 1000
        self.per_second[int(append_s)] += 1
        watched = self.watch_above.get(topic)  # type: ignore[arg-type]
        if watched is not None and row_id > watched and topic not in self.first_above_s:
            self.first_above_s[topic] = append_s  # type: ignore[index]
        if first and row_id % self.sample_every == 0:  # a replayed copy is not a latency
            commit_us = orjson.loads(message.value())["after"]["commit_us"]  # type: ignore[arg-type]
            self.samples.append(LatencySample(commit_us / 1e6, append_s))
