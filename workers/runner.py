"""PipelineRunner: one pipeline inside a worker, driven step by step by the worker's data loop.

Lifecycle: starting (positions resolved and sinks checked off the loop) -> running ->
failed (retried with capped backoff from the checkpoints) -> ... -> stopped.
Checkpoints: a sink's position moves only when it acknowledged a batch and every batch
before it, and it is the position AFTER the batch's last event.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec

from state.records import (
    ActualStatus,
    BinlogPosition,
    CheckpointRecord,
    StatusRecord,
    TableSchemaRecord,
    min_position,
)
from state.spec import KafkaConfigSpec, PipelineSpec
from state.stores import CheckpointStore, DlqStore, SchemaStore
from state.writer import GroupCommitWriter
from workers.backoff import Backoff
from workers.batching import Batch, Batcher
from workers.catchup import SinkCatchup
from workers.dlq import DeadLetterQueue, DlqFullError
from workers.events import ChangeEvent
from workers.metrics import PipelineMetrics
from workers.sinks.batches import BatchOutcome
from workers.sinks.errors import SinkEventError
from workers.sinks.kafka import KafkaSink
from workers.sinks.kafka_txn import TransactionalKafkaSink
from workers.source.errors import SourceError
from workers.source.items import Progress, take_events
from workers.source.mysql import BinlogReader, current_binlog_end
from workers.source.reachability import verify_position
from workers.source.shared import StreamRegistry, Subscription
from workers.waker import Wake, WakingQueue

log = logging.getLogger(__name__)
SOURCE_QUEUE_ITEMS = 256
SINK_CONNECT_TIMEOUT_S = 10.0
STATUS_WRITE_INTERVAL_S = 1.0
IDLE_CHECKPOINT_INTERVAL_S = 5.0


class PipelineFailure(Exception):
    """Why a pipeline stopped delivering; it is retried with backoff."""


@dataclass
class SinkState:
    """One sink of a running pipeline and where it stands."""

    sink: KafkaSink
    position: BinlogPosition
    catchup: SinkCatchup | None = None  # set while a failed sink re-delivers on its own

    @property
    def detached(self) -> bool:
        return self.catchup is not None


@dataclass
class InFlight:
    batch: Batch
    pending_sinks: set[str]
    ok_sinks: set[str] = field(default_factory=set)
    # (send id, sink id) of sends awaiting acks; a send id of None: not sent yet. A batch
    # whose sink rejected an event is sent in parts (the rest after the event set aside).
    parts: set[tuple[int | None, str]] = field(default_factory=set)


@dataclass
class SinkWork:
    """Events of a batch still to send to one sink, after setting ``rejected`` aside."""

    sink_id: str
    events: list[ChangeEvent]
    part_id: int
    rejected: SinkEventError | None = None


@dataclass
class Unsent:
    """The batch being sent; it waits here while a full ``block`` DLQ makes no room."""

    entry: InFlight
    work: list[SinkWork]


class PipelineRunner:
    """Runs one pipeline: source reader, batcher, sinks, checkpoints, status."""

    def __init__(self, spec: PipelineSpec, generation: int, slot: int, checkpoints: CheckpointStore,
                 writer: GroupCommitWriter, wake: Wake, sources: StreamRegistry) -> None:
        self.spec = spec
        self.sources = sources
        self.name = spec.name
        self.generation = generation
        self.slot = slot
        self.checkpoints = checkpoints
        self.writer = writer
        self.wake = wake
        self.metrics = PipelineMetrics(self.name, spec.metadata.tenant)
        self.backoff = Backoff(initial_s=1.0, max_s=60.0)
        self.state = "starting"
        self.status = StatusRecord(name=self.name, worker=slot, worker_pid=os.getpid(),
                                   generation=generation)
        self._starter: threading.Thread | None = None
        self._started: tuple[dict[str, SinkState], BinlogPosition] | None = None
        self._start_error: BaseException | None = None
        self._reset_data_path()
        self._status_written_at = 0.0
        self._status_dirty = False  # counters changed since the status was last written
        self._unwritten_events = 0  # sent since the status record was last replaced
        self._last_event_ts_ms = 0
        journal = spec.spec.journal
        self.dlq = DeadLetterQueue(self.name, journal, DlqStore(checkpoints.state), writer,
                                   self.metrics) if journal.enabled else None
        self.schemas = SchemaStore(checkpoints.state)
        self.known_tables: dict[str, TableSchemaRecord] = {}
        self._part_ids = itertools.count(-1, -1)  # ids of extra sends, apart from batch ids

    # ---- lifecycle -------------------------------------------------------------------

    def _reset_data_path(self) -> None:
        self.sinks: dict[str, SinkState] = {}
        self.reader: BinlogReader | Subscription | None = None
        self.queue: WakingQueue = WakingQueue(SOURCE_QUEUE_ITEMS, self.wake)
        self.progress: Progress | None = None  # the source passed here with nothing for us
        self._idle_checkpoint_at = 0.0
        self._lag_reported_ms = 0
        exactly_once = any(sink.config.exactly_once for sink in self.spec.spec.sinks)
        self.batcher = Batcher(self.spec.spec.batch, split_large_transactions=not exactly_once)
        self.inflight: deque[InFlight] = deque()
        self.unsent: Unsent | None = None
        self.sent_position: BinlogPosition | None = None
        self.next_retry_at: float | None = None

    def begin_start(self) -> None:
        """Resolve positions and check sinks in a side thread; ``step`` picks up the result."""
        self.state = "starting"
        self._started, self._start_error = None, None
        self._starter = threading.Thread(target=self._prepare, name=f"start-{self.name}",
                                         daemon=True)
        self._starter.start()

    def _prepare(self) -> None:
        try:
            self._started = self._open_sinks_and_position()
        except BaseException as exc:  # reported to the loop, which fails the pipeline
            self._start_error = exc
        self.wake.set()

    def _open_sinks_and_position(self) -> tuple[dict[str, SinkState], BinlogPosition]:
        stored = self.checkpoints.for_pipeline(self.name)
        source = self.spec.spec.source.config
        complete = all(sink_id in stored for sink_id in self.spec.sink_ids())
        fresh = None if complete else current_binlog_end(source)
        sinks: dict[str, SinkState] = {}
        try:
            for sink_spec in self.spec.spec.sinks:
                sink = open_sink(self.name, self.spec.metadata.tenant, sink_spec.config,
                                 self.wake.set)
                sinks[sink.sink_id] = SinkState(sink, self._initial(stored, sink.sink_id, fresh))
                sink.check_connection(timeout_s=SINK_CONNECT_TIMEOUT_S)
                committed = sink.committed_position(timeout_s=SINK_CONNECT_TIMEOUT_S)
                if committed is not None:
                    sinks[sink.sink_id].position = committed
            start = min_position([s.position for s in sinks.values()])
            assert start is not None
            if start != fresh:
                verify_position(source, start)
        except BaseException:
            for state in sinks.values():
                state.sink.close()
            raise
        for sink_id, state in sinks.items():
            if sink_id not in stored:
                self._write_checkpoint(sink_id, state.position, events=0)
        return sinks, start

    @staticmethod
    def _initial(stored: dict[str, CheckpointRecord], sink_id: str,
                 fresh: BinlogPosition | None) -> BinlogPosition:
        if sink_id in stored:
            return stored[sink_id].position
        assert fresh is not None
        return fresh

    def _finish_start(self, now: float) -> None:
        if self._start_error is not None:
            self.fail(self._start_error, now)
            return
        if self._started is None:
            return
        self.sinks, start = self._started
        self.reader = self.sources.open(self.name, self.spec.spec.source.config, start,
                                        self.queue)
        self.reader.start()
        self.state = "running"
        self.dlq_blocked = False
        self._set_status(now, status="running", started_at=time.time(), next_retry_at=None)
        log.info("pipeline running pipeline=%s worker=%d start=%s", self.name, self.slot, start)

    def fail(self, error: BaseException, now: float) -> None:
        """Stop the data path and schedule a retry from the checkpoints."""
        message = _describe(error)
        delay = self.backoff.next_delay()
        log.error("pipeline failed pipeline=%s error=%s retry_in_s=%.1f", self.name, message, delay)
        if isinstance(error, SourceError):
            self.metrics.source_error(type(error).__name__)
        self._close_data_path()
        self.state = "failed"
        self.next_retry_at = now + delay
        self._set_status(now, status="failed", last_error=message,
                         next_retry_at=time.time() + delay, restarts=self.status.restarts + 1)

    def drain(self, deadline: float, final_status: ActualStatus = "stopped",
              keepalive: Callable[[], None] = lambda: None) -> None:
        """Graceful stop: stop reading, deliver whole transactions, checkpoint, close.
        ``keepalive`` is called about once a second while it waits (the worker's heartbeat)."""
        self._abandon_start(deadline)
        if self.state == "running":
            if self.reader is not None:
                self.reader.stop()
            self._pull_source(time.monotonic(), budget=1_000_000)
            while self.unsent is None and (
                    batch := self.batcher.take(time.monotonic(), force=True)) is not None:
                self._send(batch)
            while self.inflight and self._awaiting_acks() and time.monotonic() < deadline:
                self._collect(time.monotonic(), poll_s=0.05)
                keepalive()
            if self.progress is not None:
                self._idle_checkpoint_at = 0.0  # due now: the next start begins there
                self._checkpoint_idle(time.monotonic(), self.progress)
        self._close_data_path(deadline, keepalive)
        self.state = final_status
        self._set_status(time.monotonic(), status=final_status)

    def _abandon_start(self, deadline: float) -> None:
        """A start in progress finishes first (its steps have their own timeouts), so that it
        writes no checkpoint after the drain; what it opened is then closed."""
        if self._starter is not None:
            self._starter.join(max(0.0, deadline - time.monotonic()))
        if self.state == "starting" and self._started is not None:
            for state in self._started[0].values():
                state.sink.close()
            self._started = None

    def _close_data_path(self, flush_deadline: float | None = None,
                         keepalive: Callable[[], None] = lambda: None) -> None:
        """Stop reading and close the sinks, first waiting for their delivery reports until
        ``flush_deadline`` (none: close at once)."""
        if self.reader is not None:
            self.metrics.reconnected(self.reader.reconnects)
            self.reader.stop()
        for state in self.sinks.values():
            if state.catchup is not None:
                state.catchup.close()  # its sink was closed when it was detached
                continue
            while flush_deadline is not None and (left_s := flush_deadline - time.monotonic()) > 0:
                if state.sink.flush(min(1.0, left_s)):
                    break
                keepalive()
            state.sink.close()
        self._reset_data_path()

    # ---- the data loop -----------------------------------------------------------------

    def step(self, now: float) -> None:
        """One pass: pick up a start, pull source items, send due batches, collect acks."""
        try:
            if self.state == "starting":
                self._finish_start(now)
            elif self.state == "failed" and now >= (self.next_retry_at or 0.0):
                self.begin_start()
            if self.state == "running":
                self._run_once(now)
                self._step_catchups(now)
        except Exception as exc:
            self.fail(exc, now)
        if self._status_dirty and now - self._status_written_at >= STATUS_WRITE_INTERVAL_S:
            self._set_status(now)

    def _run_once(self, now: float) -> None:
        if self.dlq is not None:
            self.dlq.expire_old(now)
        if self.unsent is not None:
            self._resume_unsent(now)
        if self._can_send():  # else the source backs up: nothing could be sent
            self._pull_source(now, budget=self.spec.spec.batch.max_events)
            while (batch := self.batcher.take(now)) is not None:
                self._send(batch)
                if not self._can_send():
                    break
        self._collect(now, poll_s=0.0)
        if self.progress is not None:
            self._checkpoint_idle(now, self.progress)

    def _can_send(self) -> bool:
        """Room for another batch: below ``max_inflight`` and every attached sink's client
        buffer has room (else the batch waits here and the source backs up)."""
        return (self.unsent is None and len(self.inflight) < self.spec.spec.batch.max_inflight
                and self._sinks_have_room())

    def _sinks_have_room(self) -> bool:
        return all(state.sink.has_room() for state in self.sinks.values() if not state.detached)

    def _pull_source(self, now: float, budget: int) -> None:
        self.batcher.add(take_events(self.queue, budget, self._record_table, self._on_progress),
                         now)

    def _on_progress(self, progress: Progress | None) -> None:
        self.progress = progress

    def _checkpoint_idle(self, now: float, progress: Progress) -> None:
        """Nothing of ours is buffered or unacknowledged and the source passed ``progress``:
        sinks checkpoint there (every few seconds), so a restart does not re-read what other
        tables wrote meanwhile, and the lag is the source's."""
        if self.batcher.pending_events() or self.inflight or self.unsent is not None:
            return
        if progress.ts_ms != self._lag_reported_ms:
            self._lag_reported_ms = progress.ts_ms
            self.metrics.source_progress(None if progress.at_end else progress.ts_ms)
        if now - self._idle_checkpoint_at < IDLE_CHECKPOINT_INTERVAL_S:
            return
        self._idle_checkpoint_at = now
        cutoff = progress.position.sort_key()
        for sink_id, state in self.sinks.items():
            if state.detached or state.sink.transactional:
                continue  # exactly-once positions move only inside a transaction with data
            if state.position.sort_key() < cutoff:
                state.position = progress.position
                self._write_checkpoint(sink_id, progress.position, events=0)

    def _send(self, batch: Batch) -> None:
        self.metrics.batch_read(batch.events, batch.size_bytes)
        entry = InFlight(batch, set())
        self.inflight.append(entry)
        work: list[SinkWork] = []
        for sink_id, state in self.sinks.items():
            events = [] if state.detached else _after(batch.events, state.position)
            if not events:
                if not state.detached:
                    entry.ok_sinks.add(sink_id)
                continue
            entry.pending_sinks.add(sink_id)
            entry.parts.add((None, sink_id))
            work.append(SinkWork(sink_id, events, batch.batch_id))
        self.unsent = Unsent(entry, work)
        self._send_unsent()
        self.sent_position = batch.end_position
        self._unwritten_events += len(batch.events)  # into the status when it is next written
        self._last_event_ts_ms = batch.events[-1].ts_ms
        self._status_dirty = True

    def _send_unsent(self) -> None:
        """Send what is left of the current batch, setting rejected events aside first."""
        unsent = self.unsent
        assert unsent is not None
        while unsent.work:
            work = unsent.work[0]
            if work.rejected is not None and not self._dead_letter(work.sink_id, work.rejected):
                return  # DLQ full under ``block``: wait for an ack or purge
            unsent.work.pop(0)
            self._send_part(unsent, work)
        self.unsent = None
        if self.dlq_blocked:
            self.dlq_blocked = False
            self._set_status(time.monotonic(), last_error=None)
            log.info("dlq has room again, pipeline continues pipeline=%s", self.name)

    def _send_part(self, unsent: Unsent, work: SinkWork) -> None:
        entry, sink_id, state = unsent.entry, work.sink_id, self.sinks[work.sink_id]
        entry.parts.discard((None, sink_id))
        if state.detached:
            return  # failed while the batch waited; it catches up on its own
        entry.parts.add((work.part_id, sink_id))
        try:
            state.sink.send_batch(work.part_id, work.events, entry.batch.end_position)
        except SinkEventError as exc:
            if self.dlq is None:
                raise PipelineFailure(
                    f"sink {sink_id} rejected event {exc.event.event_id} "
                    f"({exc.kind}): {exc.message}; enable the dead-letter queue to set it aside"
                ) from exc
            rest = work.events[exc.index + 1:]
            if state.sink.transactional:  # the transaction was aborted: re-send all but it
                entry.parts.discard((work.part_id, sink_id))
                rest = work.events[:exc.index] + rest
            entry.parts.add((None, sink_id))
            unsent.work.insert(0, SinkWork(sink_id, rest, next(self._part_ids), exc))

    def _dead_letter(self, sink_id: str, error: SinkEventError) -> bool:
        """Set a rejected event aside; False when a full ``block`` DLQ makes the batch wait."""
        assert self.dlq is not None
        try:
            self.dlq.add(sink_id, error)
        except DlqFullError as exc:
            if self.dlq.policy != "block":
                raise PipelineFailure(
                    f"sink {sink_id} rejected event {error.event.event_id} ({error.kind}): "
                    f"{error.message}; {exc}: the event was not set aside, so the pipeline "
                    "stops here; ack or purge DLQ entries") from exc
            if not self.dlq_blocked:
                self.dlq_blocked = True
                log.warning("dlq full, pipeline waits for ack pipeline=%s", self.name)
                self._set_status(time.monotonic(), last_error=f"dlq full, waiting for ack: {exc}")
            return False
        return True

    def _resume_unsent(self, now: float) -> None:
        if self.dlq is None or self.dlq.has_room(now):
            self._send_unsent()

    def _awaiting_acks(self) -> bool:
        """Sends await acks (a batch waiting for DLQ room awaits none until it continues)."""
        return self.unsent is None or any(
            part_id is not None for entry in self.inflight for part_id, _ in entry.parts)

    def _record_table(self, record: TableSchemaRecord) -> None:
        """Store a table version the first time this pipeline meets it (version + 1)."""
        key = SchemaStore.key(self.name, record.database, record.table)
        known = self.known_tables.get(key) or self.schemas.get(key)
        if known is not None and known.fingerprint == record.fingerprint:
            self.known_tables[key] = known
            return
        version = 1 if known is None else known.version + 1
        record = msgspec.structs.replace(record, version=version)
        self.writer.put("schemas", key, record)
        self.known_tables[key] = record
        log.info("table schema recorded pipeline=%s table=%s.%s version=%d fingerprint=%s",
                 self.name, record.database, record.table, version, record.fingerprint)

    def _collect(self, now: float, poll_s: float) -> None:
        """Record completed batches. The worker's loop polls the producers and a completed
        batch wakes this pipeline; ``poll_s`` > 0 (a drain) polls here and waits that long."""
        for sink_id, state in self.sinks.items():
            if state.detached:
                continue
            if poll_s:
                state.sink.poll(poll_s if len(self.sinks) == 1 else 0.0)
            for outcome in state.sink.take_completed():
                self._record_outcome(sink_id, state, outcome)
                if state.detached:
                    break
        while self.inflight and not self.inflight[0].pending_sinks:
            self._settle(self.inflight.popleft())

    def _record_outcome(self, sink_id: str, state: SinkState, outcome: BatchOutcome) -> None:
        entry = self._take_part(sink_id, outcome.batch_id)
        if entry is None:
            return  # an aborted transaction, re-sent without the event it rejected
        if outcome.error is None and any(sid == sink_id for _, sid in entry.parts):
            return  # more parts of this batch are on their way to this sink
        entry.pending_sinks.discard(sink_id)
        required = state.sink.required
        if state.sink.transactional:
            self.metrics.transaction(sink_id, committed=outcome.error is None)
        if outcome.error is None:
            self.backoff.reset_after_success()
            entry.ok_sinks.add(sink_id)
            state.position = entry.batch.end_position
            self._write_checkpoint(sink_id, state.position, events=outcome.delivered)
            self.metrics.sink_acked(sink_id, required, outcome.delivered, outcome.bytes,
                                    outcome.latency_s, entry.batch.events[0].ts_ms)
            return
        self.metrics.sink_failed(sink_id, required)
        errors = dict(self.status.sink_errors)
        errors[sink_id] = errors.get(sink_id, 0) + 1
        last = dict(self.status.sink_last_error)
        last[sink_id] = outcome.error
        self._set_status(time.monotonic(), sink_errors=errors, sink_last_error=last)
        log.warning("sink failed pipeline=%s sink=%s required=%s error=%s",
                    self.name, sink_id, required, outcome.error)
        self._detach(sink_id, state)

    def _take_part(self, sink_id: str, part_id: int) -> InFlight | None:
        for entry in self.inflight:
            if (part_id, sink_id) in entry.parts:
                entry.parts.discard((part_id, sink_id))
                return entry
        return None

    def _detach(self, sink_id: str, state: SinkState) -> None:
        """Stop sending to a failed sink; unless the policy then fails the pipeline, it catches
        up on its own from its checkpoint and rejoins."""
        for entry in self.inflight:
            entry.pending_sinks.discard(sink_id)
        state.sink.close()
        spec = next(s.config for s in self.spec.spec.sinks if s.config.id == sink_id)
        tenant = self.spec.metadata.tenant
        state.catchup = SinkCatchup(
            self.name, self.spec.spec.source.config, spec, state.position,
            Batcher(self.spec.spec.batch, self.batcher.split_large_transactions),
            lambda sink_spec: open_sink(self.name, tenant, sink_spec, self.wake.set),
            self._write_checkpoint, self.wake)
        state.catchup.retry_at = time.monotonic() + state.catchup.backoff.next_delay()

    def _step_catchups(self, now: float) -> None:
        for sink_id, state in self.sinks.items():
            if state.catchup is None:
                continue
            state.catchup.step(now)
            if state.catchup.caught_up(self.sent_position):
                state.position = state.catchup.position
                state.sink, state.catchup = state.catchup.hand_over(), None
                log.info("sink caught up and rejoined pipeline=%s sink=%s position=%s",
                         self.name, sink_id, state.position)

    def _settle(self, entry: InFlight) -> None:
        policy = self.spec.spec.commit_policy
        ok = entry.ok_sinks
        required = {sid for sid, s in self.sinks.items() if s.sink.required}
        if policy.mode == "all":
            satisfied = ok == set(self.sinks)
        elif policy.mode == "quorum":
            satisfied = len(ok) >= (policy.quorum or 1)
        else:
            satisfied = required <= ok
        if not satisfied:
            failed = sorted(set(self.sinks) - ok)
            detail = "; ".join(f"{s}: {self.status.sink_last_error.get(s, '?')}" for s in failed)
            raise PipelineFailure(f"commit policy {policy.mode} not met by batch "
                                  f"{entry.batch.batch_id}: {detail}")

    def _write_checkpoint(self, sink_id: str, position: BinlogPosition, events: int) -> None:
        record = CheckpointRecord(self.name, sink_id, position, time.time(), events)
        self.writer.put("checkpoints", CheckpointStore.key(self.name, sink_id), record)
        self.metrics.checkpointed(1, sink_id)

    # ---- status ------------------------------------------------------------------------

    def next_wakeup_s(self, now: float) -> float:
        """How long the loop may sleep for this pipeline's sake."""
        if self.unsent is not None and not self._awaiting_acks():
            return 0.25  # waiting for DLQ room: re-checked a few times a second
        if self.inflight:
            return 0.25  # a completed batch wakes the pipeline; this is a safety net
        if self.state == "running" and not self._sinks_have_room():
            return 0.05  # others' messages fill the shared client buffer: check again soon
        if any(state.catchup is not None for state in self.sinks.values()):
            return 0.05
        if self.state == "failed" and self.next_retry_at is not None:
            return max(0.0, self.next_retry_at - now)
        deadline = self.batcher.deadline()
        return 1.0 if deadline is None else max(0.0, deadline - now)

    def _set_status(self, now: float, write: bool = True, **changes: object) -> None:
        """Change the status; lifecycle changes are written now, counters at most once a second."""
        if "status" in changes:
            self.metrics.status(str(changes["status"]))
        if self._unwritten_events:
            changes["events_total"] = self.status.events_total + self._unwritten_events
            changes["last_event_ts_ms"] = self._last_event_ts_ms
            self._unwritten_events = 0
        self.status = msgspec.structs.replace(self.status, updated_at=time.time(), **changes)
        self._status_dirty = not write
        if write:
            self.writer.put("status", self.name, self.status)
            self._status_written_at = now


def open_sink(pipeline: str, tenant: str, spec: KafkaConfigSpec,
              on_batch_done: Callable[[], None]) -> KafkaSink:
    """The at-least-once sink, or the transactional one for ``exactly_once: true``."""
    kind = TransactionalKafkaSink if spec.exactly_once else KafkaSink
    return kind(pipeline, tenant, spec, on_batch_done=on_batch_done)


def _after(events: list[ChangeEvent], position: BinlogPosition) -> list[ChangeEvent]:
    """Events past ``position`` (a sink that is ahead skips what it already has)."""
    cutoff = position.sort_key()
    if events[0].position.sort_key() > cutoff:
        return events
    return [e for e in events if e.position.sort_key() > cutoff]


def _describe(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    if isinstance(error, PipelineFailure | SourceError):
        return text
    return f"{type(error).__name__}: {text}"
