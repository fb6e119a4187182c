"""JSON shapes of pipelines, shared by the routes (DeltaForge's PipeInfo)."""

from __future__ import annotations

import os
import time
from typing import Any

from api.redact import redact
from state.records import CheckpointRecord, PipelineRecord, StatusRecord


def pipeline_status(record: PipelineRecord, status: StatusRecord | None) -> str:
    """What the pipeline is doing: the worker's report, or the desired state until it has one.
    A report of a worker process that is gone (killed, or a slot that cannot boot) is
    ``pending``: the pipeline waits for its worker."""
    if record.desired != "running":
        return record.desired
    if status is None or status.generation != record.generation:
        return "pending"
    if status.status == "running" and not process_alive(status.worker_pid):
        return "pending"
    return status.status


def process_alive(pid: int | None) -> bool:
    if not pid:
        return True  # an older record without a pid: trust it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RedactedSpecs:
    """Redacted specs by record version: redacting 300 specs per listing costs ~25 ms."""

    def __init__(self, max_entries: int = 20_000) -> None:
        self.max_entries = max_entries
        self.entries: dict[tuple[str, int, float], Any] = {}

    def get(self, record: PipelineRecord) -> Any:
        key = (record.name, record.generation, record.updated_at)
        redacted = self.entries.get(key)
        if redacted is None:
            if len(self.entries) >= self.max_entries:
                self.entries.clear()
            redacted = self.entries[key] = redact(record.spec)
        return redacted


REDACTED = RedactedSpecs()


def pipe_info(record: PipelineRecord, status: StatusRecord | None) -> dict[str, Any]:
    return {"name": record.name, "status": pipeline_status(record, status),
            "spec": REDACTED.get(record)}


def ops(status: StatusRecord | None, checkpoints: dict[str, CheckpointRecord],
        dlq_entries: int = 0) -> dict[str, Any]:
    now = time.time()
    last_ts = status.last_event_ts_ms if status else None
    return {
        "uptime_seconds": round(now - status.started_at, 3) if status and status.started_at
        and status.status == "running" else 0.0,
        "lag_seconds": None if last_ts is None else round(max(0.0, now - last_ts / 1000), 3),
        "dlq_entries": dlq_entries,
        "sink_errors": sink_errors(status),
        "checkpoints": [checkpoint_info(cp, now) for cp in checkpoints.values()],
        "generation": status.generation if status else None,
        "worker": status.worker if status else None,
        "worker_pid": status.worker_pid if status else None,
        "restarts": status.restarts if status else 0,
        "last_error": status.last_error if status else None,
        "next_retry_at": status.next_retry_at if status else None,
        "events_total": status.events_total if status else 0,
    }


def checkpoint_info(record: CheckpointRecord, now: float) -> dict[str, Any]:
    position = record.position
    return {
        "sink_id": record.sink_id,
        "position": {"file": position.file, "pos": position.pos, "row_skip": position.row_skip,
                     "gtid_set": position.gtid_set},
        "age_seconds": round(max(0.0, now - record.written_at), 3),
    }


def sink_errors(status: StatusRecord | None) -> dict[str, dict[str, Any]]:
    if status is None:
        return {}
    return {sink: {"count": count, "last_error": status.sink_last_error.get(sink)}
            for sink, count in status.sink_errors.items()}
