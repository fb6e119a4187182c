"""The supervisor's own series (workers up, restarts, placement, heartbeat age).

Written from the supervisor's loop, at most once a second, into multiprocess files under the
identity ``supervisor``; no thread and no HTTP server of its own.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from prometheus_client import Counter, Gauge, values

UPDATE_INTERVAL_S = 1.0


@dataclass(frozen=True)
class WorkerView:
    """What the supervisor knows about one worker slot at one moment."""

    name: str
    alive: bool
    heartbeat_wall: float


class SupervisorMetrics:
    """Runtime series of the process tree; create it in the supervisor, never in a child."""

    def __init__(self) -> None:
        values.ValueClass = values.MultiProcessValue(process_identifier=lambda: "supervisor")
        self.workers_up = Gauge("deltaforge_workers_up", "Worker processes alive", [],
                                multiprocess_mode="mostrecent")
        self.restarts = Counter("deltaforge_worker_restarts_total",
                                "Child processes respawned after they exited", ["worker"])
        self.assigned = Gauge("deltaforge_pipelines_assigned",
                              "Pipelines placed on the worker with desired status running",
                              ["worker"], multiprocess_mode="mostrecent")
        self.heartbeat_age = Gauge("deltaforge_worker_heartbeat_age_seconds",
                                   "Seconds since the worker's data loop last stamped its "
                                   "heartbeat", ["worker"], multiprocess_mode="mostrecent")
        self._updated_at = 0.0

    def restarted(self, child: str) -> None:
        self.restarts.labels(child).inc()

    def update(self, workers: Sequence[WorkerView], running: Iterable[int]) -> None:
        """Refresh the gauges (no more than once per ``UPDATE_INTERVAL_S``); ``running`` has
        the slot of every pipeline whose desired status is running."""
        now = time.monotonic()
        if now - self._updated_at < UPDATE_INTERVAL_S:
            return
        self._updated_at = now
        wall = time.time()
        self.workers_up.set(sum(1 for w in workers if w.alive))
        per_slot = Tally(running)
        for slot, worker in enumerate(workers):
            self.assigned.labels(worker.name).set(per_slot.get(slot, 0))
            self.heartbeat_age.labels(worker.name).set(max(0.0, wall - worker.heartbeat_wall))
