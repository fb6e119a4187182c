"""``deltaforge``: run the service, or validate pipeline files.

    deltaforge --config PATH [--api-addr HOST:PORT] [--data-dir DIR] [--workers N]
               [--drain-timeout-s S] [--heartbeat-timeout-s S] [--log-level LEVEL]
               [--stream-sharing on|off] [--worker-nice N]
    deltaforge validate PATH
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import shutil
import sys
import time
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING

from supervisor.config_files import file_specs, load_config
from supervisor.options import Options, default_workers, parse_addr

if TYPE_CHECKING:
    from supervisor.boot import Desired

log = logging.getLogger("deltaforge")


class ExitCode(IntEnum):
    OK = 0
    FAILURE = 1
    CONFIG = 2
    STATE = 3


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["validate"]:
        return validate(args[1:])
    if args[:1] == ["run"]:
        args = args[1:]
    try:
        options = parse_run_options(args)
    except ValueError as exc:
        print(f"deltaforge: {exc}", file=sys.stderr)
        return ExitCode.CONFIG
    return run(options)


def parse_run_options(args: list[str]) -> Options:
    parser = argparse.ArgumentParser(prog="deltaforge", description="MySQL/MariaDB CDC to Kafka")
    parser.add_argument("--config", type=Path, help="pipeline YAML file or directory of them")
    parser.add_argument("--api-addr", default="0.0.0.0:8080", help="HOST:PORT of the REST API")
    parser.add_argument("--data-dir", type=Path, default=Path("./data"), help="state and metrics")
    parser.add_argument("--workers", type=int, default=default_workers(), help="worker processes")
    parser.add_argument("--drain-timeout-s", type=float, default=30.0, help="graceful stop budget")
    parser.add_argument("--log-level", default=os.environ.get("DELTAFORGE_LOG_LEVEL", "info"))
    parser.add_argument("--heartbeat-timeout-s", type=float, default=30.0,
                        help="a worker whose data loop is silent this long is stuck: its "
                             "stacks are dumped (SIGQUIT), then it is killed and restarted")
    parser.add_argument("--stream-sharing", choices=("on", "off"), default="on",
                        help="one binlog stream per MySQL server per worker, shared by its "
                             "pipelines (off: one binlog connection per pipeline)")
    parser.add_argument("--worker-nice", type=int, default=5,
                        help="workers run this much nicer (0-19) than the supervisor and the "
                             "api, so health checks, scrapes and the watchdog answer under "
                             "full load")
    ns = parser.parse_args(args)
    if not 0 <= ns.worker_nice <= 19:
        raise ValueError("--worker-nice must be between 0 and 19")
    if ns.workers < 1:
        raise ValueError("--workers must be at least 1")
    if ns.heartbeat_timeout_s <= 0:
        raise ValueError("--heartbeat-timeout-s must be above 0")
    return Options(ns.config, parse_addr(ns.api_addr), ns.data_dir.resolve(), ns.workers,
                   ns.drain_timeout_s, ns.log_level, ns.heartbeat_timeout_s,
                   ns.stream_sharing == "on", ns.worker_nice)


def validate(args: list[str]) -> int:
    """Check every spec under PATH; print one line per pipeline or error."""
    if len(args) != 1:
        print("usage: deltaforge validate PATH", file=sys.stderr)
        return ExitCode.CONFIG
    loaded = load_config(Path(args[0]))
    for file, spec in loaded.specs:
        print(f"ok {spec.name} ({file}): {len(spec.spec.sinks)} sink(s)")
    for error in loaded.errors:
        print(f"error {error}")
    return ExitCode.CONFIG if loaded.errors else ExitCode.OK


def run(options: Options) -> int:
    faulthandler.enable(all_threads=True)  # systemd's watchdog sends SIGABRT: stacks to the log
    metrics_dir = prepare_metrics_dir(options.data_dir)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    from supervisor.logs import setup_logging

    setup_logging(options.log_level)
    try:
        return supervise(options)
    finally:
        # Write out the log queue now: at exit multiprocessing's finalizers close the queue's
        # reader before logging's own shutdown runs, and the last records would be lost.
        logging.shutdown()


def supervise(options: Options) -> int:
    """Import the config files, then run the arbiter until it stops."""
    from state.env import StateError
    from supervisor.arbiter import Arbiter

    try:
        try:
            pipelines = import_config(options)
        except (OSError, ValueError) as exc:
            log.error("cannot start: %s", exc)
            return ExitCode.CONFIG
        return Arbiter(options, pipelines).run()
    except StateError as exc:  # from the import or the arbiter
        log.error("state error: %s", exc)
        return ExitCode.STATE


def prepare_metrics_dir(data_dir: Path) -> Path:
    """A fresh PROMETHEUS_MULTIPROC_DIR: files of an earlier run would double-count."""
    metrics_dir = data_dir / "metrics"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    return metrics_dir


def import_config(options: Options) -> Desired:
    """Write the config files' specs into state; returns every pipeline's desired state."""
    from supervisor.boot import sync_specs

    specs = file_specs(options.config) if options.config is not None else []
    return sync_specs(options.data_dir, specs, time.time())


if __name__ == "__main__":
    raise SystemExit(main())
