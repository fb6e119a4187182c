"""The fast /metrics renderer against prometheus_client's own multiprocess merge.

Three "processes" write the same families (gauges of every merge rule, counters, histograms,
overlapping label sets) into one directory; ``api.exposition`` must expose exactly the samples
``MultiProcessCollector`` + ``generate_latest`` expose, minus deleted pipelines, also when the
files change between renders of one ``Exposition`` (which caches what it parsed and planned).
"""

from __future__ import annotations

import glob
import os
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


def write_process(identity: str, seed: int, pipelines: list[str] = PIPELINES) -> None:
    """One process's series, as the workers and the supervisor write them (appended to its
    files if it wrote before: counters and histograms go on from their values)."""
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
    low = Gauge("df_low", "Low", ["pipeline"], multiprocess_mode="min", registry=registry)
    queued = Gauge("df_queued", "Queued", ["pipeline"], multiprocess_mode="livesum",
                   registry=registry)
    threads = Gauge("df_threads", "Threads", ["pipeline"], multiprocess_mode="all",
                    registry=registry)
    latency = Histogram("df_latency_seconds", "Latency", ["pipeline"],
                        buckets=(0.001, 0.01, 0.1, 1, 10), registry=registry)
    for pipeline in pipelines:
        events.labels(pipeline, "db.t").inc(rng.randint(1, 100))
        lag.labels(pipeline).set(rng.random())
        stamp.labels(pipeline).set(1_795_796_893.5 + rng.random())  # Go-style exponent
        peak.labels(pipeline).set(rng.random())
        low.labels(pipeline).set(rng.random())
        queued.labels(pipeline).set(rng.randint(0, 9))
        threads.labels(pipeline).set(rng.randint(1, 4))
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


def library_samples(metrics_dir: Path, pipelines: list[str]) -> Samples:
    """What prometheus_client exposes, minus the series of pipelines not in ``pipelines``."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, str(metrics_dir))
    return {(name, labels): value
            for (name, labels), value in samples(generate_latest(registry).decode()).items()
            if dict(labels).get("pipeline", pipelines[0]) in pipelines}


def render(exposition: Exposition, metrics_dir: Path, pipelines: list[str]) -> Samples:
    return samples(exposition.render(sorted(glob.glob(str(metrics_dir / "*.db"))), pipelines))


def test_a_file_that_grew_between_renders_is_read_again(metrics_dir: Path) -> None:
    write_process("worker-0", 1, ["a"])
    write_process("worker-1", 2)
    exposition = Exposition()
    assert render(exposition, metrics_dir, PIPELINES) == library_samples(metrics_dir, PIPELINES)
    write_process("worker-0", 3, ["b", "a"])  # b's series appended, a's values changed
    ours = exposition.render(sorted(glob.glob(str(metrics_dir / "*.db"))), PIPELINES)
    assert samples(ours) == library_samples(metrics_dir, PIPELINES)
    assert 'df_threads{pid="worker-0",pipeline="b"}' in ours


def test_a_pipeline_deleted_between_renders_disappears(metrics_dir: Path) -> None:
    write_process("worker-0", 1)
    write_process("worker-1", 2)
    exposition = Exposition()
    for pipelines in (PIPELINES, ["a", PIPELINES[2]], ["b"], PIPELINES):
        assert render(exposition, metrics_dir, pipelines) == library_samples(metrics_dir,
                                                                              pipelines)


@pytest.mark.parametrize("pipelines", [["b"], PIPELINES[::-1]], ids=["smaller", "same-size"])
def test_a_file_removed_and_recreated_is_parsed_again(metrics_dir: Path,
                                                      pipelines: list[str]) -> None:
    """As a worker's files after it died and its successor started (ext4 may give the new file
    the inode of the old one); the same size: other series in the same places."""
    write_process("worker-0", 1)
    write_process("worker-1", 2)
    exposition = Exposition()
    render(exposition, metrics_dir, PIPELINES)
    for path in glob.glob(str(metrics_dir / "*_worker-0.db")):
        os.remove(path)
    write_process("worker-0", 3, pipelines)
    assert render(exposition, metrics_dir, PIPELINES) == library_samples(metrics_dir, PIPELINES)


def test_a_file_rewritten_in_place_smaller_is_parsed_again(metrics_dir: Path) -> None:
    write_process("worker-0", 1)
    exposition = Exposition()
    render(exposition, metrics_dir, PIPELINES)
    for path in glob.glob(str(metrics_dir / "*_worker-0.db")):
        os.truncate(path, 0)  # the same inode, fewer entries
    write_process("worker-0", 2, ["b"])
    assert render(exposition, metrics_dir, PIPELINES) == library_samples(metrics_dir, PIPELINES)


def test_a_file_removed_after_listing_is_left_out(metrics_dir: Path) -> None:
    write_process("worker-0", 1)
    files = sorted(glob.glob(str(metrics_dir / "*.db")))
    gone = str(metrics_dir / "gauge_liveall_worker-9.db")
    assert Exposition().render([*files, gone], PIPELINES) == Exposition().render(files, PIPELINES)
