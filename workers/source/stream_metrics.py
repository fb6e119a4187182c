"""Metrics of the worker's shared binlog streams, reported about once a second by the loop."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Protocol

from prometheus_client import Counter, Gauge

STATES = ("attached", "waiting", "catching_up")


class StreamView(Protocol):
    label: str
    detaches: int

    @property
    def reconnects(self) -> int: ...

    def counts(self) -> dict[str, int]: ...

    def lag_s(self, now_wall: float) -> float: ...


@dataclass(frozen=True)
class _StreamFamilies:
    pipelines: Gauge
    lag: Gauge
    detaches: Counter
    reconnects: Counter


@cache
def _families() -> _StreamFamilies:
    labels = ["worker", "stream"]
    return _StreamFamilies(
        pipelines=Gauge(
            "deltaforge_stream_pipelines",
            "Pipelines of a shared binlog stream: attached, waiting for the stream to reach "
            "their position, or catching up on a reader of their own",
            labels + ["state"],
            multiprocess_mode="liveall",
        ),
        lag=Gauge(
            "deltaforge_stream_lag_seconds",
            "Now minus the source time of the last event a shared stream read (0 at the end)",
            labels,
            multiprocess_mode="liveall",
        ),
        detaches=Counter(
            "deltaforge_stream_detaches_total",
            "Pipelines moved off a shared stream onto a reader of their own (queue full)",
            labels,
        ),
        reconnects=Counter(
            "deltaforge_stream_reconnects_total", "Shared binlog stream reconnects", labels
        ),
    )


class StreamMetrics:
    """Reports each stream's gauges, and the counters' growth since the last report."""

    def __init__(self, worker: str) -> None:
        self.worker = worker
        self._seen: dict[str, StreamView] = {}
        self._reported: dict[tuple[int, str], int] = {}  # by stream object: a new one restarts

    def report(self, streams: list[StreamView], now_wall: float) -> None:
        f = _families()
        live = {stream.label: stream for stream in streams}
        for label in set(self._seen) - set(live):  # ended: its pipelines are gone from it
            for state in STATES:
                f.pipelines.labels(self.worker, label, state).set(0)
            f.lag.labels(self.worker, label).set(0)
        self._seen = live
        for label, stream in live.items():
            for state, count in stream.counts().items():
                f.pipelines.labels(self.worker, label, state).set(count)
            f.lag.labels(self.worker, label).set(stream.lag_s(now_wall))
            self._count(f.detaches, stream, "detaches", stream.detaches)
            self._count(f.reconnects, stream, "reconnects", stream.reconnects)

    def _count(self, counter: Counter, stream: StreamView, name: str, total: int) -> None:
        key = (id(stream), name)
        before = self._reported.get(key, 0)
        if total > before:
            counter.labels(self.worker, stream.label).inc(total - before)
        self._reported[key] = total
