"""``/health`` and ``/ready``."""

from __future__ import annotations

from starlette.requests import Request

from api.responses import JSONResponse
from api.views import pipe_info, pipeline_status
from state.stores import SpecStore, StatusStore


async def health(request: Request) -> JSONResponse:
    """200 while no pipeline is failed; 503 with the failed names otherwise."""
    specs, statuses = request.app.state.specs, request.app.state.statuses
    records = dict(specs.items())
    reports = dict(statuses.items())
    failed = [n for n, r in records.items() if pipeline_status(r, reports.get(n)) == "failed"]
    if failed:
        return JSONResponse({"status": "unhealthy", "failed_pipelines": failed}, 503)
    return JSONResponse({"status": "healthy", "pipelines": len(records)})


async def ready(request: Request) -> JSONResponse:
    """200 once every pipeline that should run has been picked up by its worker."""
    specs: SpecStore = request.app.state.specs
    statuses: StatusStore = request.app.state.statuses
    reports = dict(statuses.items())
    infos = [pipe_info(record, reports.get(name)) for name, record in specs.items()]
    if any(info["status"] == "pending" for info in infos):
        return JSONResponse({"status": "not_ready", "pipelines": infos}, 503)
    return JSONResponse({"status": "ready", "pipelines": infos})
