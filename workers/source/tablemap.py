"""A table as the binlog's table map describes it, with its row decoder and converters.

Built once per distinct table map (keyed by a signature of the columns), so rows after an
ALTER decode with the new columns and the per-row path does no per-column decisions. Rows
are decoded by the fast decoder (``workers/source/decode``) built for the table map; a
layout or event it does not read goes to mysql-replication's decoder plus the converters,
counted by reason (``deltaforge_source_decode_fallback_total``).
"""

from __future__ import annotations

import hashlib
import logging
import struct
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pymysqlreplication.constants import FIELD_TYPE

from state.records import TableSchemaRecord
from workers.source.decode import Images, RowDecoder, Unsupported
from workers.source.values import RAW_CHARSET, TEXT_TYPES, Converter, converter_for

log = logging.getLogger(__name__)

JsonColumnLookup = Callable[[str, str], frozenset[str]]
FallbackHook = Callable[["TableShape", str, int], None]  # (shape, reason, rows) per rows event
# What the fast decoder raises on bytes it cannot read; the library then decodes the event.
_DECODE_ERRORS = (ValueError, IndexError, KeyError, TypeError, AttributeError, OverflowError,
                  struct.error)
_ORIGINAL_CHARSET = "_deltaforge_charset"
_TYPE_NAMES = {
    value: name
    for name, value in vars(FIELD_TYPE).items()
    if name.isupper() and isinstance(value, int)
}


@dataclass(frozen=True)
class TableShape:
    """Columns, primary key and converters of one table version."""

    schema: str
    table: str
    columns: tuple[dict[str, Any], ...]
    primary_key: tuple[str, ...]
    converters: tuple[tuple[str, Converter], ...]
    set_columns: tuple[str, ...]
    fingerprint: str
    decoder: RowDecoder | None = None
    fallback_reason: str | None = None  # why ``decoder`` is None
    fallbacks: DecodeFallbacks = field(default_factory=lambda: DecodeFallbacks(), compare=False)

    def images(self, event: Any, op: str) -> list[Images]:
        """The converted (before, after) images of a rows event of this table."""
        if self.decoder is None:
            reason = self.fallback_reason or "unsupported"
        else:
            try:
                return self.decoder.images(event, op)
            except Unsupported as exc:
                reason = exc.reason
            except _DECODE_ERRORS as exc:
                reason = "decode_error"
                log.debug("fast row decoder failed table=%s.%s error=%r",
                          self.schema, self.table, exc)
        images = library_images(self, event, op)
        self.fallbacks.add(self, reason, len(images))
        return images

    def convert(self, values: dict[str, Any], none_sources: dict[str, str]) -> dict[str, Any]:
        """Convert one row image in place (the dict is fresh from the library) and return it."""
        for name, convert in self.converters:
            value = values[name]
            if value is not None:
                values[name] = convert(value)
        for name in self.set_columns:
            if none_sources.get(name) == "empty set":
                values[name] = ""
        return values

    def schema_record(self, version: int = 1) -> TableSchemaRecord:
        return TableSchemaRecord(
            database=self.schema,
            table=self.table,
            columns=[dict(column) for column in self.columns],
            primary_key=list(self.primary_key),
            fingerprint=self.fingerprint,
            version=version,
            seen_at=time.time(),
        )


class TableShapes:
    """Cache of shapes by table-map signature; also prepares each table map for raw text."""

    def __init__(self, json_columns: JsonColumnLookup | None = None, *,
                 on_fallback: FallbackHook | None = None) -> None:
        self._json_columns = json_columns
        self._by_signature: dict[tuple[Any, ...], TableShape] = {}
        self.fallbacks = DecodeFallbacks(on_fallback)

    def shape_of(self, event: Any) -> TableShape:
        """The shape for a TableMapEvent; switches its text columns to raw bytes. Remembered
        in the event's ``memo`` when it has one (``CachedTableMapEvent``: every later table
        map with the same body then costs a dictionary lookup)."""
        memo = getattr(event, "memo", None)
        if memo is not None and (shape := memo.get(self)) is not None:
            return shape  # type: ignore[no-any-return]
        shape = self._shape_of(event)
        if memo is not None:
            memo[self] = shape
        return shape

    def _shape_of(self, event: Any) -> TableShape:
        charsets = take_raw_text(event.columns)
        signature = table_signature(event, charsets)
        shape = self._by_signature.get(signature)
        if shape is None:
            shape = self._build(event, charsets, signature)
            self._by_signature[signature] = shape
        return shape

    def _build(
        self, event: Any, charsets: list[str | None], signature: tuple[Any, ...]
    ) -> TableShape:
        json_names = self._json_candidates(event, charsets)
        columns = event.columns
        converters = []
        for column, charset in zip(columns, charsets, strict=True):
            convert = converter_for(column, charset, column.name in json_names)
            if convert is not None:
                converters.append((column.name, convert))
        decoder, reason = _decoder_for(event, charsets, json_names)
        return TableShape(
            schema=event.schema,
            table=event.table,
            columns=tuple(
                describe_column(c, s, c.name in json_names)
                for c, s in zip(columns, charsets, strict=True)
            ),
            primary_key=primary_key_of(event),
            converters=tuple(converters),
            set_columns=tuple(c.name for c in columns if c.type == FIELD_TYPE.SET),
            fingerprint=hashlib.sha1(repr(signature).encode()).hexdigest()[:16],
            decoder=decoder,
            fallback_reason=reason,
            fallbacks=self.fallbacks,
        )

    def _json_candidates(self, event: Any, charsets: list[str | None]) -> frozenset[str]:
        """MariaDB JSON columns are utf8mb4 LONGTEXT; ask the server which ones are JSON."""
        has_longtext = any(
            c.type == FIELD_TYPE.BLOB and c.length_size == 4 and s not in (None, "binary")
            for c, s in zip(event.columns, charsets, strict=True)
        )
        if not has_longtext or self._json_columns is None:
            return frozenset()
        return self._json_columns(event.schema, event.table)


