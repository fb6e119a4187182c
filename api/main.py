"""The api child: a Starlette app on uvicorn + uvloop that reads the shared state and sends
control requests to the supervisor over its pipe."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path

import uvicorn
from prometheus_client import values
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import Route

from api.control import SupervisorLink
from api.errors import ApiError, handle_api_error, handle_http_error, handle_unexpected
from api.openapi import build_openapi
from api.request_metrics import RequestMetrics
from api.routes_health import health, ready
from api.routes_journal import ack_dlq, count_dlq, peek_dlq, purge_dlq
from api.routes_lifecycle import (
    bulk_action,
    create_pipeline,
    delete_pipeline,
    patch_pipeline,
    pipeline_action,
)
from api.routes_metrics import metrics
from api.routes_pipelines import get_checkpoints, get_pipeline, list_pipelines
from api.routes_schemas import get_schema, list_schemas
from api.routes_system import get_log_level, openapi, put_log_level, validate
from state.env import StateEnv, open_state
from state.stores import CheckpointStore, DlqStore, SchemaStore, SpecStore, StatusStore

log = logging.getLogger(__name__)
SUPERVISOR_CHECK_S = 1.0


def routes() -> list[Route]:
    return [
        Route("/health", health),
        Route("/ready", ready),
        Route("/metrics", metrics),
        Route("/openapi.json", openapi),
        Route("/log-level", get_log_level, methods=["GET"]),
        Route("/log-level", put_log_level, methods=["PUT"]),
        Route("/validate", validate, methods=["POST"]),
        Route("/pipelines", list_pipelines, methods=["GET"]),
        Route("/pipelines", create_pipeline, methods=["POST"]),
        Route("/pipelines/pause", bulk_action, methods=["POST"]),
        Route("/pipelines/resume", bulk_action, methods=["POST"]),
        Route("/pipelines/stop", bulk_action, methods=["POST"]),
        Route("/pipelines/{name}", get_pipeline, methods=["GET"]),
        Route("/pipelines/{name}", patch_pipeline, methods=["PATCH"]),
        Route("/pipelines/{name}", delete_pipeline, methods=["DELETE"]),
        Route("/pipelines/{name}/checkpoints", get_checkpoints, methods=["GET"]),
        Route("/pipelines/{name}/journal/dlq", peek_dlq, methods=["GET"]),
        Route("/pipelines/{name}/journal/dlq", purge_dlq, methods=["DELETE"]),
        Route("/pipelines/{name}/journal/dlq/count", count_dlq, methods=["GET"]),
        Route("/pipelines/{name}/journal/dlq/ack", ack_dlq, methods=["POST"]),
        Route("/pipelines/{name}/schemas", list_schemas, methods=["GET"]),
        Route("/pipelines/{name}/schemas/{db}/{table}", get_schema, methods=["GET"]),
        Route("/pipelines/{name}/{action}", pipeline_action, methods=["POST"]),
    ]


def build_app(state: StateEnv, conn: Connection | None = None) -> Starlette:
    handlers = {ApiError: handle_api_error, HTTPException: handle_http_error,
                Exception: handle_unexpected}
    table = routes()
    middleware = [Middleware(RequestMetrics, routes=table)]
    app = Starlette(routes=table, exception_handlers=handlers, middleware=middleware)
    app.state.specs = SpecStore(state)
    app.state.statuses = StatusStore(state)
    app.state.checkpoints = CheckpointStore(state)
    app.state.dlq = DlqStore(state)
    app.state.schemas = SchemaStore(state)
    app.state.link = SupervisorLink(conn)
    app.state.openapi = build_openapi(list(table))
    return app


def api_main(addr: tuple[str, int], data_dir: Path, conn: Connection | None = None) -> None:
    """Entry point of the forked api child."""
    values.ValueClass = values.MultiProcessValue(process_identifier=lambda: "api")
    state = open_state(data_dir)
    threading.Thread(target=exit_with_the_supervisor, args=(os.getppid(),), daemon=True,
                     name="supervisor-watch").start()
    host, port = addr
    log.info("api listening addr=%s:%d", host, port)
    try:
        uvicorn.run(build_app(state, conn), host=host, port=port, loop="uvloop",
                    log_config=None, access_log=False, lifespan="off")
    finally:
        state.close()
        logging.shutdown()


def exit_with_the_supervisor(supervisor_pid: int) -> None:
    """Thread: SIGTERM to this process (uvicorn's graceful stop) once the supervisor is gone,
    as workers do. Without systemd ending the whole service, an api left behind would keep the
    port and answer for a service that no longer runs."""
    while os.getppid() == supervisor_pid:
        time.sleep(SUPERVISOR_CHECK_S)
    log.error("supervisor is gone; api exiting")
    os.kill(os.getpid(), signal.SIGTERM)
