"""The real ``deltaforge`` CLI in a subprocess, and an HTTP client for its API."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from deploy.local.processes import child_pids

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Service:
    """One ``deltaforge`` process tree with its own data dir and API port."""

    def __init__(self, config: Path, data_dir: Path, workers: int = 2,
                 extra_args: list[str] | None = None) -> None:
        self.config, self.data_dir, self.workers = config, data_dir, workers
        self.port = free_port()
        self.extra_args = extra_args or []
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "service.log"
        self.api = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10)

    def start(self, wait_ready: bool = True, timeout_s: float = 60.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "supervisor.cli", "--config", str(self.config),
                "--data-dir", str(self.data_dir), "--api-addr", f"127.0.0.1:{self.port}",
                "--workers", str(self.workers), "--drain-timeout-s", "20", *self.extra_args]
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                        env={**os.environ, "PYTHONPATH": str(REPO)})
        if wait_ready:
            self.wait_until(lambda: self.get("/ready").status_code == 200, timeout_s, "ready")

    def get(self, path: str, **params: Any) -> httpx.Response:
        try:
            return self.api.get(path, params=params)
        except httpx.TransportError:
            return httpx.Response(599)

    def send_signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait_status(self, name: str, status: str, timeout_s: float = 60.0) -> dict[str, Any]:
        self.wait_until(lambda: self.status(name) == status, timeout_s, f"{name} {status}")
        return self.pipeline(name)

    def wait_until(self, check: Any, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"service exited ({self.process.returncode}):\n{self.log()}")
            if check():
                return
            time.sleep(0.2)
        raise AssertionError(f"timed out after {timeout_s}s waiting for {what}:\n{self.log()}")

    def pipeline(self, name: str) -> dict[str, Any]:
        response = self.get(f"/pipelines/{name}")
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    def status(self, name: str) -> str | None:
        response = self.get(f"/pipelines/{name}")
        return response.json().get("status") if response.status_code == 200 else None

    def wait_running(self, name: str, timeout_s: float = 60.0) -> dict[str, Any]:
        self.wait_until(lambda: self.status(name) == "running", timeout_s, f"{name} running")
        return self.pipeline(name)

    def worker_pid(self, name: str) -> int:
        pid = self.pipeline(name)["ops"]["worker_pid"]
        assert isinstance(pid, int)
        return pid

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM and wait: the graceful drain."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout_s)

    def kill9(self) -> None:
        """SIGKILL the whole tree (supervisor and children), as a power cut would."""
        assert self.process is not None
        children = child_pids(self.process.pid)
        self.process.kill()
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(30)

    def log(self, tail_chars: int | None = 6000) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
            return text if tail_chars is None else text[-tail_chars:]
        except OSError:
            return ""

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill9()
        self.api.close()
