"""The fast row decoder: rows events decoded from their raw bytes by code built per table map.

``RowDecoder.for_table`` compiles a decoder for one table map's columns (or raises
``Unsupported`` naming what it cannot read); ``RowDecoder.images`` gives the converted
(before, after) images of one rows event, equal to what mysql-replication's decoder plus
``workers/source/values.py`` give, or raises ``Unsupported`` for an event it does not read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from workers.source.decode.compiler import DecodeImages, compile_images
from workers.source.decode.header import rows_body
from workers.source.decode.plans import Unsupported

__all__ = ["Images", "Row", "RowDecoder", "Unsupported"]

Row = dict[str, Any]
Images = tuple[Row | None, Row | None]


@dataclass(frozen=True)
class RowDecoder:
    """Decodes the rows events of one table layout."""

    column_count: int
    decode_images: DecodeImages
    source: str

    @classmethod
    def for_table(cls, label: str, columns: Sequence[Any], charsets: Sequence[str | None],
                  json_names: frozenset[str]) -> RowDecoder:
        function, source = compile_images(label, columns, charsets, json_names)
        return cls(len(columns), function, source)

    def images(self, event: Any, op: str) -> list[Images]:
        """(before, after) per row: ``op`` c gives (None, row), d (row, None), u both."""
        body = rows_body(event, self.column_count)
        rows = self.decode_images(body.data, body.start, body.end)
        if op == "c":
            return [(None, row) for row in rows]
        if op == "d":
            return [(row, None) for row in rows]
        if len(rows) % 2:
            raise ValueError("an update event with an odd number of row images")
        return list(zip(rows[::2], rows[1::2], strict=True))
