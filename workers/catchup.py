"""Catch-up of one optional sink that fell behind, while its pipeline keeps running.

The sink gets its own binlog reader (its own replica server id) starting at the sink's own
checkpoint and a fresh client; it re-delivers until its acknowledged position reaches what the
pipeline has sent, then hands the client back to the pipeline. A failure retries with backoff.
"""

from __future__ import annotations

import logging
import queue
import zlib
from collections.abc import Callable

import msgspec

from state.records import BinlogPosition
from state.spec import KafkaConfigSpec, MysqlConfigSpec
from workers.backoff import Backoff
from workers.batching import Batcher
from workers.sinks.kafka import KafkaSink
from workers.source.items import SourceItem, take_events
from workers.source.mysql import BinlogReader
from workers.waker import Wake, WakingQueue

log = logging.getLogger(__name__)
QUEUE_ITEMS = 64
MAX_INFLIGHT = 2
COMMITTED_POSITION_TIMEOUT_S = 10.0

SinkFactory = Callable[[KafkaConfigSpec], KafkaSink]
Checkpoint = Callable[[str, BinlogPosition, int], None]


def catchup_server_id(source: MysqlConfigSpec, sink_id: str) -> int:
    """A replica id of its own: two dump connections with one id would cut each other off."""
    return 1 + zlib.crc32(f"{source.id}/catchup/{sink_id}".encode()) % 4_000_000_000


class SinkCatchup:
    """Re-delivers one sink's backlog from its checkpoint; ``step`` is called by the runner."""

    def __init__(self, pipeline: str, source: MysqlConfigSpec, sink_spec: KafkaConfigSpec,
                 position: BinlogPosition, batcher: Batcher, open_sink: SinkFactory,
                 checkpoint: Checkpoint, waker: Wake) -> None:
        self.pipeline, self.sink_spec, self.position = pipeline, sink_spec, position
        self.source = msgspec.structs.replace(
            source, server_id=catchup_server_id(source, sink_spec.id))
        self.batcher, self.open_sink, self.checkpoint = batcher, open_sink, checkpoint
        self.waker = waker
        self.backoff = Backoff(initial_s=1.0, max_s=30.0)
        self.sink: KafkaSink | None = None
        self.reader: BinlogReader | None = None
        self.queue: queue.Queue[SourceItem] = WakingQueue(QUEUE_ITEMS, waker)
        self.retry_at = 0.0
        self.inflight: dict[int, BinlogPosition] = {}

    def step(self, now: float) -> None:
        """Start (or restart after a failure), pull, send due batches, record acknowledgements."""
        try:
            if self.sink is None and now >= self.retry_at:
                self._start()
            if self.sink is not None:
                self._pull(now)
                self._send(now)
                self._collect()
        except Exception as exc:
            self._fail(exc, now)

    def caught_up(self, sent: BinlogPosition | None) -> bool:
        """Acknowledged everything the pipeline has sent to its attached sinks."""
        return self.sink is not None and (sent is None or
                                          self.position.sort_key() >= sent.sort_key())

    def hand_over(self) -> KafkaSink:
        """Stop reading and give the (healthy, drained) client back to the pipeline."""
        assert self.sink is not None
        self._stop_reader()
        self.sink.flush(5.0)
        sink, self.sink = self.sink, None
        return sink

    def close(self) -> None:
        self._stop_reader()
        if self.sink is not None:
            self.sink.close()
            self.sink = None

    def _start(self) -> None:
        sink = self.open_sink(self.sink_spec)
        try:
            # An exactly-once sink fences its predecessor and says where its output really
            # ends: a commit whose outcome was unknown may have landed after the checkpoint.
            # (This blocks the worker loop for up to the timeout; catch-ups are rare.)
            committed = sink.committed_position(timeout_s=COMMITTED_POSITION_TIMEOUT_S)
        except BaseException:
            sink.close()
            raise
        if committed is not None:
            self.position = committed
        self.sink = sink
        self.reader = BinlogReader(f"{self.pipeline}/{self.sink_spec.id}", self.source,
                                   self.position, self.queue)
        self.reader.start()
        log.info("sink catching up pipeline=%s sink=%s from=%s", self.pipeline,
                 self.sink_spec.id, self.position)

    def _pull(self, now: float) -> None:
        if len(self.inflight) < MAX_INFLIGHT:
            self.batcher.add(take_events(self.queue, self.batcher.spec.max_events), now)

    def _send(self, now: float) -> None:
        assert self.sink is not None
        while len(self.inflight) < MAX_INFLIGHT and (batch := self.batcher.take(now)) is not None:
            self.sink.send_batch(batch.batch_id, batch.events, batch.end_position)
            self.inflight[batch.batch_id] = batch.end_position

    def _collect(self) -> None:
        assert self.sink is not None
        self.sink.poll(0.0)
        for outcome in self.sink.take_completed():
            end = self.inflight.pop(outcome.batch_id)
            if outcome.error is not None:
                raise RuntimeError(f"catch-up batch failed: {outcome.error}")
            self.position = end
            self.checkpoint(self.sink_spec.id, end, outcome.delivered)
            self.backoff.reset_after_success()

    def _fail(self, error: Exception, now: float) -> None:
        delay = self.backoff.next_delay()
        log.warning("sink catch-up failed pipeline=%s sink=%s error=%s retry_in_s=%.1f",
                    self.pipeline, self.sink_spec.id, error, delay)
        self.close()
        self.inflight.clear()
        self.batcher = Batcher(self.batcher.spec, self.batcher.split_large_transactions)
        self.queue = WakingQueue(QUEUE_ITEMS, self.waker)
        self.retry_at = now + delay

    def _stop_reader(self) -> None:
        if self.reader is not None:
            self.reader.stop()
            self.reader = None
