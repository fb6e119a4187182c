"""The benchmark's parameters, parsed from the command line."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

MODES = ("on", "off")
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Settings:
    servers: int
    pipelines_per_server: int
    rate_per_pipeline: float
    workers: int
    duration_s: float
    warmup_s: float
    idle_s: float
    settle_s: float
    tick_s: float
    sample_every: int
    start_timeout_s: float
    recover_timeout_s: float
    drain_timeout_s: float
    scrapes: int
    modes: tuple[str, ...]
    pass_sharing_flag: bool
    empty_baseline: bool
    out: Path | None
    keep_dir: bool
    service_tree: Path
    batch_max_ms: int | None = None  # None: the product default

    @property
    def pipelines(self) -> int:
        return self.servers * self.pipelines_per_server


def parse_settings(argv: list[str] | None) -> Settings:
    parser = argparse.ArgumentParser(prog="python3 -m benchmarks.fleet",
                                     description="Fleet benchmark (see docs/performance.md)")
    add = parser.add_argument
    add("--servers", type=int, default=3, help="private MariaDB servers")
    add("--pipelines-per-server", type=int, default=100, help="pipelines (tables) per server")
    add("--rate-per-pipeline", type=float, default=20.0, help="rows/s inserted per table")
    add("--workers", type=int, default=2, help="--workers of the service")
    add("--duration-s", type=float, default=60.0, help="measured window of the write load")
    add("--warmup-s", type=float, default=30.0,
        help="write load before the measured window (Kafka compiles its hot paths meanwhile)")
    add("--idle-s", type=float, default=20.0, help="idle CPU window (no writes)")
    add("--settle-s", type=float, default=10.0, help="wait after all run, before idle figures")
    add("--batch-max-ms", type=int, default=None,
        help="batch.max_ms of every pipeline (default: not set, the product default)")
    add("--tick-ms", type=float, default=100.0, help="load generator round trip period")
    add("--sample-every", type=int, default=10, help="latency from every n-th row id")
    add("--start-timeout-s", type=float, default=120.0, help="give up waiting for running")
    add("--recover-timeout-s", type=float, default=45.0, help="give up waiting after a kill")
    add("--drain-timeout-s", type=float, default=60.0, help="wait for the rest after the load")
    add("--scrapes", type=int, default=5, help="GET /metrics timed per phase")
    add("--modes", default="on,off", help="stream sharing modes to run, in order: on,off")
    add("--no-sharing-flag", action="store_true",
        help="do not pass --stream-sharing to the service (for a CLI without the option; "
             "every mode then runs the service's default)")
    add("--no-empty-baseline", action="store_true",
        help="skip the run with 0 pipelines (RSS per pipeline is then total / N)")
    add("--out", type=Path, default=None,
        help="JSON file (default benchmarks/results/fleet-<UTC timestamp>.json)")
    add("--keep-dir", action="store_true", help="keep the temporary directory (logs, data)")
    add("--service-tree", type=Path, default=REPO,
        help="source tree the service runs from (default: this checkout; use a snapshot so "
             "files edited during a run do not change what is measured)")
    ns = parser.parse_args(argv)
    modes = tuple(m.strip() for m in ns.modes.split(",") if m.strip())
    if not modes or any(m not in MODES for m in modes):
        parser.error(f"--modes takes a list of {MODES}, got {ns.modes!r}")
    if min(ns.servers, ns.pipelines_per_server, ns.workers, ns.sample_every) < 1:
        parser.error("--servers, --pipelines-per-server, --workers, --sample-every must be >= 1")
    return Settings(ns.servers, ns.pipelines_per_server, ns.rate_per_pipeline, ns.workers,
                    ns.duration_s, ns.warmup_s, ns.idle_s, ns.settle_s, ns.tick_ms / 1000,
                    ns.sample_every, ns.start_timeout_s, ns.recover_timeout_s,
                    ns.drain_timeout_s, ns.scrapes, modes, not ns.no_sharing_flag,
                    not ns.no_empty_baseline, ns.out, ns.keep_dir, ns.service_tree.resolve(),
                    ns.batch_max_ms)
