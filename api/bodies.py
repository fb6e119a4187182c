"""Request bodies: JSON only, with structured errors for a wrong type or malformed JSON."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from api.errors import ApiError, invalid_spec
from state.spec import PipelineSpec, SpecError, decode_spec


async def json_body(request: Request) -> Any:
    """The parsed JSON body; 415 unless ``Content-Type: application/json``, 400 if malformed."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise ApiError(415, "UNSUPPORTED_MEDIA_TYPE",
                       f"expected Content-Type: application/json, got {media_type or 'none'!r}")
    raw = await request.body()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "INVALID_JSON", f"malformed JSON body: {exc}") from None


async def json_object(request: Request, code: str = "INVALID_SPEC") -> dict[str, Any]:
    body = await json_body(request)
    if not isinstance(body, dict):
        raise ApiError(400, code, f"expected a JSON object, got {type(body).__name__}",
                       {"errors": [{"path": "$", "message": "expected a JSON object"}]})
    return body


def checked_spec(document: Any) -> PipelineSpec:
    """A decoded, checked spec, or 400 INVALID_SPEC with the path of the first problem."""
    try:
        return decode_spec(document)
    except SpecError as exc:
        raise invalid_spec(exc.message, exc.path) from None
