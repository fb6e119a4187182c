"""The change event every source produces and every sink consumes."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from state.records import BinlogPosition

Op = Literal["c", "u", "d", "r"]
Row = dict[str, Any]


class ChangeEvent(msgspec.Struct):
    """One row change, with typed values and where it came from.

    ``event_id`` is derived from the source position (``server_id:file:end_pos:row_index``),
    so a replay after a crash yields the same id. ``position`` is the checkpoint to write once
    this event and every event before it are delivered. ``tx_end`` marks the last row of its
    source transaction (batches never close before it unless the transaction is too large).
    Values in ``before``/``after``: int, float, str (DECIMAL and temporal types as strings),
    bytes (binary types; base64 in JSON), dict/list (JSON columns), None.
    """

    event_id: str
    op: Op
    db: str
    table: str
    before: Row | None
    after: Row | None
    primary_key: tuple[str, ...]
    ts_ms: int
    server_id: int
    file: str
    pos: int
    gtid: str | None
    tx_id: str | None
    position: BinlogPosition
    tx_end: bool
    size_bytes: int

    def key_values(self) -> list[Any]:
        """Primary key values of the row (after image, or before image for deletes)."""
        row = self.after if self.after is not None else self.before
        assert row is not None
        return [row.get(column) for column in self.primary_key]
