"""Prometheus metrics of the data plane, in multiprocess mode, updated once per batch.

Each worker writes under its slot name (``worker-3``), not its pid, so a restarted worker
continues its own files instead of piling up new ones.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

from prometheus_client import Counter, Gauge, Histogram, values

from workers.events import ChangeEvent
from workers.metric_buffer import MetricBuffer

LATENCY_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_EVENT_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2000, 5000)
STATUS_VALUES = {"running": 1.0, "paused": 0.5, "stopped": 0.0, "failed": -1.0, "pending": 0.0}


def use_process_identity(identity: str) -> None:
    """Write metric files as ``identity`` (call in the child before any metric is created)."""
    values.ValueClass = values.MultiProcessValue(process_identifier=lambda: identity)


@dataclass(frozen=True)
class _Families:
    source_events: Counter
    source_bytes: Counter
    source_reconnects: Counter
    source_errors: Counter
    decode_fallback: Counter
    source_lag: Gauge
    table_lag: Gauge
    sink_events: Counter
    sink_bytes: Counter
    sink_errors: Counter
    sink_latency: Histogram
    e2e_latency: Histogram
    batch_events: Histogram
    batch_bytes: Histogram
    checkpoints: Counter
    last_checkpoint_ts: Gauge
    sink_last_checkpoint_ts: Gauge
    sink_checkpoint_status: Gauge
    pipeline_status: Gauge
    txn_commits: Counter
    txn_aborts: Counter
    dlq_entries: Gauge
    dlq_events: Counter
    dlq_saturation: Gauge
    dlq_evicted: Counter
    dlq_rejected: Counter


@cache
def families() -> _Families:
    """The metric families, created on first use (after ``use_process_identity``)."""
    p, ps = ["pipeline"], ["pipeline", "sink"]
    return _Families(
        source_events=Counter(
            "deltaforge_source_events_total", "Row changes read", p + ["table", "op"]
        ),
        source_bytes=Counter("deltaforge_source_bytes_total", "Binlog bytes of row events", p),
        source_reconnects=Counter(
            "deltaforge_source_reconnects_total", "Binlog reconnects after a fault", p
        ),
        source_errors=Counter("deltaforge_source_errors_total", "Source failures", p + ["kind"]),
        decode_fallback=Counter(
            "deltaforge_source_decode_fallback_total",
            "Rows decoded by mysql-replication instead of the fast row decoder",
            p + ["reason"],
        ),
        source_lag=Gauge(
            "deltaforge_source_lag_seconds",
            "Now minus the source commit time of the last event handed to the sinks",
            p,
            multiprocess_mode="mostrecent",
        ),
        table_lag=Gauge(
            "deltaforge_source_table_lag_seconds",
            "Now minus the source commit time of the newest event of the table in the last batch",
            p + ["table"],
            multiprocess_mode="mostrecent",
        ),
        sink_events=Counter("deltaforge_sink_events_total", "Events acknowledged by a sink", ps),
        sink_bytes=Counter("deltaforge_sink_bytes_total", "Payload bytes acknowledged", ps),
        sink_errors=Counter("deltaforge_sink_errors_total", "Batches a sink failed", ps),
        sink_latency=Histogram(
            "deltaforge_sink_latency_seconds",
            "Batch send to last acknowledgement",
            ps,
            buckets=LATENCY_BUCKETS_S,
        ),
        e2e_latency=Histogram(
            "deltaforge_e2e_latency_seconds",
            "Source commit of a batch's first event to its acknowledgement by the sink",
            p,
            buckets=LATENCY_BUCKETS_S,
        ),
        batch_events=Histogram(
            "deltaforge_batch_events", "Events per batch", p, buckets=BATCH_EVENT_BUCKETS
        ),
        batch_bytes=Histogram(
            "deltaforge_batch_bytes",
            "Bytes per batch",
            p,
            buckets=(1e3, 1e4, 1e5, 1e6, 4e6, 16e6),
        ),
        checkpoints=Counter("deltaforge_checkpoints_total", "Per-sink checkpoint writes", p),
        last_checkpoint_ts=Gauge(
            "deltaforge_last_checkpoint_ts",
            "Unix time of the last checkpoint write",
            p,
            multiprocess_mode="mostrecent",
        ),
        sink_last_checkpoint_ts=Gauge(
            "deltaforge_sink_last_checkpoint_ts",
            "Unix time of the sink's last checkpoint write",
            ps,
            multiprocess_mode="mostrecent",
        ),
        sink_checkpoint_status=Gauge(
            "deltaforge_sink_checkpoint_status",
            "1 if the sink acknowledged its last batch, 0 if it failed",
            ps + ["required"],
            multiprocess_mode="mostrecent",
        ),
        pipeline_status=Gauge(
            "deltaforge_pipeline_status",
            "1 running, 0.5 paused, 0 stopped, -1 failed",
            p,
            multiprocess_mode="mostrecent",
        ),
        txn_commits=Counter(
            "deltaforge_sink_txn_commits_total", "Kafka transactions committed", ps
        ),
        txn_aborts=Counter("deltaforge_sink_txn_aborts_total", "Kafka transactions aborted", ps),
        dlq_entries=Gauge(
            "deltaforge_dlq_entries", "Entries in the dead-letter queue", p,
            multiprocess_mode="mostrecent",
        ),
        dlq_events=Counter(
            "deltaforge_dlq_events_total", "Events written to the dead-letter queue",
            ps + ["error_kind"],
        ),
        dlq_saturation=Gauge(
            "deltaforge_dlq_saturation_ratio", "Dead-letter entries divided by max_entries", p,
            multiprocess_mode="mostrecent",
        ),
        dlq_evicted=Counter(
            "deltaforge_dlq_evicted_total", "Oldest dead-letter entries dropped on overflow", p
        ),
        dlq_rejected=Counter(
            "deltaforge_dlq_rejected_total", "Dead-letter writes refused on overflow", p
        ),
    )


def count_decode_fallback(pipeline: str, reason: str, rows: int) -> None:
    """Rows of ``pipeline`` the library decoded instead of the fast decoder (once per rows
    event; ``workers.source.tablemap.TableShapes(on_fallback=...)`` reports them)."""
    families().decode_fallback.labels(pipeline, reason).inc(rows)


class PipelineMetrics:
    """The series of one pipeline. The data-path methods (one call per batch) gather their
    updates in a ``MetricBuffer`` written at most once a second (``flush_if_due``, which the
    worker also calls for idle pipelines) and at every status change; failures and the
    dead-letter queue are written at once.

    ``tenant`` is accepted for symmetry with DeltaForge; ``deltaforge_pipeline_info`` and
    ``deltaforge_pipeline_labels`` are rendered by the api from the stored specs.
    """

    def __init__(self, pipeline: str, tenant: str = "") -> None:
        self.pipeline = pipeline
        self.f = families()
        self.buffer = MetricBuffer()
        self._tables: dict[tuple[str, str], str] = {}  # labels of the tables read so far

    def flush_if_due(self, now: float) -> None:
        self.buffer.flush_if_due(now)

    def status(self, status: str) -> None:
        self.buffer.flush()
        self.f.pipeline_status.labels(self.pipeline).set(STATUS_VALUES[status])

    def batch_read(self, events: Sequence[ChangeEvent], size_bytes: int) -> None:
        """Counts, sizes and lags of one batch handed to the sinks (one pass over its events)."""
        counts: dict[tuple[str, str, str], int] = {}
        newest_ms: dict[tuple[str, str], int] = {}
        for event in events:  # keyed by name parts: the "db.table" label is made per table
            key = (event.db, event.table, event.op)
            counts[key] = counts.get(key, 0) + 1
            db_table = key[:2]
            if event.ts_ms > newest_ms.get(db_table, 0):
                newest_ms[db_table] = event.ts_ms
        f, buffer, pipeline = self.f, self.buffer, (self.pipeline,)
        for (db, table, op), count in counts.items():
            buffer.inc(f.source_events, (self.pipeline, self._label(db, table), op), count)
        now = time.time()
        for (db, table), ts_ms in newest_ms.items():
            label = self._label(db, table)
            buffer.set(f.table_lag, (self.pipeline, label), max(0.0, now - ts_ms / 1000))
        buffer.inc(f.source_bytes, pipeline, size_bytes)
        buffer.observe(f.batch_events, pipeline, len(events))
        buffer.observe(f.batch_bytes, pipeline, size_bytes)
        last_ms = events[-1].ts_ms if events else 0
        buffer.set(f.source_lag, pipeline, max(0.0, now - last_ms / 1000))
        buffer.flush_if_due(time.monotonic())

    def _label(self, db: str, table: str) -> str:
        """The ``db.table`` label (made once per table; the tables this pipeline has read)."""
        label = self._tables.get((db, table))
        if label is None:
            label = self._tables[db, table] = f"{db}.{table}"
        return label

    def source_progress(self, ts_ms: int | None) -> None:
        """The source passed a point with nothing for this pipeline and everything before it
        was delivered: the lag is the source's own (``ts_ms`` of its last event; None: it is
        at the end of the binlog, lag 0), for every table."""
        lag_s = 0.0 if ts_ms is None else max(0.0, time.time() - ts_ms / 1000)
        self.buffer.set(self.f.source_lag, (self.pipeline,), lag_s)
        for table in self._tables.values():
            self.buffer.set(self.f.table_lag, (self.pipeline, table), lag_s)

    def sink_acked(self, sink: str, required: bool, events: int, size: int, latency_s: float,
                   first_ts_ms: int) -> None:
        f, buffer, labels = self.f, self.buffer, (self.pipeline, sink)
        buffer.inc(f.sink_events, labels, events)
        buffer.inc(f.sink_bytes, labels, size)
        buffer.observe(f.sink_latency, labels, latency_s)
        buffer.observe(f.e2e_latency, (self.pipeline,), max(0.0, time.time() - first_ts_ms / 1000))
        buffer.set(f.sink_checkpoint_status, (self.pipeline, sink, str(required).lower()), 1)

    def sink_failed(self, sink: str, required: bool) -> None:
        self.buffer.set(self.f.sink_checkpoint_status,
                        (self.pipeline, sink, str(required).lower()), 0)
        self.buffer.flush()
        self.f.sink_errors.labels(self.pipeline, sink).inc()

    def transaction(self, sink: str, committed: bool) -> None:
        family = self.f.txn_commits if committed else self.f.txn_aborts
        self.buffer.inc(family, (self.pipeline, sink))

    def checkpointed(self, count: int, sink: str | None = None) -> None:
        now = time.time()
        self.buffer.inc(self.f.checkpoints, (self.pipeline,), count)
        self.buffer.set(self.f.last_checkpoint_ts, (self.pipeline,), now)
        if sink is not None:
            self.buffer.set(self.f.sink_last_checkpoint_ts, (self.pipeline, sink), now)

    def source_error(self, kind: str) -> None:
        self.f.source_errors.labels(self.pipeline, kind).inc()

    def reconnected(self, count: int) -> None:
        if count:
            self.f.source_reconnects.labels(self.pipeline).inc(count)

    # ---- dead-letter queue (called by the DLQ writer, once per batch it writes) ----------

    def dlq_written(self, sink: str, kind: str, entries: int, max_entries: int,
                    count: int = 1) -> None:
        """``count`` events of ``kind`` set aside for ``sink``; the queue now holds ``entries``."""
        self.f.dlq_events.labels(self.pipeline, sink, kind).inc(count)
        self.dlq_size(entries, max_entries)

    def dlq_size(self, entries: int, max_entries: int) -> None:
        """The queue's length after a write, purge, ack or at start."""
        self.f.dlq_entries.labels(self.pipeline).set(entries)
        ratio = entries / max_entries if max_entries > 0 else 0.0
        self.f.dlq_saturation.labels(self.pipeline).set(ratio)

    def dlq_evicted(self, count: int) -> None:
        """``count`` oldest entries dropped to make room (overflow policy drop_oldest)."""
        if count:
            self.f.dlq_evicted.labels(self.pipeline).inc(count)

    def dlq_rejected(self, count: int = 1) -> None:
        """Writes refused because the queue is full (overflow policy reject)."""
        if count:
            self.f.dlq_rejected.labels(self.pipeline).inc(count)
