"""Topic and key templates (``cdc.${source.db}.${source.table}``) and the default message key.

A template compiles once into a function of the event. Variables name paths into the native
envelope, as in DeltaForge: ``source.db``, ``source.table``, ``source.connector``, ``op``,
``tenant_id``, ``after.<col>``, ``before.<col>`` (one more level reaches into JSON columns),
and the other native fields (``event_id``, ``ts_ms``, ``transaction.id``, ``source.file``, ...).
Topics resolve strictly (an unresolvable variable or an empty result is a ``RoutingError``);
keys leniently (a missing variable becomes ""). The rules are in docs/envelopes.md.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import msgspec

from workers.envelopes import CONNECTOR, source_version
from workers.events import ChangeEvent
from workers.sinks.errors import RoutingError, SinkConfigError

RenderFn = Callable[[ChangeEvent], str]
Getter = Callable[[ChangeEvent], str | None]

_VARIABLE = re.compile(r"\$\{([^}]*)\}")
_MAX_PATH_SEGMENTS = 3
_json_encode = msgspec.json.Encoder().encode


class TemplateError(SinkConfigError):
    """A template that cannot be compiled (unclosed ``${``, empty or unknown variable)."""


def compile_topic(template: str, pipeline: str, tenant: str) -> RenderFn:
    """Strict: every variable must resolve to a non-null value and the result must not be empty."""
    segments, per_table = _parse(template, pipeline, tenant)
    if not per_table:
        return _strict_renderer(template, segments)
    return _memoized_per_table(_strict_renderer(template, segments))


def compile_key(template: str | None, pipeline: str, tenant: str) -> RenderFn:
    """Lenient: a missing variable becomes ""; no template means the row's primary key."""
    if template is None:
        return default_key
    segments, _ = _parse(template, pipeline, tenant)

    def render_key(event: ChangeEvent) -> str:
        return "".join(
            part if type(part) is str else (part(event) or "")  # type: ignore[operator]
            for part in segments
        )

    return render_key


def default_key(event: ChangeEvent) -> str:
    """The primary key as text: one column -> its value, several -> JSON array, none -> db.table."""
    columns = event.primary_key
    if not columns:
        return f"{event.db}.{event.table}"
    if len(columns) == 1:
        column = columns[0]
        after = event.after
        row = after if after is not None and column in after else event.before or {}
        return value_text(row.get(column)) or ""
    row = _key_row(event)
    return _json_encode([row.get(column) for column in columns]).decode()


def value_text(value: Any) -> str | None:
    """A value as template text: strings as-is, None -> None, others as their JSON text.

    Binary values therefore appear as base64, as in the envelope.
    """
    kind = type(value)
    if kind is str:
        return value  # type: ignore[no-any-return]
    if kind is int:
        return str(value)
    if value is None:
        return None
    encoded = _json_encode(value)
    if encoded[:1] == b'"':  # bytes (base64), Decimal, datetime: the string without quotes
        return msgspec.json.decode(encoded)  # type: ignore[no-any-return]
    return encoded.decode()


def _key_row(event: ChangeEvent) -> dict[str, Any]:
    # The after image, unless it lacks a key column (binlog_row_image=MINIMAL updates).
    after, before = event.after, event.before
    if after is not None and (before is None or all(c in after for c in event.primary_key)):
        return after
    assert before is not None, "an event has at least one row image"
    return before


def _strict_renderer(template: str, segments: list[str | Getter]) -> RenderFn:
    variables = _VARIABLE.findall(template)

    def render_topic(event: ChangeEvent) -> str:
        parts: list[str] = []
        for index, segment in enumerate(segments):
            if isinstance(segment, str):
                parts.append(segment)
                continue
            value = segment(event)
            if value is None:
                raise _unresolved(template, segments, index, variables)
            parts.append(value)
        result = "".join(parts)
        if not result:
            raise RoutingError(template, None, f"template {template!r} resolved to an empty string")
        return result

    return render_topic


def _unresolved(
    template: str, segments: list[str | Getter], index: int, variables: list[str]
) -> RoutingError:
    variable = variables[sum(1 for part in segments[:index] if not isinstance(part, str))]
    return RoutingError(
        template, variable, f"template {template!r}: variable '{variable}' could not be resolved"
    )


def _memoized_per_table(render: RenderFn) -> RenderFn:
    """For templates that only use per-table variables (db, table, op, tenant, connector)."""
    cache: dict[tuple[str, str, str], str] = {}

    def render_cached(event: ChangeEvent) -> str:
        key = (event.db, event.table, event.op)
        found = cache.get(key)
        if found is None:
            found = cache[key] = render(event)
        return found

    return render_cached


def _parse(template: str, pipeline: str, tenant: str) -> tuple[list[str | Getter], bool]:
    """Segments (literal text or getters) and whether every getter depends only on the table."""
    segments: list[str | Getter] = []
    per_table = True
    position = 0
    for match in _VARIABLE.finditer(template):
        _check_literal(template, template[position:match.start()], position)
        if match.start() > position:
            segments.append(template[position:match.start()])
        getter, table_only = _getter(template, match.group(1), pipeline, tenant)
        segments.append(getter)
        per_table = per_table and table_only
        position = match.end()
    _check_literal(template, template[position:], position)
    if position < len(template):
        segments.append(template[position:])
    return segments, per_table


def _check_literal(template: str, text: str, offset: int) -> None:
    opened = text.find("${")
    if opened >= 0:
        raise TemplateError(
            f"unclosed '${{' at position {offset + opened} in template {template!r}"
        )


def _getter(template: str, path: str, pipeline: str, tenant: str) -> tuple[Getter, bool]:
    parts = path.split(".")
    if not path or not all(parts):
        raise TemplateError(f"empty variable '${{{path}}}' in template {template!r}")
    if len(parts) > _MAX_PATH_SEGMENTS:
        raise TemplateError(
            f"path '{path}' exceeds max depth of {_MAX_PATH_SEGMENTS} in template {template!r}"
        )
    if parts[0] in ("after", "before") and len(parts) > 1:
        return _row_getter(parts[0], parts[1:]), False
    constants = {
        "tenant_id": tenant, "source.connector": CONNECTOR, "source.name": pipeline,
        "source.version": source_version(),
    }
    if path in constants:
        constant = constants[path]
        return (lambda event: constant), True
    if path in _PER_TABLE_FIELDS:
        return _PER_TABLE_FIELDS[path], True
    if path in _PER_EVENT_FIELDS:
        return _PER_EVENT_FIELDS[path], False
    raise TemplateError(f"unknown variable '${{{path}}}' in template {template!r}")


def _row_getter(image: str, columns: list[str]) -> Getter:
    def get(event: ChangeEvent) -> str | None:
        value: Any = event.after if image == "after" else event.before
        for column in columns:
            if not isinstance(value, dict):
                return None
            value = value.get(column)
        return value_text(value)

    return get


_PER_TABLE_FIELDS: dict[str, Getter] = {
    "source.db": lambda event: event.db,
    "source.table": lambda event: event.table,
    "op": lambda event: event.op,
    "source.snapshot": lambda event: "true" if event.op == "r" else None,
    "source.schema": lambda event: None,  # MySQL has none; kept so DeltaForge templates parse
}

_PER_EVENT_FIELDS: dict[str, Getter] = {
    "event_id": lambda event: event.event_id,
    "ts_ms": lambda event: str(event.ts_ms),
    "source.ts_ms": lambda event: str(event.ts_ms),
    "source.server_id": lambda event: str(event.server_id),
    "source.file": lambda event: event.file,
    "source.pos": lambda event: str(event.pos),
    "source.gtid": lambda event: event.gtid,
    "transaction.id": lambda event: event.tx_id,
}
