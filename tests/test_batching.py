"""Batches close at their limits but keep source transactions whole unless one alone is too big."""

from state.records import BinlogPosition
from state.spec import BatchSpec
from workers.batching import Batcher
from workers.events import ChangeEvent


def tx(tx_no: int, rows: int, size: int = 10) -> list[ChangeEvent]:
    return [
        ChangeEvent(
            event_id=f"1:f.1:{tx_no}:{row}", op="c", db="d", table="t", before=None,
            after={"id": row}, primary_key=("id",), ts_ms=0, server_id=1, file="f.1",
            pos=tx_no, gtid=None, tx_id=str(tx_no),
            position=BinlogPosition(
                "f.1", tx_no + (row == rows - 1), 0 if row == rows - 1 else row + 1
            ),
            tx_end=row == rows - 1, size_bytes=size,
        )
        for row in range(rows)
    ]


def tx_ids(batch) -> list[str]:
    return [event.tx_id for event in batch.events]


def test_count_limit_cuts_at_transaction_boundary() -> None:
    batcher = Batcher(BatchSpec(max_events=5, max_ms=10_000))
    batcher.add(tx(1, 3) + tx(2, 3), now=0.0)
    batch = batcher.take(now=0.0)
    assert batch is not None and tx_ids(batch) == ["1"] * 3
    assert batch.end_position.row_skip == 0
    assert batcher.take(now=0.0) is None  # tx 2 alone is within limits: wait for time


def test_timer_flushes_only_complete_transactions() -> None:
    batcher = Batcher(BatchSpec(max_events=100, max_ms=50))
    batcher.add(tx(1, 2) + tx(2, 3)[:2], now=0.0)
    assert batcher.take(now=0.01) is None
    batch = batcher.take(now=0.06)
    assert batch is not None and tx_ids(batch) == ["1", "1"]
    assert batcher.take(now=1.0) is None  # tx 2 is still open
    batcher.add(tx(2, 3)[2:], now=1.0)
    batch = batcher.take(now=1.0, force=True)
    assert batch is not None and tx_ids(batch) == ["2"] * 3


def test_transaction_larger_than_limits_is_split_at_the_limit() -> None:
    batcher = Batcher(BatchSpec(max_events=4, max_ms=10_000))
    batcher.add(tx(1, 10), now=0.0)
    first = batcher.take(now=0.0)
    assert first is not None and len(first.events) == 4
    assert first.end_position.row_skip == 4
    second = batcher.take(now=0.0)
    assert second is not None and len(second.events) == 4


def test_byte_limit_respects_transactions() -> None:
    batcher = Batcher(BatchSpec(max_events=1000, max_bytes=50, max_ms=10_000))
    batcher.add(tx(1, 2, size=20) + tx(2, 2, size=20), now=0.0)
    batch = batcher.take(now=0.0)
    assert batch is not None and tx_ids(batch) == ["1", "1"] and batch.size_bytes == 40


def test_without_respect_source_tx_batches_cut_anywhere() -> None:
    batcher = Batcher(BatchSpec(max_events=4, max_ms=10_000, respect_source_tx=False))
    batcher.add(tx(1, 3) + tx(2, 3), now=0.0)
    batch = batcher.take(now=0.0)
    assert batch is not None and len(batch.events) == 4


def test_batch_ids_increase() -> None:
    batcher = Batcher(BatchSpec(max_events=1, max_ms=10_000))
    batcher.add(tx(1, 1) + tx(2, 1), now=0.0)
    assert [batcher.take(now=0.0).batch_id, batcher.take(now=0.0).batch_id] == [1, 2]


def test_exactly_once_never_splits_a_transaction_however_large() -> None:
    batcher = Batcher(BatchSpec(max_events=4, max_ms=10_000), split_large_transactions=False)
    batcher.add(tx(1, 10)[:6], now=0.0)
    assert batcher.take(now=0.0) is None  # over the limit, but the transaction is still open
    batcher.add(tx(1, 10)[6:] + tx(2, 2), now=0.0)
    batch = batcher.take(now=0.0)
    assert batch is not None and tx_ids(batch) == ["1"] * 10


def test_no_timer_while_only_an_open_transaction_is_pending() -> None:
    batcher = Batcher(BatchSpec(max_events=100, max_ms=50))
    batcher.add(tx(1, 3)[:2], now=0.0)
    assert batcher.deadline() is None  # only more events can make a batch: sleep until then
    batcher.add(tx(1, 3)[2:], now=0.01)
    assert batcher.deadline() == 0.05
