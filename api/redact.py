"""Secrets never leave the API: passwords in DSNs and credential-like client settings."""

from __future__ import annotations

import re
from typing import Any

DSN_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]+:)(?P<secret>[^@\s]*)@")
SECRET_KEY = re.compile(r"password|secret|sasl\.jaas|token|credential|private|\.key$", re.I)
MASK = "***"


def redact_text(text: str) -> str:
    return DSN_PASSWORD.sub(lambda m: f"{m.group('head')}{MASK}@", text)


def redact(value: Any, key: str = "") -> Any:
    """A copy of a spec (or any JSON-like value) with every secret replaced by ``***``."""
    if isinstance(value, dict):
        return {k: redact(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(item, key) for item in value]
    if isinstance(value, str):
        return MASK if SECRET_KEY.search(key) else redact_text(value)
    return value
