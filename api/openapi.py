"""``/openapi.json``, built from the app's own route table so the two cannot drift apart.

Every route and method must have an entry in ``OPERATIONS``; a missing one fails at start.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from starlette.routing import BaseRoute, Route

from state.spec import PipelineSpec

SPEC = {"$ref": "#/components/schemas/PipelineSpec"}
ANY_OBJECT: dict[str, Any] = {"type": "object"}
ERROR = {"$ref": "#/components/schemas/Error"}
PIPE_INFO = {"$ref": "#/components/schemas/PipeInfo"}
LABELS = {"name": "label", "in": "query", "required": False, "style": "form", "explode": True,
          "schema": {"type": "array", "items": {"type": "string"}},
          "description": "k:v (value equals) or k (key present); repeat to AND"}
CONNECT = {"name": "connect", "in": "query", "required": False,
           "schema": {"type": "string", "enum": ["true", "false"]}}
# (summary, request body schema or None, {status: response schema or None}, query parameters)
Operation = tuple[str, dict[str, Any] | None, dict[int, dict[str, Any] | None], list[Any]]
E404 = {404: ERROR}
DLQ_ERRORS = {404: ERROR, 409: ERROR}
DLQ_ENTRY = {"type": "object", "required": ["seq", "timestamp", "pipeline", "event_id",
                                            "source_cursor", "event", "meta"]}
DLQ_QUERY = [
    {"name": "limit", "in": "query", "required": False,
     "schema": {"type": "integer", "minimum": 1}, "description": "default 50, at most 1000"},
    {"name": "sink_id", "in": "query", "required": False, "schema": {"type": "string"}},
    {"name": "error_kind", "in": "query", "required": False, "schema": {"type": "string"},
     "description": "e.g. 'routing error', 'serialization error'"},
]


def _counted(field: str) -> dict[str, Any]:
    return {"type": "object", "required": [field],
            "properties": {field: {"type": "integer", "minimum": 0}}}


WRITE_ERRORS = {400: ERROR, 404: ERROR, 415: ERROR, 503: ERROR}
OPERATIONS: dict[tuple[str, str], Operation] = {
    ("/health", "GET"): ("Healthy unless a pipeline failed", None, {200: ANY_OBJECT,
                                                                     503: ANY_OBJECT}, []),
    ("/ready", "GET"): ("Ready once every pipeline was picked up", None,
                        {200: ANY_OBJECT, 503: ANY_OBJECT}, []),
    ("/metrics", "GET"): ("Prometheus metrics (text)", None, {200: None}, []),
    ("/openapi.json", "GET"): ("This document", None, {200: ANY_OBJECT}, []),
    ("/log-level", "GET"): ("Current log level", None, {200: ANY_OBJECT}, []),
    ("/log-level", "PUT"): ("Change the log level of every process",
                            {"type": "object", "required": ["level"], "properties": {
                                "level": {"type": "string", "enum": [
                                    "debug", "info", "warning", "error", "critical"]}}},
                            {200: ANY_OBJECT, 400: ERROR, 415: ERROR, 503: ERROR}, []),
    ("/validate", "POST"): ("Dry-run a spec", SPEC, {200: ANY_OBJECT, 400: ANY_OBJECT,
                                                     415: ERROR}, [CONNECT]),
    ("/pipelines", "GET"): ("List pipelines", None,
                            {200: {"type": "array", "items": PIPE_INFO}, 400: ERROR}, [LABELS]),
    ("/pipelines", "POST"): ("Create a pipeline", SPEC, {200: PIPE_INFO, 409: ERROR,
                                                         **WRITE_ERRORS}, []),
    ("/pipelines/{name}", "GET"): ("One pipeline with ops", None, {200: PIPE_INFO, **E404}, []),
    ("/pipelines/{name}", "PATCH"): ("Deep-merge a partial spec; restart from checkpoints",
                                     ANY_OBJECT, {200: PIPE_INFO, **WRITE_ERRORS}, []),
    ("/pipelines/{name}", "DELETE"): ("Delete a pipeline and its state", None,
                                      {204: None, 404: ERROR, 503: ERROR}, []),
    ("/pipelines/{name}/{action}", "POST"): ("pause, resume or stop one pipeline", None,
                                             {200: PIPE_INFO, 404: ERROR, 503: ERROR}, []),
    ("/pipelines/{name}/checkpoints", "GET"): ("Per-sink checkpoints", None,
                                               {200: {"type": "array"}, **E404}, []),
    ("/pipelines/{name}/journal/dlq", "GET"): (
        "Peek dead-lettered events, oldest first (filters apply before the limit)", None,
        {200: {"type": "array", "items": DLQ_ENTRY}, **DLQ_ERRORS}, DLQ_QUERY),
    ("/pipelines/{name}/journal/dlq", "DELETE"): ("Purge the dead-letter queue", None,
                                                  {200: _counted("purged"), **DLQ_ERRORS}, []),
    ("/pipelines/{name}/journal/dlq/count", "GET"): ("Entries in the dead-letter queue", None,
                                                     {200: _counted("count"), **DLQ_ERRORS}, []),
    ("/pipelines/{name}/journal/dlq/ack", "POST"): (
        "Delete entries up to a seq (inclusive)",
        {"type": "object", "required": ["up_to_seq"], "properties": {
            "up_to_seq": {"type": "integer", "minimum": 0, "maximum": 2**64 - 1}}},
        {200: _counted("acked"), 400: ERROR, 415: ERROR, **DLQ_ERRORS}, []),
    ("/pipelines/{name}/schemas", "GET"): ("Table schemas the pipeline has seen", None,
                                           {200: {"type": "array"}, **E404}, []),
    ("/pipelines/{name}/schemas/{db}/{table}", "GET"): ("One table schema", None,
                                                        {200: ANY_OBJECT, **E404}, []),
}
for _action in ("pause", "resume", "stop"):
    OPERATIONS[(f"/pipelines/{_action}", "POST")] = (
        f"{_action} every pipeline matching the labels", None,
        {200: ANY_OBJECT, 400: ERROR, 503: ERROR}, [LABELS])


def build_openapi(routes: list[BaseRoute]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        assert isinstance(route, Route) and route.methods is not None
        for method in sorted(route.methods - {"HEAD"}):
            operation = OPERATIONS[(route.path, method)]
            paths.setdefault(route.path, {})[method.lower()] = _operation(route.path, operation)
    return {"openapi": "3.1.0",
            "info": {"title": "DeltaForge-Py API", "version": "1"},
            "paths": paths, "components": {"schemas": _schemas()}}


def _operation(path: str, operation: Operation) -> dict[str, Any]:
    summary, body, responses, query = operation
    params = [{"name": n, "in": "path", "required": True, "schema": _path_schema(n)}
              for n in re.findall(r"{(\w+)}", path)]
    doc: dict[str, Any] = {"summary": summary, "parameters": params + query, "responses": {
        str(status): _response(schema) for status, schema in responses.items()}}
    if body is not None:
        doc["requestBody"] = {"required": True,
                              "content": {"application/json": {"schema": body}}}
    return doc


def _path_schema(name: str) -> dict[str, Any]:
    if name == "action":
        return {"type": "string", "enum": ["pause", "resume", "stop"]}
    return {"type": "string"}


def _response(schema: dict[str, Any] | None) -> dict[str, Any]:
    if schema is None:
        return {"description": "see docs/api.md"}
    return {"description": "see docs/api.md", "content": {"application/json": {"schema": schema}}}


def _schemas() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(
        [PipelineSpec], ref_template="#/components/schemas/{name}")
    components["Error"] = {"type": "object", "required": ["code", "message"], "properties": {
        "code": {"type": "string"}, "message": {"type": "string"}}}
    components["PipeInfo"] = {"type": "object", "required": ["name", "status", "spec"],
                              "properties": {"name": {"type": "string"},
                                             "status": {"type": "string"},
                                             "spec": {"type": "object"}}}
    return components
