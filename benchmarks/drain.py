"""Drain benchmark: a backlog of inserted rows from the MariaDB binlog into Kafka.

    python3 -m benchmarks.drain [--rows 500000] [--out benchmarks/results/drain.json]

Compares a hand-written BinLogStreamReader + Producer loop (the baseline, in this process)
with the real ``supervisor.cli`` (ours, a subprocess tree), both draining the same backlog.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.baseline import run_baseline
from benchmarks.dataset import (
    TOPIC_PARTITIONS,
    Backlog,
    create_backlog,
    services,
    topic_messages,
    warm_up,
)
from benchmarks.measure import Result
from benchmarks.ours import Target, run_ours

log = logging.getLogger("benchmarks.drain")

BASELINE_TOPIC = "baseline.items"
OURS_TOPIC = "ours.items"
LIBRARIES = ("mysql-replication", "PyMySQL", "confluent-kafka", "orjson", "msgspec", "lmdb")


@dataclass(frozen=True)
class Run:
    backlog: Backlog
    baseline: Result
    ours: Result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("httpx", "pymysqlreplication"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    started_at = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="df-bench-") as tmp:
        run = run_benchmark(Path(tmp), args)
    print(table(run))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report(run, started_at, argv_text(argv)), indent=2) + "\n")
    print(f"\nwritten {args.out}")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python3 -m benchmarks.drain", description=__doc__)
    parser.add_argument("--rows", type=int, default=500_000, help="rows in the backlog")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/drain.json"))
    parser.add_argument("--profile", type=Path, default=None,
                        help="py-spy collapsed stacks of the worker to this file (skews CPU)")
    parser.add_argument("--profile-gil", action="store_true",
                        help="with --profile: sample only the thread holding the GIL")
    return parser.parse_args(argv)


def run_benchmark(base_dir: Path, args: argparse.Namespace) -> Run:
    rows = args.rows
    with services(base_dir) as running:
        bootstrap = running.kafka.bootstrap
        for topic in (BASELINE_TOPIC, OURS_TOPIC):
            running.kafka.create_topic(topic, TOPIC_PARTITIONS)
        warm_up(bootstrap)
        backlog = create_backlog(running.mariadb, rows)
        log.info("baseline: hand-written loop")
        baseline = run_baseline(running.mariadb, bootstrap, BASELINE_TOPIC, backlog)
        log.info("ours: supervisor.cli --workers 1")
        target = Target(running.mariadb, bootstrap, OURS_TOPIC)
        ours = run_ours(target, backlog, base_dir / "ours", args.profile, args.profile_gil)
        verify(bootstrap, rows)
    return Run(backlog, baseline, ours)


def verify(bootstrap: str, rows: int) -> None:
    """Both topics hold exactly ``rows`` messages."""
    for topic in (BASELINE_TOPIC, OURS_TOPIC):
        found = topic_messages(bootstrap, topic)
        if found != rows:
            raise RuntimeError(f"topic {topic} has {found} messages, expected {rows}")


def table(run: Run) -> str:
    b, o = run.baseline, run.ours
    lines = [
        f"{'':<26}{'rows':>9}{'seconds':>10}{'rows/s':>10}{'CPU s/1k rows':>15}",
        *(f"{r.name:<26}{r.rows:>9}{r.wall_s:>10.1f}{r.rows_per_s:>10.0f}"
          f"{r.cpu_s_per_1k_rows:>15.3f}" for r in (b, o)),
        f"{'ours, excluding start-up':<26}{o.rows:>9}{o.extra['drain_s']:>10.1f}"
        f"{o.extra['drain_rows_per_s']:>10.0f}{'':>15}",
        f"{'ratio ours/baseline':<26}{'':>9}{o.wall_s / b.wall_s:>10.2f}"
        f"{o.rows_per_s / b.rows_per_s:>10.2f}{o.cpu_s_per_1k_rows / b.cpu_s_per_1k_rows:>15.2f}",
    ]
    return "\n".join(lines)


def report(run: Run, started_at: datetime, command: str) -> dict[str, Any]:
    b, o = run.baseline, run.ours
    return {
        "benchmark": "drain",
        "date": started_at.isoformat(timespec="seconds"),
        "command": command,
        "rows": run.backlog.rows,
        "insert_s": round(run.backlog.insert_s, 3),
        "binlog": {"start": str(run.backlog.start), "end": str(run.backlog.end)},
        "baseline": b.as_json(),
        "ours": o.as_json(),
        "ratio_ours_to_baseline": {
            "seconds": round(o.wall_s / b.wall_s, 3),
            "rows_per_s": round(o.rows_per_s / b.rows_per_s, 3),
            "cpu_s_per_1k_rows": round(o.cpu_s_per_1k_rows / b.cpu_s_per_1k_rows, 3),
        },
        "machine": machine(),
    }


def machine() -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"nproc": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "libraries": versions}


def argv_text(argv: list[str] | None) -> str:
    args = sys.argv[1:] if argv is None else argv
    return " ".join(["python3 -m benchmarks.drain", *args])


if __name__ == "__main__":
    sys.exit(main())
