"""``/metrics``: every process's series merged, filtered to existing pipelines."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from api.metrics_collector import FleetMetrics


async def metrics(request: Request) -> Response:
    state = request.app.state
    if getattr(state, "fleet_metrics", None) is None:
        state.fleet_metrics = FleetMetrics(state.specs, state.statuses)
    body = await run_in_threadpool(state.fleet_metrics.render)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
