"""``/log-level``, ``/validate`` and ``/openapi.json``."""

from __future__ import annotations

import asyncio
import logging

from starlette.requests import Request

from api.bodies import json_body, json_object
from api.connect_checks import run_checks
from api.errors import ApiError
from api.responses import JSONResponse
from state.spec import SpecError, decode_spec

LEVELS = ("debug", "info", "warning", "error", "critical")


async def get_log_level(request: Request) -> JSONResponse:
    return JSONResponse({"level": current_level()})


async def put_log_level(request: Request) -> JSONResponse:
    """Change the level of every process: this one, the supervisor and (through it) workers."""
    body = await json_object(request, code="INVALID_REQUEST")
    level = body.get("level")
    if not isinstance(level, str) or level.lower() not in LEVELS:
        raise ApiError(400, "INVALID_REQUEST", f"level must be one of {', '.join(LEVELS)}")
    link = request.app.state.link
    async with link.lock:
        await link.request("log_level", level.lower())
        logging.getLogger().setLevel(level.upper())
    return JSONResponse({"level": current_level()})


def current_level() -> str:
    return logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()


async def validate(request: Request) -> JSONResponse:
    """Dry run: decode and check the spec; with ``?connect=true`` also reach its servers."""
    connect = request.query_params.get("connect", "false").lower()
    if connect not in ("true", "false"):
        raise ApiError(400, "INVALID_QUERY", "connect must be true or false")
    document = await json_body(request)
    try:
        spec = decode_spec(document)
    except SpecError as exc:
        errors = [{"path": exc.path, "message": exc.message}]
        return JSONResponse({"valid": False, "errors": errors}, 400)
    body = {"valid": True, "pipeline": spec.name, "source_type": "mysql",
            "sink_count": len(spec.spec.sinks)}
    if connect == "true":
        checks = await asyncio.to_thread(run_checks, spec)
        failed = [{"path": f"check:{c['name']}", "message": c["message"]}
                  for c in checks if not c["ok"]]
        body.update(valid=not failed, checks=checks)
        if failed:
            body["errors"] = failed
    return JSONResponse(body, 200 if body["valid"] else 400)


async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.state.openapi)
