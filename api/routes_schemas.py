"""``/pipelines/{name}/schemas``: the table versions a pipeline has met in the binlog."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from api.errors import ApiError, pipeline_not_found
from api.responses import JSONResponse
from state.records import TableSchemaRecord
from state.stores import SEP, SchemaStore


async def list_schemas(request: Request) -> JSONResponse:
    name = _existing(request)
    records = [record for _, record in _store(request).items(name + SEP)]
    return JSONResponse([schema_summary(record) for record in records])


async def get_schema(request: Request) -> JSONResponse:
    name = _existing(request)
    db, table = request.path_params["db"], request.path_params["table"]
    record = _store(request).get(SchemaStore.key(name, db, table))
    if record is None:
        raise ApiError(404, "SCHEMA_NOT_FOUND",
                       f"pipeline {name} has not seen table {db}.{table}")
    return JSONResponse(schema_detail(record))


def schema_summary(record: TableSchemaRecord) -> dict[str, Any]:
    return {"database": record.database, "table": record.table,
            "column_count": len(record.columns), "primary_key": record.primary_key,
            "fingerprint": record.fingerprint, "registry_version": record.version}


def schema_detail(record: TableSchemaRecord) -> dict[str, Any]:
    keys = set(record.primary_key)
    columns = [{**column, "ordinal_position": index + 1,
                "is_primary_key": column.get("name") in keys}
               for index, column in enumerate(record.columns)]
    return {"database": record.database, "table": record.table, "columns": columns,
            "primary_key": record.primary_key, "fingerprint": record.fingerprint,
            "registry_version": record.version, "loaded_at": record.seen_at}


def _existing(request: Request) -> str:
    name: str = request.path_params["name"]
    if request.app.state.specs.get(name) is None:
        raise pipeline_not_found(name)
    return name


def _store(request: Request) -> SchemaStore:
    store: SchemaStore = request.app.state.schemas
    return store
