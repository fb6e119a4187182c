"""What the supervisor reports about the fleet: pipeline counts read from state, what still
keeps the service from being ready, the systemd STATUS line, and the worker-slot report that
``/health`` shows.

The counts come from one short read of state: it is opened, read and closed within one call,
so the supervisor never holds an LMDB environment when it forks.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from state.env import WORKER_SLOTS_FILE, StateError, open_state
from state.records import PipelineRecord, StatusRecord
from state.stores import SpecStore, StatusStore
from supervisor.systemd import Notifier

log = logging.getLogger(__name__)
READY_TIMEOUT_S = 60.0  # READY=1 at the latest after this, below systemd's TimeoutStartSec
COUNT_INTERVAL_S = 3.0  # pipeline counts for STATUS are read from state this often once ready
BOOT_COUNT_INTERVAL_S = 1.0  # and this often while booting, so READY=1 is not late


@dataclass(frozen=True)
class PipelineCounts:
    """Pipelines by what they are doing; ``pending`` ones are not yet picked up by a live
    worker, ``inactive`` ones are paused or stopped on purpose."""

    total: int = 0
    running: int = 0
    failed: int = 0
    pending: int = 0
    inactive: int = 0


@dataclass(frozen=True)
class WorkerState:
    """A worker slot as the supervisor sees it: its process, and whether it is up (its data
    loop stamped a heartbeat since the process started)."""

    name: str
    pid: int | None
    up: bool


@dataclass(frozen=True)
class SlotFailure:
    """A worker slot whose process keeps dying before its data loop stamped a heartbeat."""

    worker: str
    boot_failures: int
    last_exit_code: int | None
    failing_since: float  # unix time of the first failure in the current run of them


def read_counts(data_dir: Path, live_pids: set[int]) -> PipelineCounts:
    """Open state, count the pipelines, close it again; StateError when it cannot be read."""
    state = open_state(data_dir, readonly=True)
    try:
        specs = dict(SpecStore(state).items())
        statuses = dict(StatusStore(state).items())
    finally:
        state.close()
    return count_pipelines(specs, statuses, live_pids)


def count_pipelines(specs: dict[str, PipelineRecord], statuses: dict[str, StatusRecord],
                    live_pids: set[int]) -> PipelineCounts:
    kinds = [kind_of(record, statuses.get(name), live_pids) for name, record in specs.items()]
    return PipelineCounts(len(kinds), kinds.count("running"), kinds.count("failed"),
                          kinds.count("pending"), kinds.count("inactive"))


def kind_of(record: PipelineRecord, status: StatusRecord | None, live_pids: set[int]) -> str:
    """A status written by a worker that is gone (an earlier run, a crashed worker) does not
    count: the pipeline is pending until its current worker reports."""
    if record.desired != "running":
        return "inactive"
    if status is None or status.generation != record.generation:
        return "pending"
    if status.worker_pid not in live_pids or status.status not in ("running", "failed"):
        return "pending"
    return status.status


def boot_missing(unbooted: list[str], counts: PipelineCounts | None) -> list[str]:
    """What keeps the service from being ready; empty once every worker has booted and every
    pipeline that should run has been picked up (running or failed) by its worker."""
    missing = [f"{name} not booted" for name in unbooted]
    if counts is None:
        missing.append("pipeline states unreadable")
    elif counts.pending:
        missing.append(f"{counts.pending} of {counts.total} pipelines not picked up")
    return missing


def status_line(counts: PipelineCounts | None, workers_up: int, workers: int,
                failing: list[str]) -> str:
    """``12 pipelines: 10 running, 1 failed, 0 pending, 1 paused/stopped; 2/2 workers up``."""
    if counts is None:
        text = "pipeline counts unavailable (state unreadable)"
    else:
        text = (f"{counts.total} pipelines: {counts.running} running, {counts.failed} failed, "
                f"{counts.pending} pending")
        if counts.inactive:
            text += f", {counts.inactive} paused/stopped"
    text += f"; {workers_up}/{workers} workers up"
    if failing:
        text += f"; failing to boot: {', '.join(failing)}"
    return text


def write_slot_report(data_dir: Path, failures: list[SlotFailure]) -> None:
    """The file ``/health`` reads; replaced atomically, removed when no slot is failing."""
    path = data_dir / WORKER_SLOTS_FILE
    if not failures:
        path.unlink(missing_ok=True)
        return
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps({"failing_workers": [asdict(f) for f in failures]}))
    os.replace(temporary, path)


class StatusReporter:
    """READY=1 once every worker is up and every pipeline that should run has been picked up
    (or after ``ready_timeout_s``, saying what is missing), then STATUS= as counts change."""

    def __init__(self, notifier: Notifier, data_dir: Path,
                 ready_timeout_s: float = READY_TIMEOUT_S) -> None:
        self.notifier, self.data_dir, self.ready_timeout_s = notifier, data_dir, ready_timeout_s
        self.booting_since = time.monotonic()
        self.ready_sent = False
        self.due_at = 0.0
        self.counts_error: str | None = None

    def due(self, now: float) -> bool:
        return now >= self.due_at

    def report(self, now: float, workers: list[WorkerState], failing: list[str]) -> None:
        self.due_at = now + (COUNT_INTERVAL_S if self.ready_sent else BOOT_COUNT_INTERVAL_S)
        counts = self.counts({w.pid for w in workers if w.pid is not None})
        unbooted = [w.name for w in workers if not w.up]
        line = status_line(counts, len(workers) - len(unbooted), len(workers), failing)
        missing = boot_missing(unbooted, counts)
        if self.ready_sent:
            self.notifier.status(line, now)
        elif not missing or now - self.booting_since > self.ready_timeout_s:
            if missing:
                line += f"; ready after {self.ready_timeout_s:.0f}s without: {', '.join(missing)}"
                log.warning("supervisor ready without: %s", ", ".join(missing))
            self.notifier.ready(line)
            self.ready_sent = True
            log.info("supervisor ready: %s", line)
        else:
            self.notifier.status(f"starting: waiting for {', '.join(missing)}", now)

    def counts(self, live_pids: set[int]) -> PipelineCounts | None:
        try:
            counts = read_counts(self.data_dir, live_pids)
        except StateError as exc:
            if self.counts_error is None:
                log.warning("cannot read pipeline states for the systemd status: %s", exc)
            self.counts_error = str(exc)
            return None
        if self.counts_error is not None:
            log.info("pipeline states readable again for the systemd status")
        self.counts_error = None
        return counts

    def reloading(self) -> None:
        if self.ready_sent:
            self.notifier.reloading()

    def reloaded(self) -> None:
        """READY=1 ends the RELOADING=1 state; fresh counts follow at the next turn."""
        if self.ready_sent:
            self.notifier.ready(self.notifier.last_status or "config reloaded")
        self.due_at = 0.0
