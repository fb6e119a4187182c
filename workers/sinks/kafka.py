"""Kafka sink: encode, route and produce events; report batches as their delivery reports arrive.

The worker runtime drives one ``KafkaSink`` from one thread: ``send_batch`` then ``poll`` and
``take_completed`` until every batch is acknowledged. Keys are the row's primary key by default
(see workers/routing.py), so one row's changes stay in one partition, in order.
Sinks with the same client configuration share one producer (workers/sinks/producers.py):
each message carries its own sink's delivery callback, so any sink's ``poll`` completes the
others' batches too, and each sink's ``flush`` waits for its own messages only.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any

import msgspec
from confluent_kafka import KafkaError, KafkaException

from state.records import BinlogPosition
from state.spec import KafkaConfigSpec
from workers.envelopes import build_encoder
from workers.events import ChangeEvent
from workers.routing import compile_key, compile_topic
from workers.sinks.batches import BatchLedger, BatchOutcome, BatchTracker
from workers.sinks.errors import (
    RoutingError,
    SinkError,
    SinkEventError,
    SinkUnavailableError,
)
from workers.sinks.producers import ProducerPool, process_pool

__all__ = ["BatchOutcome", "KafkaSink"]

log = logging.getLogger(__name__)

_BACKPRESSURE_POLL_S = 0.05
_FLUSH_POLL_S = 0.05
ROOM_AGE_SHARE = 1 / 6  # of send_timeout_secs: how long a batch may wait for reports before
# the sink takes no more (5 s at the default 30 s timeout)
SHARED_CLIENT_ID = "deltaforge"
_VALID_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
DeliveryFn = Callable[[Any, Any], None]
_ENCODING_ERRORS = (msgspec.EncodeError, TypeError, ValueError, OverflowError, KeyError)


def producer_config(spec: KafkaConfigSpec) -> dict[str, Any]:
    """librdkafka settings: ours first, then ``client_conf`` (applied last, so it wins)."""
    config: dict[str, Any] = {
        "bootstrap.servers": spec.brokers,
        "client.id": f"deltaforge-{spec.id}",
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
        "batch.size": 1048576,
        "message.timeout.ms": spec.send_timeout_secs * 1000,
        "socket.keepalive.enable": True,
        # Bounded client buffer: when Kafka is slow or away, produce() raises BufferError past
        # this and the runner stops pulling from the binlog (backpressure, not memory growth).
        "queue.buffering.max.kbytes": 65536,
        "queue.buffering.max.messages": 100000,
    }
    config.update(spec.client_conf)
    return config


def shared_producer_config(spec: KafkaConfigSpec) -> dict[str, Any]:
    """``producer_config`` without the sink's id in ``client.id``, so sinks of many pipelines
    on the same brokers and settings can share one producer."""
    config = producer_config(spec)
    if "client.id" not in spec.client_conf:
        config["client.id"] = SHARED_CLIENT_ID
    return config


class KafkaSink:
    """One Kafka destination of one pipeline; not thread-safe (one runtime thread calls it)."""

    transactional = False

    def __init__(self, pipeline: str, tenant: str, spec: KafkaConfigSpec,
                 pool: ProducerPool | None = None,
                 on_batch_done: Callable[[], None] | None = None) -> None:
        """``pool`` defaults to this process's; benchmarks pass an unshared one.
        ``on_batch_done`` is called when a batch has all its delivery reports (its owner's
        wake-up: the worker polls the producers, so reports arrive outside ``poll``)."""
        self.sink_id = spec.id
        self.required = spec.required
        self._pipeline = pipeline
        self._brokers = spec.brokers
        self._encode = build_encoder(spec.envelope_spec(), pipeline, tenant)
        self._topic_of = compile_topic(spec.topic, pipeline, tenant)
        self._key_of = compile_key(spec.key, pipeline, tenant)
        self._valid_topics: set[str] = set()
        self._ledger = _Ledger(on_batch_done)
        self._last_error: str | None = None
        self._pool = process_pool() if pool is None else pool
        config = self._client_config(spec)
        # Room for a batch: the client buffer (shared by the worker's pipelines) less than
        # half full. Above that the runner holds its batches rather than block in produce().
        self._room_messages = int(config["queue.buffering.max.messages"]) // 2
        # ... and this sink's oldest unreported batch, and the batch the producer completed
        # last, younger than this: the buffer holds no more than the brokers take in about
        # that time, so nothing in it times out ("Local: Message timed out" fails the
        # pipeline) while the brokers are merely slow.
        self._room_age_s = spec.send_timeout_secs * ROOM_AGE_SHARE
        # The rules on the (shared) queue as a whole apply from this many queued messages:
        # a few messages stuck on one partition do not hold up the other sinks.
        self._queue_floor = max(1, self._room_messages // 10)
        self._client = self._pool.acquire(config, self._on_client_error)
        self._producer = self._client.producer
        log.info("kafka sink started pipeline=%s sink=%s brokers=%s shared_producer=%s",
                 pipeline, spec.id, spec.brokers, self._client.shared)

    def _client_config(self, spec: KafkaConfigSpec) -> dict[str, Any]:
        return shared_producer_config(spec)

    def committed_position(self, timeout_s: float) -> BinlogPosition | None:
        """Where this sink's output ends according to Kafka itself (None: ask the checkpoints)."""
        return None

    def send_batch(self, batch_id: int, events: list[ChangeEvent],
                   end_position: BinlogPosition | None = None) -> None:
        """Produce every event under ``batch_id``; blocks (serving reports) while the queue is full.

        On ``SinkEventError`` the events before ``error.index`` are sent and stay in this batch;
        the caller deals with the rejected event and sends the rest as a new batch.
        """
        tracker = self._open_batch(batch_id)
        on_delivery = tracker.on_delivery  # one bound method for the whole batch
        try:
            for index, event in enumerate(events):
                self._produce(tracker, on_delivery, index, event)
        finally:
            tracker.seal()

    def _open_batch(self, batch_id: int) -> BatchTracker:
        if not len(self._producer):
            self._client.progress_at = time.monotonic()  # an empty queue has nothing to move
        return self._ledger.open(batch_id)

    def has_room(self) -> bool:
        """The client buffer can take another batch without blocking, and what this sink has
        in it is moving (backpressure)."""
        queued = len(self._producer)
        if queued >= self._room_messages:
            return False
        now = time.monotonic()
        client = self._client
        if queued >= self._queue_floor and (
                client.delivery_latency_s >= self._room_age_s
                or now - client.progress_at >= self._room_age_s):
            return False  # the (shared) queue is slow to go out, or stuck: let it drain first
        oldest = self._ledger.oldest_unreported_at()
        return oldest is None or now - oldest < self._room_age_s

    def poll(self, timeout_s: float = 0.0) -> None:
        """Serve delivery reports and client errors for up to ``timeout_s``; on a shared
        producer those of the other sinks too (each lands in its own sink's ledger)."""
        self._producer.poll(timeout_s)

    def take_completed(self) -> list[BatchOutcome]:
        """Batches whose every message has a delivery report, in send order."""
        done = self._ledger.take_completed()
        if done:
            self._client.delivery_latency_s = done[-1].latency_s
            self._client.progress_at = time.monotonic()
        return done

    def in_flight_batches(self) -> int:
        """Batches sent and not yet returned by ``take_completed``."""
        return len(self._ledger)

    def flush(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for this sink's delivery reports; True if none is outstanding.

        Polls rather than ``Producer.flush()``, which would also wait for other sinks' messages.
        """
        deadline = time.monotonic() + timeout_s
        while self._ledger.awaiting_reports():
            left_s = deadline - time.monotonic()
            if left_s <= 0:
                return False
            self._producer.poll(min(left_s, _FLUSH_POLL_S))
        return True

    def check_connection(self, timeout_s: float) -> None:
        """Fetch cluster metadata or raise ``SinkUnavailableError`` naming the brokers."""
        try:
            self._client.check_metadata(timeout_s)
        except KafkaException as exc:
            detail = self._client.last_error or kafka_error_text(exc)
            raise SinkUnavailableError(
                f"kafka sink {self.sink_id!r}: no metadata from brokers {self._brokers} "
                f"within {timeout_s:g}s ({detail})"
            ) from None

    def close(self) -> None:
        """Release the producer; the last sink on it drops what is unsent and closes it.

        Until then this sink's unsent messages still go out (or time out): one sink cannot purge
        a shared queue. Their reports are ignored; callers flush first when they need them.
        """
        self._pool.release(self._client, self._on_client_error)
        log.info("kafka sink closed pipeline=%s sink=%s", self._pipeline, self.sink_id)

    def _produce(
        self, tracker: BatchTracker, on_delivery: DeliveryFn, index: int, event: ChangeEvent
    ) -> None:
        topic, key, value = self._prepare(index, event)
        while True:
            try:
                self._producer.produce(topic, value, key, on_delivery=on_delivery)
                break
            except BufferError:
                self._producer.poll(_BACKPRESSURE_POLL_S)  # local queue full: backpressure
            except KafkaException as exc:
                raise self._produce_error(exc, index, event, topic, len(value)) from None
        tracker.sent += 1
        tracker.bytes += len(value) + len(key)

    def _produce_error(
        self, exc: KafkaException, index: int, event: ChangeEvent, topic: str, size: int
    ) -> SinkError:
        """Too large: this event's fault (DLQ). Anything else: the producer's (pipeline retry)."""
        text = kafka_error_text(exc)
        error = exc.args[0] if exc.args else None
        if isinstance(error, KafkaError) and error.code() == KafkaError.MSG_SIZE_TOO_LARGE:
            return SinkEventError(event, "serialization error", f"kafka rejected the message: "
                                  f"{text} (topic {topic}, {size} bytes)", index)
        return SinkUnavailableError(f"kafka sink {self.sink_id!r}: produce failed: {text}")

    def _prepare(self, index: int, event: ChangeEvent) -> tuple[str, bytes, bytes]:
        try:
            topic = self._topic_of(event)
        except RoutingError as exc:
            raise SinkEventError(event, "routing error", str(exc), index) from None
        if topic not in self._valid_topics:
            self._check_topic_name(index, event, topic)
        try:
            value = self._encode(event)
        except _ENCODING_ERRORS as exc:
            raise SinkEventError(event, "serialization error", str(exc), index) from None
        return topic, self._key_of(event).encode(), value

    def _check_topic_name(self, index: int, event: ChangeEvent, topic: str) -> None:
        if not _VALID_TOPIC.fullmatch(topic) or topic in (".", ".."):
            raise SinkEventError(
                event, "routing error", f"resolved topic {topic!r} is not a valid Kafka topic "
                "name (1-249 of A-Z a-z 0-9 . _ -)", index)
        self._valid_topics.add(topic)

    def _on_client_error(self, error: KafkaError) -> None:
        # Connection faults repeat every retry while brokers are down: warn when the text changes.
        text = str(error.str())
        if error.fatal():
            level = logging.ERROR
        else:
            level = logging.WARNING if text != self._last_error else logging.DEBUG
        self._last_error = text
        log.log(level, "kafka client error pipeline=%s sink=%s error=%s", self._pipeline,
                self.sink_id, text)


class _Ledger(BatchLedger):
    """The sink's batches, and whether any still awaits delivery reports (for ``flush``)."""

    def awaiting_reports(self) -> bool:
        # Only complete batches leave the ledger, so every unreported one is still in it.
        return not all(tracker.is_complete() for tracker in self._batches)


def kafka_error_text(exc: KafkaException) -> str:
    error = exc.args[0] if exc.args else None
    return str(error.str()) if isinstance(error, KafkaError) else str(exc)
