"""Command-line options of ``deltaforge run``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Options:
    config: Path | None
    api_addr: tuple[str, int]
    data_dir: Path
    workers: int
    drain_timeout_s: float
    log_level: str
    heartbeat_timeout_s: float = 30.0  # silent this long: stuck (SIGQUIT, SIGABRT, SIGKILL)
    stream_sharing: bool = True  # one binlog stream per server per worker
    worker_nice: int = 5  # workers run this much nicer than the supervisor and the api


def parse_addr(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``:PORT`` means all interfaces)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)))
