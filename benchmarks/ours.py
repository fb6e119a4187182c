"""Our side of the benchmark: the real ``supervisor.cli`` draining the backlog into Kafka."""

from __future__ import annotations

import logging
import os
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from benchmarks.dataset import DATABASE, TABLE, Backlog, topic_messages
from benchmarks.measure import Result, cpu_s
from deploy.local.mariadb import MariaDBServer
from deploy.local.processes import free_port
from state.env import open_state
from state.records import BinlogPosition, CheckpointRecord
from state.stores import CheckpointStore

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
PIPELINE = "bench-drain"
SINK_ID = "kafka"
POLL_INTERVAL_S = 0.2
DRAIN_TIMEOUT_S = 3600.0


@dataclass(frozen=True)
class Target:
    """Where our pipeline reads from and writes to."""

    mariadb: MariaDBServer
    bootstrap: str
    topic: str
    checkpoint_topic: str | None = None
    """Set: the sink runs with ``exactly_once: true`` and this checkpoint topic."""

    @property
    def exactly_once(self) -> bool:
        return self.checkpoint_topic is not None


@dataclass
class Progress:
    """Timestamps (monotonic) seen while polling the running service."""

    started: float
    first_event: float | None = None
    done: float | None = None
    worker_pid: int | None = None


def pipeline_document(target: Target) -> dict[str, Any]:
    """The pipeline YAML a user would write for this drain."""
    sink: dict[str, Any] = {"id": SINK_ID, "brokers": target.bootstrap, "topic": target.topic,
                            "envelope": "native"}
    if target.checkpoint_topic is not None:
        sink.update({"exactly_once": True, "checkpoint_topic": target.checkpoint_topic})
    return {
        "apiVersion": "deltaforge/v1",
        "kind": "Pipeline",
        "metadata": {"name": PIPELINE, "tenant": "bench"},
        "spec": {
            "source": {"type": "mysql", "config": {
                "id": "src-bench", "dsn": target.mariadb.cdc_dsn(DATABASE),
                "tables": [f"{DATABASE}.{TABLE}"]}},
            "sinks": [{"type": "kafka", "config": sink}],
            "batch": {"max_events": 2000, "max_ms": 50},
        },
    }


def write_config(config_dir: Path, target: Target) -> None:
    config_dir.mkdir(parents=True, exist_ok=True)
    document = pipeline_document(target)
    (config_dir / f"{PIPELINE}.yaml").write_text(yaml.safe_dump(document, sort_keys=False))


def seed_checkpoint(data_dir: Path, start: BinlogPosition) -> None:
    """Make the pipeline start at the backlog's start (the service must not be running)."""
    state = open_state(data_dir)
    try:
        record = CheckpointRecord(PIPELINE, SINK_ID, start, time.time(), 0)
        CheckpointStore(state).put(CheckpointStore.key(PIPELINE, SINK_ID), record)
    finally:
        state.close()


def run_ours(target: Target, backlog: Backlog, work_dir: Path,
             profile_path: Path | None = None, profile_gil: bool = False,
             name: str = "ours") -> Result:
    """Start the CLI, wait until the backlog's end is checkpointed, SIGTERM; timed.

    The checkpoint is seeded in LMDB with the backlog's start; with exactly-once the sink
    prefers the position in its checkpoint topic, which on a fresh topic has none, so the
    seed is used there too. ``work_dir`` must be new for each run (its own data dir).

    With ``profile_path``, py-spy samples the worker from the first event to the end (its CPU
    is then part of the figure: a profiled run is for hot spots, not for the table).
    ``profile_gil`` samples only the thread holding the GIL (where the Python time goes).
    """
    config_dir, data_dir = work_dir / "config", work_dir / "data"
    write_config(config_dir, target)
    seed_checkpoint(data_dir, backlog.start)
    port = free_port()
    cpu_before = cpu_s(resource.RUSAGE_CHILDREN)
    progress = Progress(time.monotonic())
    service = start_service(config_dir, data_dir, port)
    profiler: subprocess.Popen[bytes] | None = None
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as api:
            while progress.done is None:
                poll(api, service, target, backlog, progress)
                if profile_path is not None and profiler is None and progress.worker_pid:
                    profiler = start_profiler(progress.worker_pid, profile_path, profile_gil)
    finally:
        stop_service(service)
        if profiler is not None:
            profiler.wait(60)
    cpu = cpu_s(resource.RUSAGE_CHILDREN) - cpu_before
    result = ours_result(name, backlog, progress, cpu, profiled=profiler is not None)
    result.extra["decoder_fallback_warnings"] = decoder_fallbacks(data_dir / "service.log")
    return result


