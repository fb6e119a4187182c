"""Kafka producers of one worker process: one shared Producer per identical client configuration.

A librdkafka Producer costs threads (one per broker, plus its own), buffers and timers whether
it sends anything or not, and a worker hosts ~150 pipelines. So non-transactional sinks whose
client configuration is identical (brokers, ``client_conf`` and every derived setting) share
one Producer. Every produce carries its sink's own delivery callback, so a report reaches the
sink that sent the message whichever sink happens to poll; client-level errors (``error_cb`` is
per producer) are fanned out to every sink on the producer. A producer with a
``transactional.id`` is never shared: it runs one transaction at a time for one sink.

Why one pool per process, created on first use (``process_pool()``), rather than an object the
worker owns: sinks are built by ``open_sink`` inside the runner and catch-up, which know only
pipeline, tenant and spec; a forked worker is the unit that owns Kafka clients anyway. Created
lazily, the pool exists only in processes that build sinks: never in the supervisor, so a fork
never inherits a live producer (``process_pool()`` refuses one that did).
``ProducerPool(shared=False)`` gives each sink a producer of its own, as before sharing;
benchmarks/idle_cost.py uses it for its baseline.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

__all__ = ["ClientErrorListener", "ProducerClient", "ProducerPool", "process_pool"]

log = logging.getLogger(__name__)

ClientErrorListener = Callable[[KafkaError], None]
METADATA_FRESH_S = 2.0  # a metadata answer this recent vouches for the brokers
ConfigKey = tuple[tuple[str, str], ...]


class ProducerClient:
    """One librdkafka Producer and the sinks using it (each known by its error listener)."""

    def __init__(self, config: dict[str, Any], shared: bool) -> None:
        self.config = config
        self.shared = shared
        self.last_error: str | None = None
        self.failed = False  # a fatal error: the pool hands later sinks a fresh producer
        self.closed = False
        # Send-to-last-report time of the batch that completed last, whichever sink's: how long
        # the queue of this (maybe shared) producer takes to go out ...
        self.delivery_latency_s = 0.0
        # ... and when a batch last completed, or a batch was sent to an empty queue: whether
        # the queue moves at all (no batch has completed yet when a burst starts).
        self.progress_at = time.monotonic()
        self._metadata_at = -METADATA_FRESH_S
        self._metadata_lock = threading.Lock()
        self._listeners: list[ClientErrorListener] = []
        self._lock = threading.Lock()
        callbacks = {"error_cb": self._on_error, "logger": _LibrdkafkaLog()}
        self.producer = Producer({**config, **callbacks})

    def check_metadata(self, timeout_s: float) -> None:
        """Fetch cluster metadata (raises ``KafkaException`` when the brokers do not answer).
        Sinks starting together on a shared producer share one answer for a few seconds
        instead of asking for the whole cluster's metadata once each."""
        with self._metadata_lock:
            if time.monotonic() - self._metadata_at < METADATA_FRESH_S:
                return
            self.producer.list_topics(timeout=timeout_s)
            self._metadata_at = time.monotonic()

    def attach(self, listener: ClientErrorListener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def detach(self, listener: ClientErrorListener) -> int:
        """Forget one user (a second detach of the same one is a no-op); users left."""
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)
            return len(self._listeners)

    def close(self) -> None:
        """Drop what is still queued (its senders are gone) and release the client; a second
        call does nothing. Never raises: ``Producer.close()`` aborts an open transaction and
        reports that abort's failure (e.g. fenced, or a commit still in progress) as an
        exception, but the client is closed either way and its owner has already given up on
        whatever it was sending."""
        if self.closed:
            return
        self.closed = True
        try:
            self.producer.purge()
            self.producer.poll(0)
            close = getattr(self.producer, "close", None)  # Producer.close() is new in 2.x
            if close is not None:
                close()
        except (KafkaException, RuntimeError) as exc:
            log.warning("kafka producer closed with an error brokers=%s transactional_id=%s "
                        "error=%s", self.config["bootstrap.servers"],
                        self.config.get("transactional.id"), exc)

    def _on_error(self, error: KafkaError) -> None:
        # Served by whichever sink polls; every sink on this producer hears it.
        self.last_error = str(error.str())
        if error.fatal():
            self.failed = True
        with self._lock:
            listeners = tuple(self._listeners)
        for listener in listeners:
            listener(error)


class ProducerPool:
    """Hands out producers: one per identical non-transactional config while ``shared``."""

    def __init__(self, shared: bool = True) -> None:
        self.shared = shared
        self.pid = os.getpid()
        self._clients: dict[ConfigKey, ProducerClient] = {}
        self._open: set[ProducerClient] = set()  # shared or not, until closed
        self._lock = threading.Lock()  # sinks are opened in start-up threads

    def acquire(self, config: dict[str, Any], on_error: ClientErrorListener) -> ProducerClient:
        """A producer for ``config``; ``on_error`` hears its client-level errors until release."""
        with self._lock:
            client = self._shared_client(config) if self._shareable(config) else None
            if client is None:
                client = ProducerClient(config, shared=False)
            client.attach(on_error)
            self._open.add(client)
            return client

    def release(self, client: ProducerClient, on_error: ClientErrorListener) -> None:
        """Stop using ``client``; the last user's release closes it."""
        with self._lock:
            if client.detach(on_error):
                return
            key = config_key(client.config)
            if self._clients.get(key) is client:
                del self._clients[key]
            self._open.discard(client)
        client.close()
        if client.shared:
            log.info("shared kafka producer closed brokers=%s", client.config["bootstrap.servers"])

    def __len__(self) -> int:
        """Shared producers currently open."""
        return len(self._clients)

    def poll(self) -> int:
        """Serve every producer's delivery reports and errors (once per worker loop, not per
        pipeline); returns the messages still awaiting a report."""
        with self._lock:
            clients = list(self._open)
        outstanding = 0
        for client in clients:
            client.producer.poll(0)
            outstanding += len(client.producer)
        return outstanding

    def _shareable(self, config: dict[str, Any]) -> bool:
        return self.shared and "transactional.id" not in config

    def _shared_client(self, config: dict[str, Any]) -> ProducerClient:
        key = config_key(config)
        client = self._clients.get(key)
        if client is None or client.failed:
            if client is not None:
                log.warning("shared kafka producer replaced after a fatal error brokers=%s "
                            "error=%s", config["bootstrap.servers"], client.last_error)
            client = self._clients[key] = ProducerClient(config, shared=True)
            log.info("shared kafka producer started brokers=%s", config["bootstrap.servers"])
        return client


def config_key(config: dict[str, Any]) -> ConfigKey:
    """Equal for configs that build the same producer (repr keeps ``1`` and ``True`` apart)."""
    return tuple(sorted((name, repr(value)) for name, value in config.items()))


_process_pool: ProducerPool | None = None
_process_pool_lock = threading.Lock()


def process_pool() -> ProducerPool:
    """This process's pool, created on first use: in a worker, never in the supervisor."""
    global _process_pool
    with _process_pool_lock:
        if _process_pool is None:
            _process_pool = ProducerPool()
        if _process_pool.pid != os.getpid():
            # librdkafka's threads do not survive fork: an inherited producer is unusable.
            raise RuntimeError("Kafka producers were created before this process was forked; "
                               "create them only in the process that uses them")
        return _process_pool


class _LibrdkafkaLog:
    """librdkafka's own log lines, at debug: error_cb and delivery reports carry what matters."""

    _log = log.getChild("librdkafka")

    def log(self, _level: int, message: str, *args: Any) -> None:
        self._log.debug(message, *args)
