"""kill -9 of one worker under load, and the wait until all its pipelines run and deliver."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from benchmarks.fleet.deliveries import Deliveries
from benchmarks.fleet.environment import PipelinePlan
from benchmarks.fleet.load import LoadGenerator
from benchmarks.fleet.procs import descendants
from benchmarks.fleet.service import FleetService

POLL_S = 0.5


def kill_worker(service: FleetService, plans: list[PipelinePlan], load: LoadGenerator,
                deliveries: Deliveries, timeout_s: float,
                check: Callable[[], None]) -> dict[str, Any]:
    """SIGKILL the worker hosting most pipelines; time their return (running, new rows)."""
    placement = {p.name: service.pipeline_ops(p.name) or {} for p in plans}
    slot, pid = victim(placement)
    if pid not in descendants(service.pid):
        raise RuntimeError(f"worker pid {pid} of {slot} is not a child of the service")
    mine = [p for p in plans if placement[p.name].get("worker") == slot]
    killed_at = time.time()
    os.kill(pid, signal.SIGKILL)
    issued = load.issued_snapshot()  # ids above these are sent after the kill
    deliveries.watch({p.topic: issued[p.server][p.table_index] for p in mine})
    result = {"worker": slot, "pid": pid, "pipelines": len(mine),
              "names": [p.name for p in mine], "killed_at": round(killed_at, 3)}
    return result | wait_recovered(service, mine, deliveries, pid, killed_at, timeout_s, check)


def victim(placement: dict[str, dict[str, Any]]) -> tuple[Any, int]:
    """The worker slot hosting most pipelines, and its pid."""
    slots = Counter(ops.get("worker") for ops in placement.values() if ops.get("worker_pid"))
    if not slots:
        raise RuntimeError("no pipeline reports a worker pid")
    slot = slots.most_common(1)[0][0]
    pid = next(ops["worker_pid"] for ops in placement.values() if ops.get("worker") == slot)
    return slot, int(pid)


def wait_recovered(service: FleetService, mine: list[PipelinePlan], deliveries: Deliveries,
                   pid: int, killed_at: float, timeout_s: float,
                   check: Callable[[], None]) -> dict[str, Any]:
    running_since: dict[str, float] = {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for plan in [p for p in mine if p.name not in running_since]:
            since = running_again(service.pipeline_ops(plan.name), pid)
            if since is not None:
                running_since[plan.name] = since
        if len(running_since) == len(mine) and all_flowing(mine, deliveries):
            break
        check()
        time.sleep(POLL_S)
    flowing = dict(deliveries.first_above_s)
    return {
        "running_again": len(running_since),
        "all_running_s": round(max(running_since.values()) - killed_at, 2)
        if len(running_since) == len(mine) else None,
        "flowing_again": sum(p.topic in flowing for p in mine),
        "all_flowing_s": round(max(flowing[p.topic] for p in mine) - killed_at, 2)
        if all_flowing(mine, deliveries) else None,
    }


def all_flowing(mine: list[PipelinePlan], deliveries: Deliveries) -> bool:
    return all(p.topic in deliveries.first_above_s for p in mine)


def running_again(ops: dict[str, Any] | None, killed_pid: int) -> float | None:
    """Wall time the pipeline started running on a new worker process, if it has.

    ``uptime_seconds`` dates the start exactly, however slowly this loop polls."""
    if not ops or ops.get("status") != "running" or ops.get("worker_pid") in (None, killed_pid):
        return None
    return time.time() - float(ops.get("uptime_seconds") or 0.0)
