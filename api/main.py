"""The api child: a Starlette app on uvicorn + uvloop that reads the shared state."""

from __future__ import annotations

import logging
from pathlib import Path

import uvicorn
from prometheus_client import values
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.routing import Route

from api.errors import ApiError, handle_api_error, handle_http_error, handle_unexpected
from api.routes_health import health, ready
from api.routes_metrics import metrics
from api.routes_pipelines import get_checkpoints, get_pipeline, list_pipelines
from state.env import StateEnv, open_state
from state.stores import CheckpointStore, SpecStore, StatusStore

log = logging.getLogger(__name__)


def build_app(state: StateEnv) -> Starlette:
    routes = [
        Route("/health", health),
        Route("/ready", ready),
        Route("/metrics", metrics),
        Route("/pipelines", list_pipelines),
        Route("/pipelines/{name}", get_pipeline),
        Route("/pipelines/{name}/checkpoints", get_checkpoints),
    ]
    handlers = {ApiError: handle_api_error, HTTPException: handle_http_error,
                Exception: handle_unexpected}
    app = Starlette(routes=routes, exception_handlers=handlers)
    app.state.specs = SpecStore(state)
    app.state.statuses = StatusStore(state)
    app.state.checkpoints = CheckpointStore(state)
    return app


def api_main(addr: tuple[str, int], data_dir: Path) -> None:
    """Entry point of the forked api child."""
    values.ValueClass = values.MultiProcessValue(process_identifier=lambda: "api")
    state = open_state(data_dir)
    host, port = addr
    log.info("api listening addr=%s:%d", host, port)
    try:
        uvicorn.run(build_app(state), host=host, port=port, loop="uvloop", log_config=None,
                    access_log=False, lifespan="off")
    finally:
        state.close()
        logging.shutdown()