def start_service(config_dir: Path, data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "supervisor.cli", "--config", str(config_dir),
            "--data-dir", str(data_dir), "--api-addr", f"127.0.0.1:{port}", "--workers", "1"]
    with (data_dir / "service.log").open("ab") as out:
        return subprocess.Popen(argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONPATH": str(REPO)})


def stop_service(service: subprocess.Popen[bytes]) -> None:
    """SIGTERM (graceful drain) and wait; SIGKILL if it does not exit."""
    if service.poll() is None:
        service.send_signal(signal.SIGTERM)
    try:
        service.wait(60)
    except subprocess.TimeoutExpired:
        service.kill()
        service.wait(10)


def poll(api: httpx.Client, service: subprocess.Popen[bytes], target: Target,
         backlog: Backlog, progress: Progress) -> None:
    """One look at the pipeline: note the first delivered event and the end of the drain."""
    time.sleep(POLL_INTERVAL_S)
    now = time.monotonic()
    if service.poll() is not None:
        raise RuntimeError(f"service exited with code {service.returncode}")
    if now - progress.started > DRAIN_TIMEOUT_S:
        raise RuntimeError(f"backlog not drained after {DRAIN_TIMEOUT_S:.0f}s")
    info = pipeline_info(api)
    if info is None:
        return
    ops = info.get("ops", {})
    progress.worker_pid = progress.worker_pid or ops.get("worker_pid")
    position = checkpoint_position(ops)
    if progress.first_event is None and has_started(ops, position, target, backlog):
        progress.first_event = now
    if position is not None and position.sort_key() >= backlog.end.sort_key():
        progress.done = now


def pipeline_info(api: httpx.Client) -> dict[str, Any] | None:
    try:
        response = api.get(f"/pipelines/{PIPELINE}")
    except httpx.TransportError:
        return None  # the api child is not listening yet
    if response.status_code != 200:
        return None
    info: dict[str, Any] = response.json()
    return info


def checkpoint_position(ops: dict[str, Any]) -> BinlogPosition | None:
    for checkpoint in ops.get("checkpoints", []):
        if checkpoint["sink_id"] == SINK_ID:
            p = checkpoint["position"]
            return BinlogPosition(p["file"], p["pos"], p["row_skip"])
    return None


def has_started(ops: dict[str, Any], position: BinlogPosition | None, target: Target,
                backlog: Backlog) -> bool:
    """Rows are flowing: events counted, checkpoint moved, or messages in the topic."""
    if ops.get("events_total", 0) > 0:
        return True
    if position is not None and position.sort_key() > backlog.start.sort_key():
        return True
    return topic_messages(target.bootstrap, target.topic) > 0


def start_profiler(pid: int, path: Path, gil: bool) -> subprocess.Popen[bytes]:
    """py-spy record of the worker, collapsed stacks, until the worker exits."""
    argv = ["py-spy", "record", "--pid", str(pid), "--format", "raw", "--rate", "100",
            "--nonblocking", "--threads", "-o", str(path), *(["--gil"] if gil else [])]
    log.info("profiling worker pid=%d to %s", pid, path)
    with path.with_suffix(".log").open("ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)


def decoder_fallbacks(log_path: Path) -> int:
    """Table versions whose rows the library decoded instead of the fast row decoder (0: the
    run measured the fast decoder); the worker logs each one once."""
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    return text.count("rows decoded by the library, not the fast decoder")


def ours_result(name: str, backlog: Backlog, progress: Progress, cpu: float,
                profiled: bool) -> Result:
    assert progress.done is not None
    first = progress.first_event if progress.first_event is not None else progress.started
    drain_s = max(progress.done - first, 1e-9)
    extra = {"startup_s": round(first - progress.started, 3), "drain_s": round(drain_s, 3),
             "drain_rows_per_s": round(backlog.rows / drain_s, 1), "profiled": profiled}
    return Result(name, backlog.rows, progress.done - progress.started, cpu, extra)
