"""The ``deltaforge`` CLI in a subprocess (its own session), its API, and its process tree."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from benchmarks.fleet.procs import descendants
from deploy.local.processes import free_port

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "supervisor.cli"]
POLL_S = 0.25


class ServiceExited(RuntimeError):
    """The service's supervisor exited while the benchmark needed it."""


def cli_help(tree: Path) -> str:
    result = subprocess.run([*CLI, "--help"], cwd=tree, capture_output=True, text=True,
                            timeout=60, env=_env(tree), check=False)
    return result.stdout + result.stderr


def tree_revision(tree: Path) -> str | None:
    """The service tree's ``REVISION`` file (a snapshot's), else its ``git describe``."""
    marker = tree / "REVISION"
    if marker.is_file():
        return marker.read_text().strip() or None
    result = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=tree,
                            capture_output=True, text=True, timeout=30, check=False)
    return result.stdout.strip() or None


class FleetService:
    """One service process tree: start, poll the API, kill a worker, stop (also on errors)."""

    def __init__(self, tree: Path, config_dir: Path, data_dir: Path, workers: int,
                 extra_args: list[str], drain_timeout_s: float = 20.0) -> None:
        self.tree, self.config_dir, self.data_dir = tree, config_dir, data_dir
        self.workers, self.extra_args = workers, extra_args
        self.drain_timeout_s = drain_timeout_s
        self.port = free_port()
        self.log_path = data_dir.parent / f"{data_dir.name}-service.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.api = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30)
        self.started_at = 0.0

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def argv(self) -> list[str]:
        return [*CLI, "--config", str(self.config_dir), "--data-dir", str(self.data_dir),
                "--api-addr", f"127.0.0.1:{self.port}", "--workers", str(self.workers),
                "--drain-timeout-s", str(self.drain_timeout_s), *self.extra_args]

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            # Own session: a Ctrl-C of the benchmark reaches only the benchmark, which stops
            # the service itself (TERM, then KILL of the whole tree).
            self.process = subprocess.Popen(self.argv(), cwd=self.tree, stdout=out,
                                            stderr=subprocess.STDOUT, env=_env(self.tree),
                                            start_new_session=True)
        self.started_at = time.monotonic()

    def get(self, path: str) -> httpx.Response | None:
        self.check_alive()
        try:
            return self.api.get(path)
        except httpx.TransportError:
            return None

    def process_alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise ServiceExited(f"service exited with code {self.process.returncode}; "
                                f"log {self.log_path}:\n{self.log_tail()}")

    def statuses(self) -> Counter[str]:
        response = self.get("/pipelines")
        if response is None or response.status_code != 200:
            return Counter()
        return Counter(p["status"] for p in response.json())

    def wait_ready(self, timeout_s: float) -> float | None:
        """Seconds from start until /ready answers 200, or None after timeout_s."""
        return self._wait(lambda: _ok(self.get("/ready")), timeout_s)

    def wait_all_running(self, count: int, timeout_s: float) -> tuple[float | None, Counter[str]]:
        """Seconds from start until ``count`` pipelines are running, and the last counts."""
        last: Counter[str] = Counter()

        def all_running() -> bool:
            nonlocal last
            last = self.statuses()
            return last["running"] >= count

        return self._wait(all_running, timeout_s), last

    def _wait(self, check: Any, timeout_s: float) -> float | None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if check():
                return time.monotonic() - self.started_at
            time.sleep(POLL_S)
        return None

    def pipeline_ops(self, name: str) -> dict[str, Any] | None:
        response = self.get(f"/pipelines/{name}")
        if response is None or response.status_code != 200:
            return None
        info: dict[str, Any] = response.json()
        return {"status": info.get("status"), **(info.get("ops") or {})}

    def scrape_metrics(self) -> tuple[float, int, int]:
        """One GET /metrics: seconds, body bytes, sample lines."""
        started = time.perf_counter()
        response = self.get("/metrics")
        elapsed_s = time.perf_counter() - started
        if response is None or response.status_code != 200:
            raise RuntimeError(f"/metrics failed: {response}")
        body = response.content
        samples = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
        return elapsed_s, len(body), samples

    def stop(self) -> int | None:
        """SIGTERM (drain), then SIGKILL of the whole tree if it is not gone in time."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            children = descendants(self.process.pid)
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(self.drain_timeout_s + 15)
            except subprocess.TimeoutExpired:
                log.warning("service did not stop after SIGTERM; killing its tree")
                self.kill_tree(children)
        self._kill_leftovers()
        self.api.close()
        return self.process.returncode

    def kill_tree(self, children: list[int]) -> None:
        assert self.process is not None
        self.process.kill()
        for pid in [*children, *descendants(self.process.pid)]:
            _kill(pid)
        self.process.wait(30)

    def _kill_leftovers(self) -> None:
        """Children whose supervisor is gone exit on their own; make sure of it."""
        assert self.process is not None
        for pid in _session_members(self.process.pid):
            _kill(pid)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def _ok(response: httpx.Response | None) -> bool:
    return response is not None and response.status_code == 200


def _env(tree: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree)}


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _session_members(session_id: int) -> list[int]:
    """Live processes of the session the service leads (its pid is the session id)."""
    members: list[int] = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session_id and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members
