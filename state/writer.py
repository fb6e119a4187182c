"""Group commit: one durable LMDB transaction for many pipelines' updates.

LMDB with ``sync=True`` manages about 2k commits/s per machine, so a worker never commits
per batch: its pipelines hand updates to this writer, whose thread commits everything queued
in one transaction every ``interval_s``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, NamedTuple

import lmdb
import msgspec

from state.env import StateEnv
from state.records import encode_record

log = logging.getLogger(__name__)
_STOP = object()
Update = tuple[str, bytes, bytes | None]  # sub-database, key, value (None deletes)


class PrefixDelete(NamedTuple):
    """Delete every key of a sub-database that starts with ``prefix``."""

    db_name: str
    prefix: bytes


class GroupCommitWriter:
    """Puts records into sub-databases from a dedicated thread, many per transaction."""

    def __init__(self, state: StateEnv, interval_s: float = 0.02) -> None:
        self.state = state
        self.interval_s = interval_s
        self.commits = 0
        self._queue: queue.SimpleQueue[Update | object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="state-writer", daemon=True)
        self._thread.start()

    def put(self, db_name: str, key: str, record: msgspec.Struct) -> None:
        """Queue a put; it is durable within a few milliseconds."""
        self._queue.put((db_name, key.encode(), encode_record(record)))

    def delete(self, db_name: str, key: str) -> None:
        self._queue.put((db_name, key.encode(), None))

    def delete_prefix(self, db_name: str, prefix: str) -> None:
        """Queue the removal of every key starting with ``prefix`` (after what is queued)."""
        self._queue.put(PrefixDelete(db_name, prefix.encode()))

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything queued so far is committed; False on timeout."""
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout_s)

    def close(self, timeout_s: float = 10.0) -> None:
        """Commit everything queued so far, then stop the thread."""
        self._queue.put(_STOP)
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            pending = [self._queue.get()]
            time.sleep(self.interval_s)
            pending.extend(self._drain())
            stop = _STOP in pending
            self._commit([item for item in pending if isinstance(item, tuple)])
            for item in pending:
                if isinstance(item, threading.Event):
                    item.set()
            if stop:
                return

    def _drain(self) -> list[object]:
        items: list[object] = []
        while True:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                return items

    def _commit(self, items: list[Update | PrefixDelete]) -> None:
        if not items:
            return
        try:
            with self.state.env.begin(write=True) as txn:
                for item in items:
                    if isinstance(item, PrefixDelete):
                        _delete_prefix(txn, self.state.dbs[item.db_name], item.prefix)
                        continue
                    db_name, key, value = item
                    db = self.state.dbs[db_name]
                    if value is None:
                        txn.delete(key, db=db)
                    else:
                        txn.put(key, value, db=db)
            self.commits += 1
        except Exception:
            log.exception("state commit failed items=%d", len(items))


def _delete_prefix(txn: lmdb.Transaction, db: Any, prefix: bytes) -> None:
    cursor = txn.cursor(db=db)
    found = cursor.set_range(prefix)
    while found and bytes(cursor.key()).startswith(prefix):
        found = cursor.delete()  # moves to the next key
