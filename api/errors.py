"""Structured errors: every failure answers ``{"code", "message"}``."""

from __future__ import annotations

import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request

from api.redact import redact_text
from api.responses import JSONResponse

log = logging.getLogger(__name__)

STATUS_CODES = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 415: "UNSUPPORTED_MEDIA_TYPE"}


class ApiError(Exception):
    """An error with a stable code that automation can branch on."""

    def __init__(self, status: int, code: str, message: str,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.details = details or {}


def pipeline_not_found(name: str) -> ApiError:
    return ApiError(404, "PIPELINE_NOT_FOUND", f"pipeline {name} not found")


def invalid_spec(message: str, path: str) -> ApiError:
    errors = [{"path": path, "message": message}]
    return ApiError(400, "INVALID_SPEC", f"{message} - at `{path}`", {"errors": errors})


def error_response(status: int, code: str, message: str,
                   details: dict[str, Any] | None = None) -> JSONResponse:
    body = {"code": code, "message": redact_text(message), **(details or {})}
    return JSONResponse(body, status_code=status)


async def handle_api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.details)


async def handle_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = STATUS_CODES.get(exc.status_code, "INTERNAL_ERROR")
    return error_response(exc.status_code, code, str(exc.detail))


async def handle_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("request failed method=%s path=%s error=%s", request.method, request.url.path,
              redact_text(f"{type(exc).__name__}: {exc}"))
    return error_response(500, "INTERNAL_ERROR", f"{type(exc).__name__}: {exc}")
