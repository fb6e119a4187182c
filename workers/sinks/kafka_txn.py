"""Exactly-once Kafka sink: each batch is one transaction that also carries the sink's position.

The position goes to a compacted checkpoint topic inside the same transaction, so a crash at
any point leaves Kafka with either the whole batch and its position, or neither. On start the
producer fences earlier instances with the same ``transactional.id`` (``init_transactions``
aborts their open transaction) and the position is read back with ``read_committed``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from state.records import BinlogPosition
from state.spec import KafkaConfigSpec
from workers.events import ChangeEvent
from workers.sinks import checkpoint_topic
from workers.sinks.batches import BatchTracker
from workers.sinks.errors import CommitOutcomeUnknown, SinkFencedError, SinkUnavailableError
from workers.sinks.kafka import KafkaSink, kafka_error_text, producer_config

log = logging.getLogger(__name__)
TRANSACTION_TIMEOUT_MS = 60_000


def transactional_id(pipeline: str, sink_id: str) -> str:
    """Stable per pipeline and sink, so a restarted or moved pipeline fences its zombie."""
    return f"deltaforge-{pipeline}-{sink_id}"


class TransactionalKafkaSink(KafkaSink):
    """``exactly_once: true``: one Kafka transaction per batch, position included."""

    transactional = True

    def __init__(self, pipeline: str, tenant: str, spec: KafkaConfigSpec,
                 on_batch_done: Callable[[], None] | None = None) -> None:
        self._checkpoint_topic = spec.checkpoint_topic
        self._transactions_ready = False
        self._commit_timeout_s = float(spec.send_timeout_secs)
        super().__init__(pipeline, tenant, spec, on_batch_done=on_batch_done)
        self._position_key = checkpoint_topic.record_key(pipeline, spec.id)

    def _client_config(self, spec: KafkaConfigSpec) -> dict[str, Any]:
        config = producer_config(spec)
        timeout_ms = min(int(config["message.timeout.ms"]), TRANSACTION_TIMEOUT_MS)
        config.update({"transactional.id": transactional_id(self._pipeline, spec.id),
                       "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
                       "message.timeout.ms": timeout_ms})
        self._config = config
        return config

    def committed_position(self, timeout_s: float) -> BinlogPosition | None:
        """Fence earlier instances, then read this sink's last committed position."""
        checkpoint_topic.ensure_topic(self._config, self._checkpoint_topic, timeout_s)
        if not self._transactions_ready:  # once per producer; a timed-out call may be retried
            try:
                self._producer.init_transactions(timeout_s)
            except KafkaException as exc:
                raise self._txn_error("init_transactions", exc) from None
            self._transactions_ready = True
        return checkpoint_topic.read_position(self._config, self._checkpoint_topic,
                                              self._pipeline, self.sink_id, timeout_s)

    def send_batch(self, batch_id: int, events: list[ChangeEvent],
                   end_position: BinlogPosition | None = None) -> None:
        """Produce the batch and its end position in one transaction and commit it."""
        assert end_position is not None, "an exactly-once batch needs its end position"
        self._producer.begin_transaction()
        tracker = self._open_batch(batch_id)
        try:
            try:
                on_delivery = tracker.on_delivery
                for index, event in enumerate(events):
                    self._produce(tracker, on_delivery, index, event)
                self._producer.produce(self._checkpoint_topic, checkpoint_topic.encode_position(
                    self._pipeline, self.sink_id, end_position), self._position_key)
            except BaseException as exc:  # e.g. SinkEventError: the runner re-sends without it
                self._abort_quietly()
                tracker.abandon(f"transaction aborted: {exc}")
                raise
            self._commit(tracker)
        finally:
            tracker.seal()

    def _commit(self, tracker: BatchTracker) -> None:
        """Commit, calling ``commit_transaction`` again after a timeout (librdkafka goes on
        with the commit in the background) until it succeeds, needs an abort, fails fatally,
        or ``send_timeout_secs`` is spent.

        Only an abortable error means the batch is certainly not in Kafka, so only then is the
        batch failed for a re-send. A commit still unresolved at the deadline may yet land:
        ``CommitOutcomeUnknown`` fails the pipeline, whose restart fences this producer and
        reads the position back from the checkpoint topic, so the batch is neither lost nor
        written twice. (Aborting there and failing the batch would re-send a batch that may
        be committed: abort_transaction cannot undo a commit the coordinator already has.)
        """
        deadline = time.monotonic() + self._commit_timeout_s
        while True:
            try:
                self._producer.commit_transaction(max(0.5, deadline - time.monotonic()))
                self._producer.poll(0)  # serve the delivery reports the commit's flush produced
                return
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                if not isinstance(error, KafkaError) or error.fatal():
                    raise self._txn_error("commit", exc) from None
                if error.txn_requires_abort():
                    self._abort_quietly()
                    tracker.abandon(f"transaction aborted: {kafka_error_text(exc)}")
                    return
                if error.retriable() and time.monotonic() < deadline:
                    continue
                tracker.abandon(f"commit outcome unknown: {kafka_error_text(exc)}")
                raise CommitOutcomeUnknown(
                    f"kafka sink {self.sink_id!r}: commit of batch {tracker.batch_id} not "
                    f"confirmed within {self._commit_timeout_s:g}s ({kafka_error_text(exc)}); "
                    "the pipeline restarts and reads its position back from "
                    f"{self._checkpoint_topic} with read_committed") from None

    def _abort_quietly(self) -> None:
        try:
            self._producer.abort_transaction(self._commit_timeout_s)
        except KafkaException as exc:
            log.warning("transaction abort failed pipeline=%s sink=%s error=%s",
                        self._pipeline, self.sink_id, exc)

    def _txn_error(self, step: str, exc: KafkaException) -> Exception:
        error = exc.args[0] if exc.args else None
        fenced = isinstance(error, KafkaError) and (
            error.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED,
                             KafkaError.INVALID_PRODUCER_EPOCH))
        if fenced:
            return SinkFencedError(
                f"kafka sink {self.sink_id!r}: fenced by a newer instance with transactional.id "
                f"{self._config['transactional.id']} ({step}: {exc}); this instance stopped "
                "writing so the other one owns the output")
        return SinkUnavailableError(f"kafka sink {self.sink_id!r}: {step} failed: {exc}")
