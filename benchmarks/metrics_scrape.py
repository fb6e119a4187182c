"""Scrape time and series count of /metrics with many pipelines (real CLI).

    python -m benchmarks.metrics_scrape [--pipelines 300] [--workers 4] [--scrapes 20]

Pipelines point at an unreachable MySQL (they fail and retry), so every pipeline has its
status, error, info and label series. With ``--data-path`` (default) four extra processes then
write, under their own identities in the same metrics directory, the data-path series an active
pipeline has (2 tables x 3 ops, one at-least-once and one exactly-once sink, histograms, DLQ),
through the real ``PipelineMetrics``; the service's api merges and serves them.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import cast

from state.records import BinlogPosition
from tests.support.metrics import metric_samples
from tests.support.pipelines import pipeline_yaml, write_config
from tests.support.service import Service, free_port
from workers.events import ChangeEvent, Op


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pipelines", type=int, default=300)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--scrapes", type=int, default=20)
    parser.add_argument("--status-only", action="store_true",
                        help="skip the synthetic data-path series")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        dsn = f"mysql://cdc:x@127.0.0.1:{free_port()}/db"
        docs = [pipeline_yaml(f"p{i:03d}", dsn, "127.0.0.1:1", ["db.t"], "t")
                for i in range(args.pipelines)]
        service = Service(write_config(Path(tmp) / "config", *docs), Path(tmp) / "data",
                          workers=args.workers)
        try:
            service.start(timeout_s=120)
            service.wait_until(lambda: statuses(service) >= args.pipelines, 120, "all statuses")
            if not args.status_only:
                populate(service.data_dir / "metrics", [d["metadata"]["name"] for d in docs])
            result = measure(service, args.scrapes)
            result |= measure_in_process(service.data_dir, args.scrapes)
        finally:
            service.close()
    result |= {"pipelines": args.pipelines, "workers": args.workers,
               "data_path_series": not args.status_only,
               "load_avg_1m": os.getloadavg()[0]}
    print("| pipelines | series | bytes | HTTP median ms | HTTP p95 ms | collect median ms "
          "| load avg |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {args.pipelines} | {result['series']} | {result['bytes']} | "
          f"{result['median_ms']:.1f} | {result['p95_ms']:.1f} | "
          f"{result['collect_median_ms']:.1f} | {result['load_avg_1m']:.1f} |")
    out = Path(__file__).parent / "results" / "metrics_scrape.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


def statuses(service: Service) -> int:
    text = service.get("/metrics").text
    return sum(1 for line in text.splitlines() if line.startswith("deltaforge_pipeline_status{"))


def measure(service: Service, scrapes: int) -> dict[str, float]:
    timings, body = [], ""
    for _ in range(scrapes):
        started = time.perf_counter()
        body = service.get("/metrics").text
        timings.append((time.perf_counter() - started) * 1000)
    timings.sort()
    return {"series": len(metric_samples(body)), "bytes": len(body.encode()),
            "median_ms": statistics.median(timings),
            "p95_ms": timings[int(len(timings) * 0.95) - 1]}


def populate(metrics_dir: Path, names: list[str], processes: int = 4) -> None:
    """Write an active pipeline's data-path series for every name, from ``processes`` forks."""
    ctx = multiprocessing.get_context("fork")
    children = [ctx.Process(target=write_series, args=(metrics_dir, i, names[i::processes]))
                for i in range(processes)]
    for child in children:
        child.start()
    for child in children:
        child.join(60)


def write_series(metrics_dir: Path, index: int, names: list[str]) -> None:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    from workers.metrics import PipelineMetrics, use_process_identity

    use_process_identity(f"bench-{index}")
    now_ms = int(time.time() * 1000)
    events = [fake_event(table, op, now_ms) for table in ("orders", "lines") for op in "cud"]
    for name in names:
        metrics = PipelineMetrics(name)
        metrics.status("running")
        metrics.batch_read(events, 4096)
        for sink, exactly_once in (("kafka", False), ("eos", True)):
            metrics.sink_acked(sink, True, len(events), 4096, 0.004, now_ms - 50)
            metrics.checkpointed(1, sink)
            if exactly_once:
                metrics.transaction(sink, committed=True)
        metrics.dlq_written("kafka", "serialization", 3, 1000)


def fake_event(table: str, op: str, ts_ms: int) -> ChangeEvent:
    position = BinlogPosition("bin.000001", 4)
    return ChangeEvent(f"1:bin.000001:4:{table}{op}", cast(Op, op), "shop", table, None,
                       {"id": 1}, ("id",), ts_ms, 1, "bin.000001", 4, None, None, position,
                       True, 100)


def measure_in_process(data_dir: Path, scrapes: int) -> dict[str, float]:
    """The api's collector run here, on the same files and LMDB: its own cost, without the
    api process's event loop and the host's scheduling in the way."""
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(data_dir / "metrics")
    from api.metrics_collector import FleetMetrics
    from state.env import open_state
    from state.stores import SpecStore, StatusStore

    state = open_state(data_dir)
    try:
        fleet = FleetMetrics(SpecStore(state), StatusStore(state))
        timings = []
        for _ in range(scrapes):
            started = time.perf_counter()
            fleet.render()
            timings.append((time.perf_counter() - started) * 1000)
    finally:
        state.close()
    return {"collect_median_ms": statistics.median(timings)}


if __name__ == "__main__":
    main()
