"""The fast /metrics renderer against prometheus_client's own multiprocess merge.

Three "processes" write the same families (every gauge mode the code uses, counters,
histograms, overlapping label sets) into one directory; ``api.exposition`` must expose exactly
the samples ``MultiProcessCollector`` + ``generate_latest`` expose, minus deleted pipelines.
"""

from __future__ import annotations

import glob
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from api.exposition import Exposition

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
PIPELINES = ["a", "b", "c-\"quoted\"\\"]


@pytest.fixture
def metrics_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    saved = values.ValueClass
    yield tmp_path
    values.ValueClass = saved


def write_process(identity: str, seed: int) -> None:
    """One process's series, as the workers and the supervisor write them."""
    values.ValueClass = values.MultiProcessValue(process_identifier=lambda: identity)
    rng = random.Random(seed)
    registry = CollectorRegistry()
    events = Counter("df_events", "Events\nper table", ["pipeline", "table"], registry=registry)
    lag = Gauge("df_lag_seconds", "Lag", ["pipeline"], multiprocess_mode="mostrecent",
                registry=registry)
    stamp = Gauge("df_checkpoint_ts", "Time", ["pipeline"], multiprocess_mode="mostrecent",
                  registry=registry)
    attached = Gauge("df_attached", "Attached", ["worker"], multiprocess_mode="liveall",
                     registry=registry)
    peak = Gauge("df_peak", "Peak", ["pipeline"], multiprocess_mode="max", registry=registry)
    latency = Histogram("df_latency_seconds", "Latency", ["pipeline"],
                        buckets=(0.001, 0.01, 0.1, 1, 10), registry=registry)
    for pipeline in PIPELINES:
        events.labels(pipeline, "db.t").inc(rng.randint(1, 100))
        lag.labels(pipeline).set(rng.random())
        stamp.labels(pipeline).set(1_795_796_893.5 + rng.random())  # Go-style exponent
        peak.labels(pipeline).set(rng.random())
        for _ in range(20):
            latency.labels(pipeline).observe(rng.expovariate(5))
    attached.labels(identity).set(rng.randint(0, 9))


def samples(text: str) -> Samples:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_same_samples_as_prometheus_client(metrics_dir: Path) -> None:
    for seed, identity in enumerate(["worker-0", "worker-1", "supervisor"]):
        write_process(identity, seed)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, str(metrics_dir))
    library = generate_latest(registry).decode()
    expected = samples(library)
    files = sorted(glob.glob(str(metrics_dir / "*.db")))
    exposition = Exposition()
    ours = exposition.render(files, PIPELINES)
    assert samples(ours) == expected
    assert sorted(ours.splitlines()) == sorted(library.splitlines())  # the same text, too
    assert exposition.render(files, PIPELINES) == ours  # the caches change nothing
    assert {"df_events_total", "df_latency_seconds_bucket", "df_attached"} <= {
        name for name, _ in expected}


def test_series_of_deleted_pipelines_are_left_out(metrics_dir: Path) -> None:
    write_process("worker-0", 1)
    files = sorted(glob.glob(str(metrics_dir / "*.db")))
    kept = samples(Exposition().render(files, ["a"]))
    pipelines = {dict(labels).get("pipeline") for _, labels in kept}
    assert pipelines == {"a", None}  # df_attached has no pipeline label
