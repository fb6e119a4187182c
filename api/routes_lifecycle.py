"""``/pipelines`` writes: create, patch, delete, pause/resume/stop, and the bulk versions.

Each write stores the desired state in LMDB (a new generation on every change), then asks the
supervisor to apply it; the lock keeps writes and their requests in the same order. The LMDB
write runs in a thread: it waits for LMDB's one writer lock, which a stuck worker can hold
until the supervisor kills it, and reads (health, metrics, listings) go on meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from api.bodies import checked_spec, json_object
from api.control import SupervisorLink
from api.errors import ApiError, pipeline_not_found
from api.merge import deep_merge
from api.responses import JSONResponse
from api.routes_pipelines import label_filter, matches
from api.views import pipe_info
from state.records import DesiredStatus, PipelineRecord
from state.spec import encode_spec
from state.stores import SpecStore

ACTIONS: dict[str, DesiredStatus] = {"pause": "paused", "resume": "running", "stop": "stopped"}


async def create_pipeline(request: Request) -> JSONResponse:
    spec = checked_spec(await json_object(request))
    specs, link = _stores(request)
    async with link.lock:
        if specs.get(spec.name) is not None:
            raise ApiError(409, "PIPELINE_ALREADY_EXISTS", f"pipeline {spec.name} already exists")
        record = PipelineRecord(spec.name, encode_spec(spec), "running", 1, "api", time.time())
        await _apply(specs, link, record)
    return JSONResponse(_info(request, record))


async def patch_pipeline(request: Request) -> JSONResponse:
    name = request.path_params["name"]
    patch = await json_object(request)
    specs, link = _stores(request)
    async with link.lock:
        record = _existing(specs, name)
        merged = deep_merge(record.spec, patch)
        _check_name(name, merged)
        body = encode_spec(checked_spec(merged))
        if body != record.spec:
            record = msgspec.structs.replace(record, spec=body, generation=record.generation + 1,
                                             updated_at=time.time())
            await _apply(specs, link, record)
    return JSONResponse(_info(request, record))


async def delete_pipeline(request: Request) -> Response:
    name = request.path_params["name"]
    specs, link = _stores(request)
    async with link.lock:
        _existing(specs, name)
        await asyncio.to_thread(specs.delete, name)
        await link.request("deleted", name)
    return Response(status_code=204)


async def pipeline_action(request: Request) -> JSONResponse:
    """``POST /pipelines/{name}/pause|resume|stop``: PipeInfo with the new status."""
    name, action = request.path_params["name"], request.path_params["action"]
    if action not in ACTIONS:
        raise ApiError(404, "NOT_FOUND", f"no action {action!r}; use pause, resume or stop")
    specs, link = _stores(request)
    async with link.lock:
        record = await _set_desired(specs, link, _existing(specs, name), ACTIONS[action])
    return JSONResponse(_info(request, record))


async def bulk_action(request: Request) -> JSONResponse:
    """``POST /pipelines/pause|resume|stop?label=...``: every match, one result each."""
    action = request.url.path.rsplit("/", 1)[1]
    pairs = label_filter(request.query_params.getlist("label"))
    if not pairs:
        raise ApiError(400, "INVALID_QUERY", "bulk operations need at least one label filter")
    specs, link = _stores(request)
    results: list[dict[str, Any]] = []
    async with link.lock:
        for _, record in list(specs.items()):
            if matches(record, pairs):
                results.append(await _bulk_one(request, specs, link, record, ACTIONS[action]))
    return JSONResponse({"action": action, "matched": len(results), "results": results})


async def _bulk_one(request: Request, specs: SpecStore, link: SupervisorLink,
                    record: PipelineRecord, desired: DesiredStatus) -> dict[str, Any]:
    try:
        record = await _set_desired(specs, link, record, desired)
    except ApiError as exc:
        return {"name": record.name, "ok": False, "code": exc.code, "message": exc.message}
    return {"name": record.name, "ok": True, "status": _info(request, record)["status"]}


async def _set_desired(specs: SpecStore, link: SupervisorLink, record: PipelineRecord,
                       desired: DesiredStatus) -> PipelineRecord:
    if record.desired == desired:
        return record
    record = msgspec.structs.replace(record, desired=desired, generation=record.generation + 1,
                                     updated_at=time.time())
    await _apply(specs, link, record)
    return record


async def _apply(specs: SpecStore, link: SupervisorLink, record: PipelineRecord) -> None:
    await asyncio.to_thread(specs.put, record.name, record)
    await link.request("pipeline", record.name, record.generation, record.desired)


def _existing(specs: SpecStore, name: str) -> PipelineRecord:
    record = specs.get(name)
    if record is None:
        raise pipeline_not_found(name)
    return record


def _check_name(name: str, merged: Any) -> None:
    metadata = merged.get("metadata") if isinstance(merged, dict) else None
    new_name = metadata.get("name") if isinstance(metadata, dict) else None
    if new_name != name:
        raise ApiError(400, "PIPELINE_NAME_MISMATCH",
                       f"pipeline name mismatch: expected {name}, got {new_name}")


def _stores(request: Request) -> tuple[SpecStore, SupervisorLink]:
    return request.app.state.specs, request.app.state.link


def _info(request: Request, record: PipelineRecord) -> dict[str, Any]:
    return pipe_info(record, request.app.state.statuses.get(record.name))
