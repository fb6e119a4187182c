"""Request count and latency of the API, labelled by route template (bounded cardinality)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

from prometheus_client import Counter, Histogram
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DURATION_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
UNMATCHED = "unmatched"


@dataclass(frozen=True)
class ApiFamilies:
    requests: Counter
    duration: Histogram


@cache
def api_families() -> ApiFamilies:
    """Created on first request (after the api set its process identity)."""
    return ApiFamilies(
        requests=Counter("deltaforge_api_requests_total", "API requests answered",
                         ["route", "method", "status"]),
        duration=Histogram("deltaforge_api_request_duration_seconds",
                           "API request handling time", ["route", "method"],
                           buckets=DURATION_BUCKETS_S),
    )


class RequestMetrics:
    """ASGI middleware: counts each HTTP request by its route template, method and status."""

    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            self.observe(scope, status, time.perf_counter() - started)

    def observe(self, scope: Scope, status: int, duration_s: float) -> None:
        route, method = self.template(scope), str(scope["method"])
        families = api_families()
        families.requests.labels(route, method, str(status)).inc()
        families.duration.labels(route, method).observe(duration_s)

    def template(self, scope: Scope) -> str:
        """The path template of the first route that matches fully, else of the first whose path
        matches (a 405), else ``unmatched``."""
        partial = UNMATCHED
        for route in self.routes:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return str(getattr(route, "path", UNMATCHED))
            if match == Match.PARTIAL and partial == UNMATCHED:
                partial = str(getattr(route, "path", UNMATCHED))
        return partial
