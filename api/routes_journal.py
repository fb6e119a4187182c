"""``/pipelines/{name}/journal/dlq``: peek, count, ack and purge dead-lettered events.

Ack and purge delete entries in LMDB directly, in a thread (they wait for LMDB's writer lock,
see ``api.routes_lifecycle``); a pipeline blocked on a full queue re-reads the count and
continues.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from starlette.requests import Request

from api.bodies import json_object
from api.errors import ApiError, pipeline_not_found
from api.responses import JSONResponse
from state.stores import DlqStore

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
MAX_SEQ = 2**64 - 1


async def peek_dlq(request: Request) -> JSONResponse:
    """Oldest first; ``sink_id`` and ``error_kind`` filter before ``limit`` applies."""
    name = _enabled_pipeline(request)
    query = request.query_params
    entries = _store(request).peek(name, _limit(query.get("limit")), query.get("sink_id"),
                                   query.get("error_kind"))
    return JSONResponse([msgspec.to_builtins(entry) for entry in entries])


async def count_dlq(request: Request) -> JSONResponse:
    name = _enabled_pipeline(request)
    return JSONResponse({"count": _store(request).count(name)})


async def ack_dlq(request: Request) -> JSONResponse:
    """Delete every entry with ``seq <= up_to_seq`` (cumulative from the head)."""
    name = _enabled_pipeline(request)
    body = await json_object(request, code="INVALID_BODY")
    up_to = body.get("up_to_seq")
    if isinstance(up_to, bool) or not isinstance(up_to, int) or not 0 <= up_to <= MAX_SEQ:
        raise ApiError(400, "INVALID_BODY", "up_to_seq must be an integer from 0 to 2^64-1")
    return JSONResponse({"acked": await asyncio.to_thread(_store(request).ack, name, up_to)})


async def purge_dlq(request: Request) -> JSONResponse:
    name = _enabled_pipeline(request)
    return JSONResponse({"purged": await asyncio.to_thread(_store(request).purge, name)})


def journal_enabled(spec: dict[str, Any]) -> bool:
    return bool(spec.get("spec", {}).get("journal", {}).get("enabled", False))


def _enabled_pipeline(request: Request) -> str:
    name: str = request.path_params["name"]
    record = request.app.state.specs.get(name)
    if record is None:
        raise pipeline_not_found(name)
    if not journal_enabled(record.spec):
        raise ApiError(409, "DLQ_DISABLED", f"DLQ not enabled for pipeline {name} "
                       "(set spec.journal.enabled: true)")
    return name


def _limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 9) or int(raw) < 1:
        raise ApiError(400, "INVALID_QUERY", f"limit must be a positive integer, got {raw!r}")
    return min(int(raw), MAX_LIMIT)


def _store(request: Request) -> DlqStore:
    store: DlqStore = request.app.state.dlq
    return store
