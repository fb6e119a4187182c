"""Read a broker's ``__transaction_state`` log files directly: how many transactions reached
PrepareCommit. A test that must crash the broker between a commit's PrepareCommit (durable in
this log) and its markers polls this, since no client API shows that moment.

Record batches are Kafka's v2 format; a transaction log value starts with its version (int16),
producer id (int64), producer epoch (int16), timeout (int32) and state (int8).
"""

from __future__ import annotations

import struct
from pathlib import Path

PREPARE_COMMIT = 2
_BATCH_HEADER = 61  # bytes up to and including the record count


def prepared_commits(data_dir: Path) -> int:
    """Transaction log records in state PrepareCommit, over every segment of every partition."""
    return sum(_states(segment).count(PREPARE_COMMIT)
               for segment in sorted(data_dir.glob("__transaction_state-*/*.log")))


def _states(segment: Path) -> list[int]:
    data, states, at = segment.read_bytes(), [], 0
    while at + _BATCH_HEADER <= len(data):
        length = struct.unpack_from(">i", data, at + 8)[0]
        if length <= 0 or at + 12 + length > len(data):
            break  # the tail of a batch still being written
        count = struct.unpack_from(">i", data, at + 57)[0]
        states += _record_states(data[at + _BATCH_HEADER:at + 12 + length], count)
        at += 12 + length
    return states


def _record_states(records: bytes, count: int) -> list[int]:
    states, at = [], 0
    for _ in range(count):
        length, at = _varint(records, at)
        end = at + length
        at += 1  # attributes
        _, at = _varint(records, at)  # timestamp delta
        _, at = _varint(records, at)  # offset delta
        key_length, at = _varint(records, at)
        at += max(key_length, 0)
        value_length, at = _varint(records, at)
        if value_length >= 17:  # a tombstone has none
            states.append(records[at + 16])
        at = end
    return states


def _varint(data: bytes, at: int) -> tuple[int, int]:
    """A zigzag varint at ``at``: its value and the offset after it."""
    shift = raw = 0
    while True:
        byte = data[at]
        at += 1
        raw |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return (raw >> 1) ^ -(raw & 1), at
