"""What we persist in LMDB: msgpack-encoded structs that tolerate fields they do not know.

Rules: a new field gets a default, a field's type never changes, unknown fields are ignored
(an older process must read a newer record).
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

import msgspec

DesiredStatus = Literal["running", "paused", "stopped"]
ActualStatus = Literal["pending", "running", "paused", "stopped", "failed"]


class BinlogPosition(msgspec.Struct, frozen=True, omit_defaults=True):
    """A resumable place in one server's binlog.

    ``file``/``pos`` name a transaction boundary (reading restarts there, so table maps are
    seen again); ``row_skip`` counts the rows of the transaction starting at ``pos`` that were
    already delivered. ``gtid_set`` is the executed set up to here (MySQL ``uuid:1-N`` or
    MariaDB ``domain-server-seq``), when the server has GTIDs.
    """

    file: str
    pos: int
    row_skip: int = 0
    gtid_set: str | None = None
    server_id: int | None = None

    def sort_key(self) -> tuple[int, str, int, int]:
        return (binlog_file_number(self.file), self.file, self.pos, self.row_skip)

    def __str__(self) -> str:
        skip = f"+{self.row_skip}" if self.row_skip else ""
        return f"{self.file}:{self.pos}{skip}"


def binlog_file_number(file: str) -> int:
    """The numeric suffix of ``mysql-bin.000042`` (42); -1 when there is none."""
    _, _, suffix = file.rpartition(".")
    return int(suffix) if suffix.isdigit() else -1


def min_position(positions: list[BinlogPosition]) -> BinlogPosition | None:
    return min(positions, key=BinlogPosition.sort_key) if positions else None


class PipelineRecord(msgspec.Struct, frozen=True):
    """Desired state of one pipeline: the spec as written, what it should be doing, a generation."""

    name: str
    spec: dict[str, Any]
    desired: DesiredStatus = "running"
    generation: int = 1
    origin: Literal["file", "api"] = "file"
    updated_at: float = 0.0
    # The spec as last imported from a --config file (None: never came from a file). A spec
    # that differs from it was changed through the API.
    file_spec: dict[str, Any] | None = None

    def changed_through_api(self) -> bool:
        return self.file_spec is None or self.file_spec != self.spec


class StatusRecord(msgspec.Struct, frozen=True):
    """Actual state of one pipeline as its worker last reported it."""

    name: str
    status: ActualStatus = "pending"
    worker: int | None = None
    worker_pid: int | None = None
    generation: int = 0
    started_at: float | None = None
    updated_at: float = 0.0
    last_error: str | None = None
    next_retry_at: float | None = None
    restarts: int = 0
    last_event_ts_ms: int | None = None
    events_total: int = 0
    sink_errors: dict[str, int] = {}
    sink_last_error: dict[str, str] = {}


class CheckpointRecord(msgspec.Struct, frozen=True):
    """Position after the last event a sink acknowledged, and when it was written."""

    pipeline: str
    sink_id: str
    position: BinlogPosition
    written_at: float
    events: int = 0


class TableSchemaRecord(msgspec.Struct, frozen=True):
    """A table's columns as last seen in the binlog's table map (with full row metadata)."""

    database: str
    table: str
    columns: list[dict[str, Any]]
    primary_key: list[str]
    fingerprint: str
    version: int = 1
    seen_at: float = 0.0


class SourceCursor(msgspec.Struct, frozen=True):
    """Where a dead-lettered event came from (DeltaForge's ``source_cursor``)."""

    file: str
    pos: int
    gtid_set: str | None = None


class DlqMeta(msgspec.Struct, frozen=True):
    sink_id: str
    error_kind: str
    error_message: str
    attempts: int = 1


class DlqEntryRecord(msgspec.Struct, frozen=True):
    """One dead-lettered event (DeltaForge's JournalEntry); ``seq`` orders a pipeline's queue."""

    seq: int
    timestamp: int
    pipeline: str
    event_id: str
    source_cursor: SourceCursor
    event: dict[str, Any]
    meta: DlqMeta
    payload_truncated: bool = False
    stream: str = "dlq"


class DlqSeqRecord(msgspec.Struct, frozen=True):
    """The last DLQ sequence number a pipeline used, so numbers never repeat after a purge."""

    last_seq: int


T = TypeVar("T")
_ENCODER = msgspec.msgpack.Encoder()


def encode_record(record: msgspec.Struct) -> bytes:
    return _ENCODER.encode(record)


def decode_record(data: bytes, kind: type[T]) -> T:
    return msgspec.msgpack.decode(data, type=kind)
