"""One mode (stream sharing on or off) from a fresh service to its stop, phase by phase.

start -> idle (settle, memory, idle CPU, connections, scrapes) -> load (warm-up, measured
window) -> scrapes under load -> kill -9 of one worker under load -> drain and loss check.
A phase that fails records its error and ends the mode; the figures so far are kept.
"""

from __future__ import annotations

import logging
import os
import signal
import statistics
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from benchmarks.fleet.deliveries import Deliveries, LatencySample
from benchmarks.fleet.environment import (
    Services,
    create_tables,
    create_topics,
    delete_topics,
    drop_database,
    plan_pipelines,
    write_configs,
)
from benchmarks.fleet.load import LoadGenerator
from benchmarks.fleet.procs import descendants, tree_cpu_s, tree_memory
from benchmarks.fleet.service import FleetService
from benchmarks.fleet.settings import Settings

log = logging.getLogger(__name__)

BINLOG_DUMPS = ("SELECT COUNT(*) FROM information_schema.PROCESSLIST"
                " WHERE COMMAND LIKE 'Binlog Dump%'")
CHECK_EVERY_S = 5.0


def binlog_connections(services: Services) -> list[int]:
    """Binlog dump connections open on each server right now."""
    counts = []
    for server in services.servers:
        conn = server.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(BINLOG_DUMPS)
                counts.append(int(cur.fetchone()[0]))
        finally:
            conn.close()
    return counts


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
        self.result: dict[str, Any] = {"mode": mode, "argv": self.service.argv(),
                                       "service_log": str(self.service.log_path)}

    def run(self) -> dict[str, Any]:
        phases: list[tuple[str, Callable[[], None]]] = [
            ("start", self.start), ("idle", self.idle), ("load", self.under_load),
            ("kill", self.kill_worker)]
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
        write_configs(self.service.config_dir, self.services, self.plans)
        stack.callback(self.deliveries.stop)
        stack.callback(self.load.stop)
        stack.callback(self.stop_service)

    def stop_service(self) -> None:
        started = time.monotonic()
        code = self.service.stop()
        self.result["stop"] = {"exit_code": code, "seconds": round(time.monotonic() - started, 1)}

    def start(self) -> None:
        self.deliveries.start()
        self.service.start()
        ready_s = self.service.wait_ready(self.settings.start_timeout_s)
        running_s, counts = self.service.wait_all_running(len(self.plans),
                                                          self.settings.start_timeout_s)
        self.result["start"] = {"ready_s": _round(ready_s), "all_running_s": _round(running_s),
                                "statuses": dict(counts)}
        if running_s is None:
            raise RuntimeError(f"not all {len(self.plans)} pipelines running after "
                               f"{self.settings.start_timeout_s:.0f}s: {dict(counts)}")

    def idle(self) -> None:
        time.sleep(self.settings.settle_s)
        memory = memory_json(self.service.pid)
        cpu_s, window_s = self.cpu_over(self.settings.idle_s)
        self.result["idle"] = {
            "memory": memory, "cpu_s": round(cpu_s, 2), "window_s": round(window_s, 1),
            "cpu_pct_of_core": round(cpu_s / window_s * 100, 2),
            "binlog_connections": binlog_connections(self.services),
            "metrics": scrapes_json(self.service, self.settings.scrapes),
            "load_avg_1m": round(os.getloadavg()[0], 2)}

    def cpu_over(self, seconds: float) -> tuple[float, float]:
        started, cpu_before = time.monotonic(), tree_cpu_s(self.service.pid)
        self.wait_checked(seconds)
        return tree_cpu_s(self.service.pid) - cpu_before, time.monotonic() - started

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
        self.load.start()
        self.wait_checked(self.settings.warmup_s)
        connections: list[list[int]] = []
        start_wall, rows_before = time.time(), self.load.committed_rows()
        cpu_before, started = tree_cpu_s(self.service.pid), time.monotonic()
        self.wait_checked(self.settings.duration_s,
                          lambda: connections.append(binlog_connections(self.services)))
        cpu_s, window_s = tree_cpu_s(self.service.pid) - cpu_before, time.monotonic() - started
        end_wall, rows_after = time.time(), self.load.committed_rows()
        self.result["load"] = {
            "window": [round(start_wall, 3), round(end_wall, 3)], "window_s": round(window_s, 1),
            "rows_committed": rows_after - rows_before, "cpu_s": round(cpu_s, 2),
            "cpu_pct_of_core": round(cpu_s / window_s * 100, 1),
            "binlog_connections_max": [max(c) for c in zip(*connections, strict=True)]
            if connections else None,
            "memory": memory_json(self.service.pid),
            "metrics": scrapes_json(self.service, self.settings.scrapes),
            "load_avg_1m": round(os.getloadavg()[0], 2)}

    def kill_worker(self) -> None:
        """kill -9 the worker with most pipelines; wait until all of them run and deliver again."""
        placement = {p.name: self.service.pipeline_ops(p.name) or {} for p in self.plans}
        slot, pid = victim(placement)
        if pid not in descendants(self.service.pid):
            raise RuntimeError(f"worker pid {pid} of {slot} is not a child of the service")
        names = [n for n, ops in placement.items() if ops.get("worker") == slot]
        killed_at = time.time()
        os.kill(pid, signal.SIGKILL)
        issued = self.load.issued_snapshot()
        by_name = {p.name: p for p in self.plans}
        self.deliveries.watch({by_name[n].topic: issued[by_name[n].server]
                               [by_name[n].table_index] for n in names})
        self.result["kill"] = {"worker": slot, "pid": pid, "pipelines": len(names),
                               "names": names, "killed_at": round(killed_at, 3)}
        self.result["kill"] |= self.wait_recovered(names, pid, killed_at)

    def wait_recovered(self, names: list[str], pid: int, killed_at: float) -> dict[str, Any]:
        running_since: dict[str, float] = {}
        topics = {p.name: p.topic for p in self.plans}
        deadline = time.monotonic() + self.settings.recover_timeout_s
        while time.monotonic() < deadline:
            for name in [n for n in names if n not in running_since]:
                since = running_again(self.service.pipeline_ops(name), pid)
                if since is not None:
                    running_since[name] = since
            flowing = self.deliveries.first_above_s
            if len(running_since) == len(names) and all(topics[n] in flowing for n in names):
                break
            self.check()
            time.sleep(0.5)
        flowing = dict(self.deliveries.first_above_s)
        return {
            "running_again": len(running_since),
            "all_running_s": _round(max(running_since.values()) - killed_at
                                    if len(running_since) == len(names) else None),
            "flowing_again": sum(topics[n] in flowing for n in names),
            "all_flowing_s": _round(max(flowing[topics[n]] for n in names) - killed_at
                                    if all(topics[n] in flowing for n in names) else None),
        }

    def drain(self) -> None:
        """Stop writing; wait for every committed row in Kafka (or the timeout); count losses."""
        self.load.stop()
        written = self.load.committed_rows()
        started = time.monotonic()
        while (self.deliveries.unique_total < written
               and time.monotonic() - started < self.settings.drain_timeout_s):
            self.check()
            time.sleep(0.5)
        drained_s = time.monotonic() - started
        self.result["delivery"] = self.delivery_json(written, drained_s)
        start_wall, end_wall = self.result["load"]["window"]
        delivered = self.deliveries.delivered_between(start_wall, end_wall)
        self.result["load"] |= {"events_delivered": delivered,
                                "events_per_s": round(delivered / (int(end_wall) -
                                                                   int(start_wall)), 1)}
        self.result["latency"] = latency_json(self.deliveries.samples, start_wall, end_wall)

    def delivery_json(self, written: int, drained_s: float) -> dict[str, Any]:
        missing = self.missing_by_name()
        killed = set(self.result.get("kill", {}).get("names", []))
        tallies = self.deliveries.tallies.values()
        return {
            "rows_committed": written, "rows_delivered": self.deliveries.unique_total,
            "messages": sum(t.messages for t in tallies),
            "duplicates": sum(t.duplicates() for t in tallies),
            "missing": sum(missing.values()),
            "missing_in_killed_worker": sum(missing[n] for n in killed),
            "duplicates_in_killed_worker": sum(self.deliveries.tallies[p.topic].duplicates()
                                               for p in self.plans if p.name in killed),
            "pipelines_missing_rows": sum(1 for m in missing.values() if m),
            "drain_s": round(drained_s, 1), "complete": not any(missing.values()),
            "foreign_messages": self.deliveries.foreign,
            "round_trip_ms": round_trips_json(self.load),
            "max_load_behind_s": round(max(ld.max_behind_s for ld in self.load.loads), 3),
        }

    def missing_by_name(self) -> dict[str, int]:
        return {p.name: self.deliveries.tallies[p.topic].missing(
            self.load.loads[p.server].committed[p.table_index]) for p in self.plans}


def victim(placement: dict[str, dict[str, Any]]) -> tuple[Any, int]:
    """The worker slot hosting most pipelines, and its pid."""
    slots = Counter(ops.get("worker") for ops in placement.values() if ops.get("worker_pid"))
    if not slots:
        raise RuntimeError("no pipeline reports a worker pid")
    slot = slots.most_common(1)[0][0]
    pid = next(ops["worker_pid"] for ops in placement.values() if ops.get("worker") == slot)
    return slot, int(pid)


def running_again(ops: dict[str, Any] | None, killed_pid: int) -> float | None:
    """Wall time the pipeline started running on a new worker process, if it has."""
    if not ops or ops.get("status") != "running" or ops.get("worker_pid") in (None, killed_pid):
        return None
    return time.time() - float(ops.get("uptime_seconds") or 0.0)


def round_trips_json(load: LoadGenerator) -> dict[str, float] | None:
    trips = sorted(t for ld in load.loads for t in ld.round_trips_s)
    if not trips:
        return None
    return {"p50": round(trips[len(trips) // 2] * 1000, 1),
            "p99": round(trips[int(len(trips) * 0.99)] * 1000, 1),
            "count": len(trips)}


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
