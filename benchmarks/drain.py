"""Drain benchmark: a backlog of inserted rows from the MariaDB binlog into Kafka.

    python3 -m benchmarks.drain [--rows 500000] [--out benchmarks/results/drain.json]
                                [--skip-exactly-once]

Compares a hand-written BinLogStreamReader + Producer loop (the baseline, in this process)
with the real ``supervisor.cli`` (ours, a subprocess tree), both draining the same backlog;
ours runs twice, at-least-once and exactly-once (``exactly_once: true``, one Kafka transaction
per batch), each with its own output topic, data dir and seeded checkpoint.
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
    committed_messages,
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
EXACTLY_ONCE_TOPIC = "ours-eo.items"
EXACTLY_ONCE_CHECKPOINTS = "ours-eo.checkpoints"
LABEL_WIDTH = 34
LIBRARIES = ("mysql-replication", "PyMySQL", "confluent-kafka", "orjson", "msgspec", "lmdb")


@dataclass(frozen=True)
class Run:
    backlog: Backlog
    baseline: Result
    ours: Result
    exactly_once: Result | None


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
    parser.add_argument("--skip-exactly-once", action="store_true",
                        help="do not run ours a second time with exactly_once: true")
    return parser.parse_args(argv)


def run_benchmark(base_dir: Path, args: argparse.Namespace) -> Run:
    rows = args.rows
    exactly_once = not args.skip_exactly_once
    topics = (BASELINE_TOPIC, OURS_TOPIC, *((EXACTLY_ONCE_TOPIC,) if exactly_once else ()))
    with services(base_dir) as running:
        bootstrap = running.kafka.bootstrap
        for topic in topics:
            running.kafka.create_topic(topic, TOPIC_PARTITIONS)
        warm_up(bootstrap, transactional=exactly_once)
        backlog = create_backlog(running.mariadb, rows)
        log.info("baseline: hand-written loop")
        baseline = run_baseline(running.mariadb, bootstrap, BASELINE_TOPIC, backlog)
        log.info("ours: supervisor.cli --workers 1, at-least-once")
        target = Target(running.mariadb, bootstrap, OURS_TOPIC)
        ours = run_ours(target, backlog, base_dir / "ours", args.profile, args.profile_gil)
        eo: Result | None = None
        if exactly_once:
            log.info("ours: supervisor.cli --workers 1, exactly-once")
            eo_target = Target(running.mariadb, bootstrap, EXACTLY_ONCE_TOPIC,
                               checkpoint_topic=EXACTLY_ONCE_CHECKPOINTS)
            eo = run_ours(eo_target, backlog, base_dir / "ours-eo", name="ours exactly-once")
        verify(bootstrap, rows, exactly_once)
    for result in (ours, eo):
        if result is not None and result.extra["decoder_fallback_warnings"]:
            log.warning("%s: rows were decoded by the library, not the fast decoder (see the "
                        "service log)", result.name)
    return Run(backlog, baseline, ours, eo)


def verify(bootstrap: str, rows: int, exactly_once: bool) -> None:
    """Every topic holds exactly ``rows`` messages.

    The at-least-once topics by their high watermarks; the exactly-once topic by counting what
    a ``read_committed`` consumer reads (its transaction markers occupy offsets too), and its
    keys must be distinct (no row twice).
    """
    for topic in (BASELINE_TOPIC, OURS_TOPIC):
        found = topic_messages(bootstrap, topic)
        if found != rows:
            raise RuntimeError(f"topic {topic} has {found} messages, expected {rows}")
    if exactly_once:
        found, keys = committed_messages(bootstrap, EXACTLY_ONCE_TOPIC)
        offsets = topic_messages(bootstrap, EXACTLY_ONCE_TOPIC)
        log.info("topic %s: %d committed messages, %d distinct keys, %d offsets",
                 EXACTLY_ONCE_TOPIC, found, keys, offsets)
        if found != rows or keys != rows:
            raise RuntimeError(f"topic {EXACTLY_ONCE_TOPIC} has {found} committed messages "
                               f"with {keys} distinct keys, expected {rows}")


def table(run: Run) -> str:
    b, o, e = run.baseline, run.ours, run.exactly_once
    w = LABEL_WIDTH

    def row(label: str, r: Result) -> str:
        return (f"{label:<{w}}{r.rows:>9}{r.wall_s:>10.1f}{r.rows_per_s:>10.0f}"
                f"{r.cpu_s_per_1k_rows:>15.3f}")

    def startup_excluded(label: str, r: Result) -> str:
        return (f"{label:<{w}}{r.rows:>9}{r.extra['drain_s']:>10.1f}"
                f"{r.extra['drain_rows_per_s']:>10.0f}{'':>15}")

    def ratio(label: str, top: Result, bottom: Result) -> str:
        return (f"{label:<{w}}{'':>9}{top.wall_s / bottom.wall_s:>10.2f}"
                f"{top.rows_per_s / bottom.rows_per_s:>10.2f}"
                f"{top.cpu_s_per_1k_rows / bottom.cpu_s_per_1k_rows:>15.2f}")

    lines = [
        f"{'':<{w}}{'rows':>9}{'seconds':>10}{'rows/s':>10}{'CPU s/1k rows':>15}",
        row(b.name, b),
        row("ours at-least-once", o),
        startup_excluded("  excluding start-up", o),
    ]
    if e is not None:
        lines += [row(e.name, e), startup_excluded("  excluding start-up", e)]
    lines.append(ratio("ratio ours at-least-once/baseline", o, b))
    if e is not None:
        lines.append(ratio("ratio exactly-once/at-least-once", e, o))
        pct = overhead(o, e)
        lines.append(f"\nexactly-once vs at-least-once: rows/s {pct['rows_per_s_pct']:+.1f} %, "
                     f"CPU s per 1k rows {pct['cpu_s_per_1k_rows_pct']:+.1f} % "
                     f"(excluding start-up: rows/s {pct['drain_rows_per_s_pct']:+.1f} %)")
    return "\n".join(lines)


def overhead(ours: Result, eo: Result) -> dict[str, float]:
    """Exactly-once relative to at-least-once, in percent (negative rows/s: slower)."""
    def pct(new: float, old: float) -> float:
        return round((new / old - 1) * 100, 1)
    return {
        "seconds_pct": pct(eo.wall_s, ours.wall_s),
        "rows_per_s_pct": pct(eo.rows_per_s, ours.rows_per_s),
        "drain_rows_per_s_pct": pct(eo.extra["drain_rows_per_s"],
                                    ours.extra["drain_rows_per_s"]),
        "cpu_s_per_1k_rows_pct": pct(eo.cpu_s_per_1k_rows, ours.cpu_s_per_1k_rows),
    }


def report(run: Run, started_at: datetime, command: str) -> dict[str, Any]:
    b, o, e = run.baseline, run.ours, run.exactly_once
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
        "ours_exactly_once": None if e is None else e.as_json(),
        "exactly_once_overhead": None if e is None else overhead(o, e),
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