def _decoder_for(
    event: Any, charsets: list[str | None], json_names: frozenset[str]
) -> tuple[RowDecoder | None, str | None]:
    label = f"{event.schema}.{event.table}"
    try:
        return RowDecoder.for_table(label, event.columns, charsets, json_names), None
    except Unsupported as exc:
        return None, exc.reason


def take_raw_text(columns: list[Any]) -> list[str | None]:
    """Each column's charset; text columns switched so the library returns raw bytes.

    Idempotent: a table map handled by several pipelines' routers (a shared stream) gives
    every caller the server's charsets, not the switched name.
    """
    charsets = []
    for column in columns:
        charset = getattr(column, _ORIGINAL_CHARSET, None)
        if charset is None:
            charset = getattr(column, "character_set_name", None)
            setattr(column, _ORIGINAL_CHARSET, charset or "")
        charsets.append(charset or None)
        if column.type in TEXT_TYPES:
            column.character_set_name = RAW_CHARSET
    return charsets


def library_images(shape: TableShape, event: Any, op: str) -> list[Images]:
    """The images from mysql-replication's decoder (``event.rows``) and the converters."""
    if op == "c":
        return [(None, shape.convert(r["values"], r["none_sources"])) for r in event.rows]
    if op == "d":
        return [(shape.convert(r["values"], r["none_sources"]), None) for r in event.rows]
    return [
        (shape.convert(r["before_values"], r["before_none_sources"]),
         shape.convert(r["after_values"], r["after_none_sources"]))
        for r in event.rows
    ]


class DecodeFallbacks:
    """Rows the library decoded instead of the fast decoder, by reason.

    Counted once per rows event (never per row) into ``rows`` and passed to the hook (which
    feeds ``deltaforge_source_decode_fallback_total``, see ``workers.metrics``); the first
    fallback per table version and reason is logged.
    """

    def __init__(self, on_fallback: FallbackHook | None = None) -> None:
        self.rows: Counter[str] = Counter()
        self._on_fallback = on_fallback
        self._logged: set[tuple[str, str]] = set()

    def add(self, shape: TableShape, reason: str, rows: int) -> None:
        self.rows[reason] += rows
        if self._on_fallback is not None:
            self._on_fallback(shape, reason, rows)
        if (shape.fingerprint, reason) not in self._logged:
            self._logged.add((shape.fingerprint, reason))
            log.warning("rows decoded by the library, not the fast decoder table=%s.%s "
                        "reason=%s", shape.schema, shape.table, reason)


def table_signature(event: Any, charsets: list[str | None]) -> tuple[Any, ...]:
    columns = tuple(
        (
            c.name,
            c.type,
            c.unsigned,
            charset,
            getattr(c, "fsp", None),
            getattr(c, "max_length", None),
            getattr(c, "decimals", None),
            getattr(c, "length_size", None),
            tuple(c.enum_values or ()),
            tuple(c.set_values or ()),
        )
        for c, charset in zip(event.columns, charsets, strict=True)
    )
    return (event.schema, event.table, columns, primary_key_of(event))


def primary_key_of(event: Any) -> tuple[str, ...]:
    """Primary key columns in key order, from the table map's optional metadata."""
    metadata = event.optional_metadata
    indexes = list(metadata.simple_primary_key_list or [])
    indexes += list((metadata.primary_keys_with_prefix or {}).keys())
    return tuple(event.columns[i].name for i in indexes)


def describe_column(column: Any, charset: str | None, is_json: bool) -> dict[str, Any]:
    info: dict[str, Any] = {
        "name": column.name,
        "type": _TYPE_NAMES.get(column.type, str(column.type)),
    }
    if is_json or column.type == FIELD_TYPE.JSON:
        info["json"] = True
    if column.unsigned:
        info["unsigned"] = True
    if charset is not None:
        info["charset"] = charset
    for attribute in (
        "fsp",
        "precision",
        "decimals",
        "max_length",
        "enum_values",
        "set_values",
        "bits",
    ):
        value = getattr(column, attribute, None)
        if value:
            info[attribute] = list(value) if isinstance(value, list) else value
    return info
