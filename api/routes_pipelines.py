"""``/pipelines`` reads: list (with label filters) and one pipeline with its ``ops``."""

from __future__ import annotations

import time

from starlette.requests import Request

from api.errors import ApiError, pipeline_not_found
from api.responses import JSONResponse
from api.views import checkpoint_info, ops, pipe_info
from state.records import PipelineRecord
from state.stores import CheckpointStore, SpecStore, StatusStore


def label_filter(values: list[str]) -> list[tuple[str, str | None]]:
    """``k:v`` must equal, ``k`` must be present (DeltaForge's syntax)."""
    pairs: list[tuple[str, str | None]] = []
    for value in values:
        key, sep, wanted = value.partition(":")
        if not key:
            raise ApiError(400, "INVALID_QUERY", f"label filter {value!r} must be k:v or k")
        pairs.append((key, wanted if sep else None))
    return pairs


def matches(record: PipelineRecord, pairs: list[tuple[str, str | None]]) -> bool:
    labels = record.spec.get("metadata", {}).get("labels", {})
    return all(k in labels and (v is None or labels[k] == v) for k, v in pairs)


async def list_pipelines(request: Request) -> JSONResponse:
    specs: SpecStore = request.app.state.specs
    statuses: StatusStore = request.app.state.statuses
    pairs = label_filter(request.query_params.getlist("label"))
    reports = dict(statuses.items())
    infos = [pipe_info(r, reports.get(n)) for n, r in specs.items() if matches(r, pairs)]
    return JSONResponse(infos)


async def get_pipeline(request: Request) -> JSONResponse:
    name = request.path_params["name"]
    specs: SpecStore = request.app.state.specs
    record = specs.get(name)
    if record is None:
        raise pipeline_not_found(name)
    status = request.app.state.statuses.get(name)
    checkpoints: CheckpointStore = request.app.state.checkpoints
    info = pipe_info(record, status)
    dlq_entries = request.app.state.dlq.count(name)
    info["ops"] = ops(status, checkpoints.for_pipeline(name), dlq_entries)
    return JSONResponse(info)


async def get_checkpoints(request: Request) -> JSONResponse:
    name = request.path_params["name"]
    if request.app.state.specs.get(name) is None:
        raise pipeline_not_found(name)
    now = time.time()
    records = request.app.state.checkpoints.for_pipeline(name).values()
    return JSONResponse([checkpoint_info(record, now) for record in records])
