"""``/metrics``: every process's series merged, filtered to existing pipelines."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from api.metrics_collector import FleetCollector


async def metrics(request: Request) -> Response:
    registry = CollectorRegistry()
    registry.register(FleetCollector(request.app.state.specs, request.app.state.statuses))
    body = await run_in_threadpool(generate_latest, registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
