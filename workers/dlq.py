"""A pipeline's dead-letter queue: events a sink rejected, set aside so the rest proceeds.

Entries go through the worker's group-commit writer, queued before the checkpoint that passes
the event, so the entry is never less durable than the checkpoint. The api acks and purges
entries directly in LMDB, so the count kept here is an upper bound: it is re-read from LMDB
only when the queue looks full, and the age cleanup runs at most once a minute.
Unlike DeltaForge, nothing is dropped silently: ``reject`` fails the pipeline loudly.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import msgspec

from state.records import DlqEntryRecord, DlqMeta, DlqSeqRecord, SourceCursor
from state.spec import JournalSpec
from state.stores import DlqStore
from state.writer import GroupCommitWriter
from workers.events import ChangeEvent
from workers.metrics import PipelineMetrics
from workers.sinks.errors import SinkEventError

log = logging.getLogger(__name__)
AGE_CHECK_INTERVAL_S = 60.0
FULL_RECHECK_INTERVAL_S = 0.5


class DlqFullError(Exception):
    """The queue is full and its policy does not make room (``reject`` or ``block``)."""


class DeadLetterQueue:
    """Adds entries for one pipeline, applying ``max_entries``, overflow policy and max age."""

    def __init__(self, pipeline: str, spec: JournalSpec, store: DlqStore,
                 writer: GroupCommitWriter, metrics: PipelineMetrics) -> None:
        self.pipeline = pipeline
        self.spec = spec
        self.store = store
        self.writer = writer
        self.metrics = metrics
        self.count = store.count(pipeline)
        metrics.dlq_size(self.count, spec.dlq.max_entries)
        self.last_seq = store.last_seq(pipeline)
        self.evicted = 0
        self._age_checked_at = 0.0
        self._full_checked_at = 0.0

    @property
    def policy(self) -> str:
        return self.spec.dlq.overflow_policy

    def add(self, sink_id: str, error: SinkEventError) -> DlqEntryRecord:
        """Write an entry for the rejected event, or raise ``DlqFullError``."""
        self._make_room()
        self.last_seq += 1
        entry = self._entry(self.last_seq, sink_id, error)
        self.writer.put("dlq", DlqStore.key(self.pipeline, entry.seq), entry)
        self.writer.put("meta", DlqStore.seq_key(self.pipeline), DlqSeqRecord(entry.seq))
        self.count += 1
        self.metrics.dlq_written(sink_id, error.kind, self.count, self.spec.dlq.max_entries)
        log.warning("event dead-lettered pipeline=%s sink=%s seq=%d event=%s kind=%s error=%s",
                    self.pipeline, sink_id, entry.seq, entry.event_id, error.kind, error.message)
        return entry

    def has_room(self, now: float) -> bool:
        """For a blocked pipeline: re-read the count (the api may have acked), rate-limited."""
        if self.count < self.spec.dlq.max_entries:
            return True
        if now - self._full_checked_at >= FULL_RECHECK_INTERVAL_S:
            self._full_checked_at = now
            self._recount()
        return self.count < self.spec.dlq.max_entries

    def expire_old(self, now: float) -> None:
        """Delete entries older than ``max_age_secs`` (at most once a minute)."""
        max_age = self.spec.dlq.max_age_secs
        if not max_age or now - self._age_checked_at < AGE_CHECK_INTERVAL_S:
            return
        self._age_checked_at = now
        cutoff = time.time() - max_age
        expired = []
        for key, entry in self.store.items(self.pipeline + "\x00"):  # oldest first
            if entry.timestamp > cutoff:
                break
            expired.append(key)
        for key in expired:
            self.writer.delete("dlq", key)
        if expired:
            self.count = max(0, self.count - len(expired))
            self.metrics.dlq_size(self.count, self.spec.dlq.max_entries)
            log.info("expired dlq entries deleted pipeline=%s count=%d", self.pipeline,
                     len(expired))

    def _make_room(self) -> None:
        max_entries = self.spec.dlq.max_entries
        if self.count < max_entries:
            return
        self._recount()
        if self.count < max_entries:
            return
        if self.policy != "drop_oldest":
            if self.policy == "reject":
                self.metrics.dlq_rejected()
            raise DlqFullError(f"dead-letter queue full ({self.count} of {max_entries} entries, "
                               f"overflow_policy {self.policy})")
        oldest = self.store.oldest_keys(self.pipeline, self.count - max_entries + 1)
        for key in oldest:
            self.writer.delete("dlq", key)
        self.count -= len(oldest)
        self.evicted += len(oldest)
        self.metrics.dlq_evicted(len(oldest))
        log.warning("dlq full, oldest entries evicted pipeline=%s evicted=%d total_evicted=%d",
                    self.pipeline, len(oldest), self.evicted)

    def _recount(self) -> None:
        self.writer.flush()  # what this worker queued is in LMDB before counting
        self.count = self.store.count(self.pipeline)
        self.metrics.dlq_size(self.count, self.spec.dlq.max_entries)

    def _entry(self, seq: int, sink_id: str, error: SinkEventError) -> DlqEntryRecord:
        event, truncated = event_document(error.event, self.spec.max_event_bytes)
        position = error.event.position
        return DlqEntryRecord(
            seq=seq, timestamp=int(time.time()), pipeline=self.pipeline,
            event_id=error.event.event_id,
            source_cursor=SourceCursor(error.event.file, error.event.pos, position.gtid_set),
            event=event, payload_truncated=truncated,
            meta=DlqMeta(sink_id, error.kind, error.message, 1))


def event_document(event: ChangeEvent, max_bytes: int) -> tuple[dict[str, Any], bool]:
    """The event as JSON-ready builtins; row images replaced by a note when it is too big."""
    document: dict[str, Any] = msgspec.to_builtins(event)
    size = len(msgspec.json.encode(document))
    if size <= max_bytes:
        return document, False
    for image in ("before", "after"):
        if document.get(image) is not None:
            document[image] = f"<truncated: event is {size} bytes, max_event_bytes {max_bytes}>"
    return document, True
