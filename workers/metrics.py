"""Prometheus metrics of the data plane, in multiprocess mode, updated once per batch.

Each worker writes under its slot name (``worker-3``), not its pid, so a restarted worker
continues its own files instead of piling up new ones.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from dataclasses import dataclass
from functools import cache

from prometheus_client import Counter, Gauge, Histogram, values

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
    source_lag: Gauge
    sink_events: Counter
    sink_bytes: Counter
    sink_errors: Counter
    sink_latency: Histogram
    e2e_latency: Histogram
    batch_events: Histogram
    batch_bytes: Histogram
    checkpoints: Counter
    last_checkpoint_ts: Gauge
    sink_checkpoint_status: Gauge
    pipeline_status: Gauge
    pipeline_info: Gauge
    txn_commits: Counter
    txn_aborts: Counter


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
        source_lag=Gauge(
            "deltaforge_source_lag_seconds",
            "Now minus the source commit time of the last event handed to the sinks",
            p,
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
        pipeline_info=Gauge(
            "deltaforge_pipeline_info",
            "Always 1; join on it for the tenant",
            p + ["tenant"],
            multiprocess_mode="mostrecent",
        ),
        txn_commits=Counter(
            "deltaforge_sink_txn_commits_total", "Kafka transactions committed", ps
        ),
        txn_aborts=Counter("deltaforge_sink_txn_aborts_total", "Kafka transactions aborted", ps),
    )


class PipelineMetrics:
    """The series of one pipeline; every method is called once per batch or lifecycle step."""

    def __init__(self, pipeline: str, tenant: str) -> None:
        self.pipeline = pipeline
        self.f = families()
        self.f.pipeline_info.labels(pipeline, tenant).set(1)

    def status(self, status: str) -> None:
        self.f.pipeline_status.labels(self.pipeline).set(STATUS_VALUES[status])

    def batch_read(self, tally: Tally[tuple[str, str]], size_bytes: int, last_ts_ms: int) -> None:
        for (table, op), count in tally.items():
            self.f.source_events.labels(self.pipeline, table, op).inc(count)
        events = sum(tally.values())
        self.f.source_bytes.labels(self.pipeline).inc(size_bytes)
        self.f.batch_events.labels(self.pipeline).observe(events)
        self.f.batch_bytes.labels(self.pipeline).observe(size_bytes)
        self.f.source_lag.labels(self.pipeline).set(max(0.0, time.time() - last_ts_ms / 1000))

    def sink_acked(self, sink: str, required: bool, events: int, size: int, latency_s: float,
                   first_ts_ms: int) -> None:
        self.f.sink_events.labels(self.pipeline, sink).inc(events)
        self.f.sink_bytes.labels(self.pipeline, sink).inc(size)
        self.f.sink_latency.labels(self.pipeline, sink).observe(latency_s)
        self.f.e2e_latency.labels(self.pipeline).observe(max(0.0, time.time() - first_ts_ms / 1000))
        self.f.sink_checkpoint_status.labels(self.pipeline, sink, str(required).lower()).set(1)

    def sink_failed(self, sink: str, required: bool) -> None:
        self.f.sink_errors.labels(self.pipeline, sink).inc()
        self.f.sink_checkpoint_status.labels(self.pipeline, sink, str(required).lower()).set(0)

    def transaction(self, sink: str, committed: bool) -> None:
        family = self.f.txn_commits if committed else self.f.txn_aborts
        family.labels(self.pipeline, sink).inc()

    def checkpointed(self, count: int) -> None:
        self.f.checkpoints.labels(self.pipeline).inc(count)
        self.f.last_checkpoint_ts.labels(self.pipeline).set(time.time())

    def source_error(self, kind: str) -> None:
        self.f.source_errors.labels(self.pipeline, kind).inc()

    def reconnected(self, count: int) -> None:
        if count:
            self.f.source_reconnects.labels(self.pipeline).inc(count)
