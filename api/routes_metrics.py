"""``/metrics``: every process's series merged, filtered to existing pipelines."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from api.metrics_collector import FleetCollector


async def metrics(request: Request) -> Response:
    state = request.app.state
    if getattr(state, "metrics_registry", None) is None:
        state.metrics_registry = CollectorRegistry()
        state.metrics_registry.register(FleetCollector(state.specs, state.statuses))
    body = await run_in_threadpool(generate_latest, state.metrics_registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
