"""Typed access to the sub-databases: specs, status, checkpoints."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

import lmdb
import msgspec

from state.env import StateEnv
from state.records import (
    CheckpointRecord,
    DlqEntryRecord,
    DlqSeqRecord,
    PipelineRecord,
    StatusRecord,
    TableSchemaRecord,
    decode_record,
    encode_record,
)

R = TypeVar("R", bound=msgspec.Struct)
SEP = "\x00"


class RecordStore(Generic[R]):
    """One sub-database holding records of one type, keyed by text."""

    db_name: str
    record_type: type[R]

    def __init__(self, state: StateEnv) -> None:
        self.state = state
        self.env = state.env
        self.db = state.dbs[self.db_name]

    def get(self, key: str) -> R | None:
        with self.env.begin(db=self.db) as txn:
            data = txn.get(key.encode())
        return None if data is None else decode_record(data, self.record_type)

    def put(self, key: str, record: R, txn: lmdb.Transaction | None = None) -> None:
        if txn is not None:
            txn.put(key.encode(), encode_record(record), db=self.db)
            return
        with self.env.begin(db=self.db, write=True) as own:
            own.put(key.encode(), encode_record(record))

    def delete(self, key: str) -> bool:
        """Remove one record; False when there was none."""
        with self.env.begin(db=self.db, write=True) as txn:
            return bool(txn.delete(key.encode()))

    def delete_prefix(self, prefix: str, txn: lmdb.Transaction) -> int:
        cursor = txn.cursor(db=self.db)
        removed = 0
        if cursor.set_range(prefix.encode()):
            while bytes(cursor.key()).startswith(prefix.encode()):
                cursor.delete()  # moves to the next key
                removed += 1
        return removed

    def items(self, prefix: str = "") -> Iterator[tuple[str, R]]:
        """All records whose key starts with ``prefix``, in key order (one read snapshot)."""
        raw = prefix.encode()
        with self.env.begin(db=self.db) as txn:
            cursor = txn.cursor()
            found = cursor.set_range(raw) if raw else cursor.first()
            rows = []
            while found and cursor.key().startswith(raw):
                rows.append((cursor.key().decode(), cursor.value()))
                found = cursor.next()
        for key, data in rows:
            yield key, decode_record(data, self.record_type)


class SpecStore(RecordStore[PipelineRecord]):
    """Desired state: one record per pipeline name."""

    db_name = "specs"
    record_type = PipelineRecord


class StatusStore(RecordStore[StatusRecord]):
    """Actual state as workers report it."""

    db_name = "status"
    record_type = StatusRecord


class CheckpointStore(RecordStore[CheckpointRecord]):
    """Per-sink positions, keyed ``pipeline NUL sink_id``."""

    db_name = "checkpoints"
    record_type = CheckpointRecord

    @staticmethod
    def key(pipeline: str, sink_id: str) -> str:
        return f"{pipeline}{SEP}{sink_id}"

    def for_pipeline(self, pipeline: str) -> dict[str, CheckpointRecord]:
        return {record.sink_id: record for _, record in self.items(pipeline + SEP)}


class SchemaStore(RecordStore[TableSchemaRecord]):
    """Table schemas seen by a pipeline, keyed ``pipeline NUL db.table``."""

    db_name = "schemas"
    record_type = TableSchemaRecord

    @staticmethod
    def key(pipeline: str, database: str, table: str) -> str:
        return f"{pipeline}{SEP}{database}.{table}"


class DlqStore(RecordStore[DlqEntryRecord]):
    """Dead-lettered events, keyed ``pipeline NUL seq`` (20 digits, so key order is seq order).

    Workers add entries through their group-commit writer; the api acks and purges here.
    The last seq used is kept in ``meta`` so a purged queue never reuses a number.
    """

    db_name = "dlq"
    record_type = DlqEntryRecord

    @staticmethod
    def key(pipeline: str, seq: int) -> str:
        return f"{pipeline}{SEP}{seq:020d}"

    @staticmethod
    def seq_key(pipeline: str) -> str:
        return f"dlq_seq{SEP}{pipeline}"

    def last_seq(self, pipeline: str) -> int:
        """The highest seq ever used by the pipeline (0: none)."""
        with self.env.begin() as txn:
            data = txn.get(self.seq_key(pipeline).encode(), db=self.state.dbs["meta"])
            stored = 0 if data is None else decode_record(data, DlqSeqRecord).last_seq
            cursor = txn.cursor(db=self.db)
            newest = 0
            if cursor.set_range(f"{pipeline}\x01".encode()) and cursor.prev() or cursor.last():
                key = bytes(cursor.key()).decode()
                if key.startswith(pipeline + SEP):
                    newest = int(key.rsplit(SEP, 1)[1])
        return max(stored, newest)

    def count(self, pipeline: str) -> int:
        prefix = (pipeline + SEP).encode()
        with self.env.begin(db=self.db) as txn:
            cursor = txn.cursor()
            found = cursor.set_range(prefix)
            count = 0
            while found and bytes(cursor.key()).startswith(prefix):
                count += 1
                found = cursor.next()
        return count

    def oldest_keys(self, pipeline: str, limit: int) -> list[str]:
        prefix = (pipeline + SEP).encode()
        keys: list[str] = []
        with self.env.begin(db=self.db) as txn:
            cursor = txn.cursor()
            found = cursor.set_range(prefix)
            while found and len(keys) < limit and bytes(cursor.key()).startswith(prefix):
                keys.append(bytes(cursor.key()).decode())
                found = cursor.next()
        return keys

    def peek(self, pipeline: str, limit: int, sink_id: str | None = None,
             error_kind: str | None = None) -> list[DlqEntryRecord]:
        """Oldest first; the filters apply before the limit."""
        entries: list[DlqEntryRecord] = []
        for _, entry in self.items(pipeline + SEP):
            if sink_id is not None and entry.meta.sink_id != sink_id:
                continue
            if error_kind is not None and entry.meta.error_kind != error_kind:
                continue
            entries.append(entry)
            if len(entries) >= limit:
                break
        return entries

    def ack(self, pipeline: str, up_to_seq: int) -> int:
        """Delete the entries with ``seq <= up_to_seq``; how many there were."""
        prefix = (pipeline + SEP).encode()
        end = self.key(pipeline, up_to_seq).encode()
        removed = 0
        with self.env.begin(db=self.db, write=True) as txn:
            cursor = txn.cursor()
            found = cursor.set_range(prefix)
            while found and bytes(cursor.key()).startswith(prefix) and bytes(cursor.key()) <= end:
                found = cursor.delete()
                removed += 1
        return removed

    def purge(self, pipeline: str) -> int:
        with self.env.begin(db=self.db, write=True) as txn:
            return self.delete_prefix(pipeline + SEP, txn)
