"""PATCH bodies: DeltaForge's deep merge, plus removal and redaction-aware leaves.

Objects merge recursively and arrays element-wise by index (extra patch elements are
appended), as in DeltaForge. Extensions: ``null`` removes an object key or an array element
(so a sink can be removed), and a redacted value sent back unchanged (``***``) keeps the secret.
"""

from __future__ import annotations

from typing import Any

from api.redact import redact


def deep_merge(base: Any, patch: Any, key: str = "") -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        return _merge_objects(base, patch)
    if isinstance(base, list) and isinstance(patch, list):
        return _merge_arrays(base, patch, key)
    if isinstance(patch, str) and patch != base and redact(base, key) == patch:
        return base  # the client echoed the redacted form: keep the real secret
    return patch


def _merge_objects(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = deep_merge(base[key], value, key) if key in base else value
    return merged


def _merge_arrays(base: list[Any], patch: list[Any], key: str) -> list[Any]:
    merged: list[Any] = []
    for index in range(max(len(base), len(patch))):
        if index >= len(patch):
            merged.append(base[index])
        elif patch[index] is None:
            continue
        elif index >= len(base):
            merged.append(patch[index])
        else:
            merged.append(deep_merge(base[index], patch[index], key))
    return merged
