"""One mode (stream sharing on or off) from a fresh service to its stop, phase by phase.

start -> idle (settle, memory, idle CPU, connections, scrapes) -> load (warm-up, measured
window, scrapes) -> kill -9 of one worker under load -> drain and loss check.
A phase that fails records its error and ends the mode (the drain still runs once the load
has started); the figures so far are kept.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from benchmarks.fleet.deliveries import Deliveries, LatencySample
from benchmarks.fleet.environment import (
    BinlogMonitor,
    Services,
    create_tables,
    create_topics,
    delete_topics,
    drop_database,
    plan_pipelines,
    write_configs,
)
from benchmarks.fleet.kill import kill_worker
from benchmarks.fleet.load import LoadGenerator
from benchmarks.fleet.procs import tree_memory
from benchmarks.fleet.service import FleetService
from benchmarks.fleet.settings import Settings
from benchmarks.fleet.window import Snapshot, snapshot, window_json

log = logging.getLogger(__name__)

CHECK_EVERY_S = 5.0


def memory_json(root: int) -> dict[str, Any]:
    memory = tree_memory(root)
    return {"processes": memory.processes, "rss_mb": round(memory.rss_kb / 1024, 1),
            "pss_mb": round(memory.pss_kb / 1024, 1)}


def scrapes_json(service: FleetService, count: int) -> dict[str, Any]:
    timings, size, samples = [], 0, 0
    for _ in range(count):
        elapsed_s, size, samples = service.scrape_metrics()
        timings.append(elapsed_s * 1000)
    return {"scrapes": count, "median_ms": round(statistics.median(timings), 1),
            "max_ms": round(max(timings), 1), "bytes": size, "samples": samples}


def sharing_args(settings: Settings, mode: str) -> list[str]:
    return ["--stream-sharing", mode] if settings.pass_sharing_flag else []


class ModeRun:
    """The service of one mode with its load and its deliveries; ``result`` grows per phase."""

    def __init__(self, services: Services, settings: Settings, mode: str,
                 work_dir: Path) -> None:
        self.services, self.settings, self.mode = services, settings, mode
        self.plans = plan_pipelines(mode, settings.servers, settings.pipelines_per_server)
        self.topics = [p.topic for p in self.plans]
        self.service = FleetService(settings.service_tree, work_dir / f"config-{mode}",
                                    work_dir / f"data-{mode}", settings.workers,
                                    sharing_args(settings, mode))
        self.deliveries = Deliveries(services.kafka.bootstrap, self.topics,
                                     settings.sample_every)
        tables = [p.table for p in self.plans if p.server == 0]
        self.load = LoadGenerator(services.servers, self.plans[0].database, tables,
                                  settings.rate_per_pipeline, settings.tick_s)
        self.monitor: BinlogMonitor | None = None
        self.result: dict[str, Any] = {"mode": mode, "argv": self.service.argv(),
                                       "service_log": str(self.service.log_path)}

    def run(self) -> dict[str, Any]:
        phases: list[tuple[str, Callable[[], None]]] = [
            ("start", self.start), ("idle", self.idle), ("load", self.under_load),
            ("kill", self.kill)]
        with ExitStack() as stack:
            self.prepare(stack)
            for name, phase in phases:
                if not self.run_phase(name, phase):
                    break
            if "load" in self.result and self.service.process_alive():
                self.run_phase("drain", self.drain)  # also after a failed kill phase
        return self.result

    def run_phase(self, name: str, phase: Callable[[], None]) -> bool:
        log.info("mode=%s phase=%s load_avg=%.1f", self.mode, name, os.getloadavg()[0])
        try:
            phase()
            return True
        except Exception as exc:  # recorded in the result; the next mode still runs
            log.exception("mode=%s phase=%s failed", self.mode, name)
            self.result.setdefault("errors", []).append(
                {"phase": name, "error": repr(exc), "service_log_tail":
                 self.service.log_tail(2000)})
            return False

    def prepare(self, stack: ExitStack) -> None:
        """Tables, topics, pipeline files; cleanups registered in reverse order of need."""
        stack.callback(drop_database, self.services, self.plans[0].database)
        create_tables(self.services, self.plans)
        stack.callback(delete_topics, self.services.kafka, self.topics)
        create_topics(self.services.kafka, self.topics)
        write_configs(self.service.config_dir, self.services, self.plans,
                      self.settings.batch_max_ms)
        self.monitor = BinlogMonitor(self.services)
        stack.callback(self.monitor.close)
        stack.callback(self.deliveries.stop)
        stack.callback(self.load.stop)
        stack.callback(self.stop_service)

    def stop_service(self) -> None:
        started = time.monotonic()
        code = self.service.stop()
        self.result["stop"] = {"exit_code": code, "seconds": round(time.monotonic() - started, 1)}

    def binlog_connections(self) -> list[int]:
        assert self.monitor is not None
        return self.monitor.counts()

    def start(self) -> None:
        self.deliveries.start()
        self.service.start()
        deadline = time.monotonic() + self.settings.start_timeout_s  # one budget for both
        ready_s = self.service.wait_ready(self.settings.start_timeout_s)
        running_s, counts = self.service.wait_all_running(
            len(self.plans), max(1.0, deadline - time.monotonic()))
        self.result["start"] = {"ready_s": _round(ready_s), "all_running_s": _round(running_s),
                                "statuses": dict(counts)}
        if running_s is None:
            raise RuntimeError(f"not all {len(self.plans)} pipelines running after "
                               f"{self.settings.start_timeout_s:.0f}s: {dict(counts)}")

    def idle(self) -> None:
        time.sleep(self.settings.settle_s)
        memory = memory_json(self.service.pid)
        before = self.cpu_snapshot()
        self.wait_checked(self.settings.idle_s)
        window = window_json(before, self.cpu_snapshot())
        self.result["idle"] = window | {
            "memory": memory, "binlog_connections": self.binlog_connections(),
            "metrics": scrapes_json(self.service, self.settings.scrapes)}

    def cpu_snapshot(self) -> Snapshot:
        return snapshot(self.service.pid, self.services, self.load.client_pids)

    def wait_checked(self, seconds: float, every: Callable[[], None] | None = None) -> None:
        """Sleep, checking the service, the load and the consumer every few seconds."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(min(CHECK_EVERY_S, left))
            self.check()
            if every is not None:
                every()

    def check(self) -> None:
        self.service.check_alive()
        self.load.check()
        if self.deliveries.error is not None:
            raise RuntimeError(f"consumer failed: {self.deliveries.error!r}")

    def under_load(self) -> None:
        """Warm-up, then the measured window; connections sampled every few seconds."""
        self.load.start()
        self.wait_checked(self.settings.warmup_s)
        connections: list[list[int]] = []
        rows_before = self.load.committed_rows()
        before = self.cpu_snapshot()
        self.wait_checked(self.settings.duration_s,
                          lambda: connections.append(self.binlog_connections()))
        window = window_json(before, self.cpu_snapshot())
        self.result["load"] = window | {
            "rows_committed": self.load.committed_rows() - rows_before,
            "binlog_connections_max": [max(c) for c in zip(*connections, strict=True)]
            if connections else None,
            "memory": memory_json(self.service.pid),
            "metrics": scrapes_json(self.service, self.settings.scrapes)}

    def kill(self) -> None:
        self.result["kill"] = kill_worker(self.service, self.plans, self.load, self.deliveries,
                                          self.settings.recover_timeout_s, self.check)

    def drain(self) -> None:
        """Stop writing; wait for every committed row in Kafka (or the timeout); count losses."""
        self.load.stop()
        written = self.load.committed_rows()
        started = time.monotonic()
        while (self.deliveries.unique_total < written
               and time.monotonic() - started < self.settings.drain_timeout_s):
            self.check()
            time.sleep(0.5)
        self.result["delivery"] = self.delivery_json(written, time.monotonic() - started)
        start_wall, end_wall = self.result["load"]["window"]
        delivered = self.deliveries.delivered_between(start_wall, end_wall)
        self.result["load"] |= {
            "events_delivered": delivered,
            "events_per_s": round(delivered / max(1, int(end_wall) - int(start_wall)), 1),
            "delivered_per_s_series": self.deliveries.series(start_wall - 30,
                                                             time.time())}
        self.result["latency"] = latency_json(self.deliveries.samples, start_wall, end_wall)

    def delivery_json(self, written: int, drained_s: float) -> dict[str, Any]:
        tallies = {p.name: self.deliveries.tallies[p.topic] for p in self.plans}
        last = {p.name: self.load.loads[p.server].committed[p.table_index] for p in self.plans}
        missing = {name: tally.missing(last[name]) for name, tally in tallies.items()}
        killed = set(self.result.get("kill", {}).get("names", []))
        return {
            "rows_committed": written, "rows_delivered": self.deliveries.unique_total,
            "complete": not any(missing.values()), "drain_s": round(drained_s, 1),
            "missing": sum(missing.values()),
            "lost": sum(t.gaps() for t in tallies.values()),
            "pipelines_missing_rows": sum(1 for m in missing.values() if m),
            "messages": sum(t.messages for t in tallies.values()),
            "duplicates": sum(t.duplicates() for t in tallies.values()),
            "killed_worker": {
                "missing": sum(missing[n] for n in killed),
                "lost": sum(tallies[n].gaps() for n in killed),
                "duplicates": sum(tallies[n].duplicates() for n in killed)},
            "foreign_messages": self.deliveries.foreign,
            "round_trip_ms": round_trips_json(self.load),
            "max_load_behind_s": round(max(ld.max_behind_s for ld in self.load.loads), 3),
        }


def round_trips_json(load: LoadGenerator) -> dict[str, float] | None:
    trips = sorted(t for ld in load.loads for t in ld.round_trips_s)
    if not trips:
        return None
    return {"p50": round(percentile(trips, 50) * 1000, 1),
            "p99": round(percentile(trips, 99) * 1000, 1), "count": len(trips)}


def latency_json(samples: list[LatencySample], start_s: float, end_s: float
                 ) -> dict[str, Any] | None:
    """Percentiles over the sampled rows committed inside the measured window."""
    latencies = sorted(s.latency_ms for s in samples if start_s <= s.commit_s < end_s)
    if not latencies:
        return None
    return {"rows": len(latencies), "p50_ms": round(percentile(latencies, 50), 1),
            "p99_ms": round(percentile(latencies, 99), 1),
            "max_ms": round(latencies[-1], 1), "min_ms": round(latencies[0], 1)}


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)
