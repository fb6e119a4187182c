"""CPU accounting over a time window: the service tree, what runs beside it, the machine."""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass
from typing import Any

from benchmarks.fleet.environment import Services
from benchmarks.fleet.procs import (
    machine_cpu_s,
    process_cpu_s,
    run_queue_wait_s,
    tree_cpu_s,
    tree_run_queue_waits_ns,
)


@dataclass(frozen=True)
class Snapshot:
    """Counters at one instant; two of them make a window."""

    monotonic_s: float
    wall_s: float
    service_cpu_s: float
    service_waits_ns: dict[int, int]  # per thread: runnable, waiting for a CPU
    benchmark_cpu_s: float
    mariadb_cpu_s: float
    kafka_cpu_s: float
    machine_busy_s: float
    machine_total_s: float


def snapshot(service_pid: int, services: Services, helper_pids: list[int]) -> Snapshot:
    """``helper_pids``: processes working for the benchmark (the load generator's clients)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    helpers_s = sum(process_cpu_s(p) for p in helper_pids)
    mariadb_pids = [s.pid() for s in services.servers]
    kafka_pid = services.kafka.pid()
    busy, total = machine_cpu_s()
    benchmark_s = usage.ru_utime + usage.ru_stime + helpers_s
    return Snapshot(time.monotonic(), time.time(), tree_cpu_s(service_pid),
                    tree_run_queue_waits_ns(service_pid), benchmark_s,
                    sum(process_cpu_s(p) for p in mariadb_pids if p),
                    process_cpu_s(kafka_pid) if kafka_pid else 0.0, busy, total)


def window_json(before: Snapshot, after: Snapshot) -> dict[str, Any]:
    """Seconds and CPU of the window; percentages are of one core unless named otherwise."""
    window_s = after.monotonic_s - before.monotonic_s

    def pct(field: str) -> float:
        spent = float(getattr(after, field)) - float(getattr(before, field))
        return round(spent / window_s * 100, 1)

    machine_total = after.machine_total_s - before.machine_total_s
    return {
        "window": [round(before.wall_s, 3), round(after.wall_s, 3)],
        "window_s": round(window_s, 1),
        "cpu_s": round(after.service_cpu_s - before.service_cpu_s, 2),
        "cpu_pct_of_core": pct("service_cpu_s"),
        "run_queue_wait_pct_of_core": round(
            run_queue_wait_s(before.service_waits_ns, after.service_waits_ns) / window_s * 100, 1),
        "others_cpu_pct_of_core": {"benchmark_process": pct("benchmark_cpu_s"),
                                   "mariadb_servers": pct("mariadb_cpu_s"),
                                   "kafka_broker": pct("kafka_cpu_s")},
        "machine_busy_pct_of_all_cores": round(
            (after.machine_busy_s - before.machine_busy_s) / machine_total * 100, 1)
        if machine_total else None,
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
