"""Entry point: services up, an empty-service baseline, each sharing mode, table and JSON."""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from benchmarks.fleet.environment import Services, running_services
from benchmarks.fleet.phases import ModeRun, memory_json, sharing_args
from benchmarks.fleet.procs import descendants, tree_cpu_s
from benchmarks.fleet.service import FleetService, cli_help, tree_revision
from benchmarks.fleet.settings import REPO, Settings, parse_settings
from benchmarks.fleet.summary import figures, ratios, table

log = logging.getLogger("benchmarks.fleet")

SHARING_OPTION = "--stream-sharing"
EMPTY_IDLE_S = 10.0


def main(argv: list[str] | None = None) -> int:
    settings = parse_settings(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("httpx", "deploy.local"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if settings.pass_sharing_flag and SHARING_OPTION not in cli_help(settings.service_tree):
        print(f"deltaforge has no {SHARING_OPTION} option yet; run with --no-sharing-flag to "
              "measure its default behaviour in every mode", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)  # cleanup as for Ctrl-C
    signal.signal(signal.SIGINT, _interrupt)  # also when started with SIGINT ignored (a & job)
    started_at = datetime.now(UTC)
    try:
        report = run(settings)
    except KeyboardInterrupt:
        print("interrupted; everything the benchmark started is stopped",
              file=sys.stderr)
        return 130
    report |= {"date": started_at.isoformat(timespec="seconds"), "command": _command(argv),
               "duration_s": round((datetime.now(UTC) - started_at).total_seconds(), 1)}
    print(table(report["figures"], report["ratio_off_to_on"]))
    out = settings.out or REPO / "benchmarks" / "results" / (
        f"fleet-{started_at.strftime('%Y%m%dT%H%M%SZ')}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten {out}")
    return 0 if not any("errors" in r for r in report["modes"].values()) else 1


def run(settings: Settings) -> dict[str, Any]:
    with ExitStack() as stack:
        work_dir = Path(tempfile.mkdtemp(prefix="df-fleet-"))
        if settings.keep_dir:
            log.info("keeping %s", work_dir)
        else:
            stack.callback(shutil.rmtree, work_dir, ignore_errors=True)
        services = stack.enter_context(running_services(work_dir, settings.servers))
        load_before = os.getloadavg()
        empty = measure_empty(services, settings, work_dir) if settings.empty_baseline else None
        modes = {mode: ModeRun(services, settings, mode, work_dir).run()
                 for mode in settings.modes}
        by_mode = {m: figures(raw, empty, settings.pipelines) for m, raw in modes.items()}
        return {"benchmark": "fleet", "parameters": parameters(settings),
                "machine": machine(load_before), "empty_service": empty, "modes": modes,
                "figures": by_mode, "ratio_off_to_on": ratios(by_mode)}
    raise AssertionError("unreachable")


def measure_empty(services: Services, settings: Settings, work_dir: Path) -> dict[str, Any]:
    """The service with no pipeline at all: its RSS is what per-pipeline RSS is counted from."""
    config_dir = work_dir / "config-empty"
    config_dir.mkdir()
    mode = settings.modes[0]
    service = FleetService(settings.service_tree, config_dir, work_dir / "data-empty",
                           settings.workers, sharing_args(settings, mode))
    try:
        service.start()
        if service.wait_ready(settings.start_timeout_s) is None:
            raise RuntimeError(f"empty service not ready:\n{service.log_tail()}")
        while len(descendants(service.pid)) < settings.workers + 1:
            service.check_alive()
            time.sleep(0.2)
        time.sleep(settings.settle_s)
        memory = memory_json(service.pid)
        cpu_before = tree_cpu_s(service.pid)
        time.sleep(EMPTY_IDLE_S)
        cpu_s = tree_cpu_s(service.pid) - cpu_before
        return {"memory": memory, "cpu_pct_of_core": round(cpu_s / EMPTY_IDLE_S * 100, 2)}
    finally:
        service.stop()


def parameters(settings: Settings) -> dict[str, Any]:
    return {"servers": settings.servers, "pipelines_per_server": settings.pipelines_per_server,
            "pipelines": settings.pipelines, "rate_per_pipeline": settings.rate_per_pipeline,
            "offered_rows_per_s": settings.pipelines * settings.rate_per_pipeline,
            "workers": settings.workers, "duration_s": settings.duration_s,
            "warmup_s": settings.warmup_s, "idle_s": settings.idle_s,
            "tick_ms": settings.tick_s * 1000, "sample_every": settings.sample_every,
            "batch_max_ms": settings.batch_max_ms,
            "modes": list(settings.modes), "sharing_flag_passed": settings.pass_sharing_flag,
            "service_tree": str(settings.service_tree),
            "service_revision": tree_revision(settings.service_tree)}


def machine(load_before: tuple[float, float, float]) -> dict[str, Any]:
    return {"nproc": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(),
            "load_avg_at_start": [round(x, 2) for x in load_before],
            "load_avg_at_end": [round(x, 2) for x in os.getloadavg()]}


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _command(argv: list[str] | None) -> str:
    return " ".join(["python3 -m benchmarks.fleet", *(sys.argv[1:] if argv is None else argv)])
