"""A table as the binlog's table map describes it, with its per-column converters.

Built once per distinct table map (keyed by a signature of the columns), so rows after an
ALTER decode with the new columns and the per-row path does no per-column decisions.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pymysqlreplication.constants import FIELD_TYPE

from state.records import TableSchemaRecord
from workers.source.values import RAW_CHARSET, TEXT_TYPES, Converter, converter_for

JsonColumnLookup = Callable[[str, str], frozenset[str]]
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

    def __init__(self, json_columns: JsonColumnLookup | None = None,
                 on_new: Callable[[TableShape], None] | None = None) -> None:
        self._json_columns = json_columns
        self._on_new = on_new
        self._by_signature: dict[tuple[Any, ...], TableShape] = {}

    def shape_of(self, event: Any) -> TableShape:
        """The shape for a TableMapEvent; switches its text columns to raw bytes."""
        charsets = take_raw_text(event.columns)
        signature = table_signature(event, charsets)
        shape = self._by_signature.get(signature)
        if shape is None:
            shape = self._build(event, charsets, signature)
            self._by_signature[signature] = shape
            if self._on_new is not None:
                self._on_new(shape)
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


def take_raw_text(columns: list[Any]) -> list[str | None]:
    """Each column's charset; text columns switched so the library returns raw bytes."""
    charsets = []
    for column in columns:
        charset = getattr(column, "character_set_name", None)
        if column.type in TEXT_TYPES:
            column.character_set_name = RAW_CHARSET
        charsets.append(charset)
    return charsets


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
