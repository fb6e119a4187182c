"""``/health`` and ``/ready``."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from starlette.requests import Request

from api.responses import JSONResponse
from api.views import pipe_info, pipeline_status
from state.env import WORKER_SLOTS_FILE
from state.stores import SpecStore, StatusStore

log = logging.getLogger(__name__)


async def health(request: Request) -> JSONResponse:
    """200 while no pipeline is failed and every worker slot boots; 503 with the failed
    pipelines (and the failing worker slots, when there are any) otherwise."""
    specs: SpecStore = request.app.state.specs
    statuses: StatusStore = request.app.state.statuses
    records = dict(specs.items())
    reports = dict(statuses.items())
    failed = [n for n, r in records.items() if pipeline_status(r, reports.get(n)) == "failed"]
    failing_workers = read_failing_workers(Path(specs.env.path()).parent)
    if failing_workers:
        return JSONResponse({"status": "unhealthy", "failed_pipelines": failed,
                             "failing_workers": failing_workers}, 503)
    if failed:
        return JSONResponse({"status": "unhealthy", "failed_pipelines": failed}, 503)
    return JSONResponse({"status": "healthy", "pipelines": len(records)})


def read_failing_workers(data_dir: Path) -> list[dict[str, Any]]:
    """The supervisor's report of worker slots that keep dying before they boot."""
    try:
        report = json.loads((data_dir / WORKER_SLOTS_FILE).read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        log.warning("worker slot report unreadable: %s", exc)
        return []
    failing = report.get("failing_workers") if isinstance(report, dict) else None
    return failing if isinstance(failing, list) else []


async def ready(request: Request) -> JSONResponse:
    """200 once every pipeline that should run has been picked up by its worker."""
    specs: SpecStore = request.app.state.specs
    statuses: StatusStore = request.app.state.statuses
    reports = dict(statuses.items())
    infos = [pipe_info(record, reports.get(name)) for name, record in specs.items()]
    if any(info["status"] == "pending" for info in infos):
        return JSONResponse({"status": "not_ready", "pipelines": infos}, 503)
    return JSONResponse({"status": "ready", "pipelines": infos})
