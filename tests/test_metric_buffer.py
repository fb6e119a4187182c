"""A flushed ``MetricBuffer`` writes exactly what updating each series directly would have."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from workers.metric_buffer import MetricBuffer


@pytest.fixture
def metrics_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    saved = values.ValueClass
    values.ValueClass = values.MultiProcessValue(process_identifier=lambda: "worker-0")
    yield tmp_path
    values.ValueClass = saved


def exposed(path: Path) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, str(path))
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(generate_latest(registry).decode())
            for s in family.samples}


def test_a_flush_writes_what_direct_updates_write(metrics_dir: Path) -> None:
    registry = CollectorRegistry()
    events = Counter("t_events", "e", ["pipeline"], registry=registry)
    lag = Gauge("t_lag", "l", ["pipeline"], multiprocess_mode="mostrecent", registry=registry)
    latency = Histogram("t_latency", "h", ["pipeline"], buckets=(0.01, 0.1, 1.0),
                        registry=registry)
    rng = random.Random(7)
    buffer = MetricBuffer()
    for _ in range(500):
        amount, value, seconds = rng.randint(1, 9), rng.random(), rng.choice(
            [0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 3.0, rng.expovariate(3)])  # bounds exactly too
        events.labels("direct").inc(amount)
        lag.labels("direct").set(value)
        latency.labels("direct").observe(seconds)
        buffer.inc(events, ("buffered",), amount)
        buffer.set(lag, ("buffered",), value)
        buffer.observe(latency, ("buffered",), seconds)
    assert not [value for (_, labels), value in exposed(metrics_dir).items()
                if ("pipeline", "buffered") in labels and value]  # nothing before the flush
    buffer.flush()
    samples = exposed(metrics_dir)
    direct = {(name, frozenset(dict(labels, pipeline="x").items())): value
              for (name, labels), value in samples.items() if ("pipeline", "direct") in labels}
    buffered = {(name, frozenset(dict(labels, pipeline="x").items())): value
                for (name, labels), value in samples.items() if ("pipeline", "buffered") in labels}
    assert len(direct) == 1 + 1 + 4 + 2  # counter, gauge, 4 buckets, _count and _sum
    assert buffered.keys() == direct.keys()
    for key, value in direct.items():
        assert buffered[key] == pytest.approx(value)
    buffer.flush()  # an empty flush changes nothing
    assert exposed(metrics_dir) == samples
