"""Exactly-once: a batch and its source position commit in one Kafka transaction.

Checked against a real Kafka broker with ``read_committed`` consumers: committed batches are
complete, failed ones invisible, a fenced instance fails loudly, and kill -9 of a worker during
multi-row transactions yields neither duplicates nor gaps nor partial transactions.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from state.records import BinlogPosition
from state.spec import KafkaConfigSpec
from tests.support.kafka_read import Record, read_topic, read_until
from tests.support.pipelines import pipeline_yaml, unique, write_config
from tests.support.service import Service
from tests.test_kafka_sink import make_event
from workers.sinks.checkpoint_topic import encode_position, record_key
from workers.sinks.errors import (
    HangingTransaction,
    SinkEventError,
    SinkFencedError,
    SinkUnavailableError,
)
from workers.sinks.kafka_txn import TransactionalKafkaSink

pytestmark = pytest.mark.services


def txn_spec(brokers: str, topic: str, checkpoints: str) -> KafkaConfigSpec:
    return KafkaConfigSpec(id="eos", brokers=brokers, topic=topic, exactly_once=True,
                           checkpoint_topic=checkpoints, send_timeout_secs=20)


def test_batch_and_position_commit_together(kafka: Any) -> None:
    topic, checkpoints = unique("eos"), unique("ckpt")
    sink = TransactionalKafkaSink("p", "t", txn_spec(kafka.bootstrap, topic, checkpoints))
    try:
        assert sink.committed_position(timeout_s=20) is None
        end = BinlogPosition("bin.000001", 4242)
        sink.send_batch(1, [make_event("t", i, 1, op="c") for i in range(5)], end)
        [outcome] = sink.take_completed()
        assert outcome.error is None and outcome.delivered == 5
    finally:
        sink.close()
    assert len(read_topic(kafka.bootstrap, topic, 5, isolation="read_committed")) == 5
    again = TransactionalKafkaSink("p", "t", txn_spec(kafka.bootstrap, topic, checkpoints))
    try:
        assert again.committed_position(timeout_s=20) == end
    finally:
        again.close()


def test_a_failed_batch_is_invisible_to_read_committed(kafka: Any) -> None:
    topic, checkpoints = unique("eos"), unique("ckpt")
    kafka.create_topic(f"{topic}.eu")
    sink = TransactionalKafkaSink("p", "t", txn_spec(kafka.bootstrap, f"{topic}.${{after.region}}",
                                                     checkpoints))
    try:
        sink.committed_position(timeout_s=20)
        good = make_event("t", 1, 1, op="c", after={"id": 1, "region": "eu"})
        bad = make_event("t", 2, 1, op="c", after={"id": 2, "region": None})
        with pytest.raises(SinkEventError):
            sink.send_batch(1, [good, bad], BinlogPosition("bin.000001", 99))
    finally:
        sink.close()
    restarted = TransactionalKafkaSink("p", "t", txn_spec(kafka.bootstrap, topic, checkpoints))
    try:
        assert restarted.committed_position(timeout_s=20) is None
    finally:
        restarted.close()
    committed = read_topic(kafka.bootstrap, f"{topic}.eu", 1, timeout_s=5,
                           isolation="read_committed")
    assert committed == []  # the event before the rejected one went nowhere


def test_a_fenced_instance_fails_loudly(kafka: Any) -> None:
    topic, checkpoints = unique("eos"), unique("ckpt")
    old = TransactionalKafkaSink("p", "t", txn_spec(kafka.bootstrap, topic, checkpoints))
    new = TransactionalKafkaSink("p", "t", txn_spec(kafka.bootstrap, topic, checkpoints))
    try:
        old.committed_position(timeout_s=20)
        new.committed_position(timeout_s=20)  # same transactional.id: fences the old one
        with pytest.raises(SinkFencedError, match="fenced by a newer instance"):
            old.send_batch(1, [make_event("t", 1, 1, op="c")], BinlogPosition("bin.000001", 9))
    finally:
        old.close()
        new.close()


def test_a_position_committed_behind_another_open_transaction_is_read_back(kafka: Any) -> None:
    """Pipelines share the checkpoint topic. A read_committed read stops at the oldest open
    transaction, so a position committed after another pipeline's still-open transaction
    would be missed and the batch behind it re-sent. The read waits for that transaction
    instead (and says so if it stays open)."""
    topic, checkpoints = unique("eos"), unique("ckpt")
    spec = txn_spec(kafka.bootstrap, topic, checkpoints)
    first, second = BinlogPosition("bin.000001", 100), BinlogPosition("bin.000001", 200)
    sink = TransactionalKafkaSink("p", "t", spec)
    other = Producer({"bootstrap.servers": kafka.bootstrap, "transactional.id": unique("other")})
    try:
        sink.committed_position(timeout_s=20)
        sink.send_batch(1, [make_event("t", 1, 1, op="c")], first)
        other.init_transactions(20)
        other.begin_transaction()
        other.produce(checkpoints, b"{}", b"q/kafka")
        assert other.flush(20) == 0  # open, and below the next position
        sink.send_batch(2, [make_event("t", 2, 1, op="c")], second)
    finally:
        sink.close()
    restarted = TransactionalKafkaSink("p", "t", spec)
    try:
        with pytest.raises(SinkUnavailableError, match=r"'q/kafka' at offset \d+ is still open"):
            restarted.committed_position(timeout_s=2)
        threading.Timer(1.0, other.commit_transaction, args=(20,)).start()
        assert restarted.committed_position(timeout_s=20) == second
    finally:
        restarted.close()


def test_an_open_transaction_holding_this_sinks_position_stops_it_until_aborted(
        kafka: Any) -> None:
    """After ``init_transactions`` no transaction of this sink can be open, unless Kafka left
    one hanging: CI caught a broker restarted mid-commit skipping the markers of a prepared
    commit (docs/configuration.md). That cannot be forced on demand, so here another producer
    holds a transaction open over this sink's position record, which looks the same to the
    sink. It must refuse to write, naming the fix; after the operator's kafka-transactions.sh
    abort it reads back the position before that record."""
    topic, checkpoints = unique("eos"), unique("ckpt")
    spec = txn_spec(kafka.bootstrap, topic, checkpoints)
    first = BinlogPosition("bin.000001", 100)
    sink = TransactionalKafkaSink("p", "t", spec)
    try:
        sink.committed_position(timeout_s=20)
        sink.send_batch(1, [make_event("t", 1, 1, op="c")], first)
    finally:
        sink.close()
    stray = Producer({"bootstrap.servers": kafka.bootstrap, "transactional.id": unique("stray")})
    stray.init_transactions(20)
    stray.begin_transaction()
    stray.produce(checkpoints, encode_position("p", "eos", BinlogPosition("bin.000001", 200)),
                  record_key("p", "eos"))
    assert stray.flush(20) == 0
    restarted = TransactionalKafkaSink("p", "t", spec)
    try:
        with pytest.raises(HangingTransaction, match="kafka-transactions.sh") as raised:
            restarted.committed_position(timeout_s=20)
        kafka.transactions("abort", "--topic", checkpoints, "--partition", "0",
                           "--start-offset", str(raised.value.offset))
        assert restarted.committed_position(timeout_s=20) == first
    finally:
        restarted.close()
        stray.abort_transaction(20)


class TransactionWriter(threading.Thread):
    """Commits ``count`` transactions of 1-6 rows each; every row names its transaction."""

    def __init__(self, mariadb: Any, db: str, count: int) -> None:
        super().__init__(daemon=True)
        self.mariadb, self.db, self.count = mariadb, db, count
        self.committed = 0

    def run(self) -> None:
        rng = random.Random(7)
        with self.mariadb.connect(self.db) as conn, conn.cursor() as cur:
            for tx in range(self.count):
                size = rng.randint(1, 6)
                conn.begin()
                cur.executemany("INSERT INTO t VALUES (%s, %s, %s)",
                                [(tx * 10 + row, tx, size) for row in range(size)])
                conn.commit()
                self.committed += 1
                time.sleep(0.005)


def test_kill_9_during_transactions_yields_no_duplicate_gap_or_partial_transaction(
        mariadb: Any, kafka: Any, tmp_path: Path) -> None:
    db = unique("eos")
    with mariadb.connect() as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {db}")
        cur.execute(f"CREATE TABLE {db}.t (id INT PRIMARY KEY, tx INT, size INT)")
    kafka.create_topic(f"{db}.t", partitions=3)
    spec = pipeline_yaml("eos", mariadb.cdc_dsn(), kafka.bootstrap, [f"{db}.t"], f"{db}.t",
                         max_events=7)
    spec["spec"]["sinks"][0]["config"].update(exactly_once=True, checkpoint_topic=f"{db}.ckpt")
    service = Service(write_config(tmp_path / "config", spec), tmp_path / "data", workers=1)
    rng = random.Random(11)
    writer = TransactionWriter(mariadb, db, 800)
    try:
        service.start()
        service.wait_running("eos")
        writer.start()
        for _ in range(8):
            time.sleep(rng.uniform(0.3, 1.0))
            victim = service.worker_pid("eos")
            os.kill(victim, signal.SIGKILL)
            service.wait_until(lambda v=victim: service.status("eos") == "running"
                               and service.worker_pid("eos") != v, 60, "worker back")
        writer.join(120)
        with mariadb.connect(db) as conn, conn.cursor() as cur:
            cur.execute("SELECT id, tx, size FROM t")
            expected = {row[0]: (row[1], row[2]) for row in cur.fetchall()}
        records = read_until(kafka.bootstrap, f"{db}.t", lambda got: len(got) >= len(expected),
                             isolation="read_committed")
        records += read_topic(kafka.bootstrap, f"{db}.t", len(records) + 1, timeout_s=3,
                              isolation="read_committed")[len(records):]
        assert_exactly_once(records, expected)
        assert service.pipeline("eos")["ops"]["restarts"] == 0  # kills restart workers, not runs
    finally:
        service.close()


def assert_exactly_once(records: list[Record], expected: dict[int, tuple[int, int]]) -> None:
    ids = Counter(r.value["after"]["id"] for r in records)
    assert [i for i, n in ids.items() if n > 1] == [], "duplicates"
    assert set(ids) == set(expected), "gaps"
    by_tx: dict[int, list[int]] = defaultdict(list)
    for record in records:
        by_tx[record.value["after"]["tx"]].append(record.value["after"]["size"])
    assert all(len(sizes) == sizes[0] for sizes in by_tx.values()), "partial transaction"
