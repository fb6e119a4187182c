"""The drain benchmark's data: private MariaDB and Kafka, table ``bench.items``, a row backlog."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

from deploy.local.kafka import KafkaBroker
from deploy.local.mariadb import MariaDBServer
from deploy.local.processes import free_port
from state.records import BinlogPosition
from state.spec import MysqlConfigSpec
from workers.source.mysql import current_binlog_end

log = logging.getLogger(__name__)

DATABASE = "bench"
TABLE = "items"
ROWS_PER_TRANSACTION = 1000
TOPIC_PARTITIONS = 3

CREATE_TABLE = f"""
CREATE TABLE {DATABASE}.{TABLE} (
  id BIGINT UNSIGNED PRIMARY KEY,
  customer_id INT,
  sku VARCHAR(32),
  qty SMALLINT,
  price DECIMAL(10,2),
  status ENUM('new','paid','shipped'),
  note VARCHAR(120),
  created_at DATETIME(3)
)"""
INSERT = (
    f"INSERT INTO {DATABASE}.{TABLE}"
    " (id, customer_id, sku, qty, price, status, note, created_at)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
)
STATUSES = ("new", "paid", "shipped")
EPOCH = datetime(2024, 1, 1)


@dataclass(frozen=True)
class Services:
    """The running MariaDB and Kafka of one benchmark run."""

    mariadb: MariaDBServer
    kafka: KafkaBroker


@dataclass(frozen=True)
class Backlog:
    """Where the inserted rows start and end in the binlog, and how long inserting took."""

    rows: int
    start: BinlogPosition
    end: BinlogPosition
    insert_s: float


@contextmanager
def services(base_dir: Path) -> Iterator[Services]:
    """Start MariaDB and Kafka on free ports under base_dir; stop both on exit, even on error."""
    mariadb = MariaDBServer(base_dir / "mariadb", free_port())
    port = free_port()
    controller_port = next(p for p in iter(free_port, None) if p != port)
    kafka = KafkaBroker(base_dir / "kafka", port, controller_port)
    with ExitStack() as stack:
        for service in (mariadb, kafka):
            stack.callback(service.stop)
            service.start()
        yield Services(mariadb, kafka)


def source_config(mariadb: MariaDBServer) -> MysqlConfigSpec:
    tables = [f"{DATABASE}.{TABLE}"]
    return MysqlConfigSpec(id="src-bench", dsn=mariadb.cdc_dsn(DATABASE), tables=tables)


def create_backlog(mariadb: MariaDBServer, rows: int) -> Backlog:
    """Create the table, note the binlog end, insert ``rows`` rows, note the end again."""
    conn = mariadb.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {DATABASE}")
            cur.execute(CREATE_TABLE)
        start = current_binlog_end(source_config(mariadb))
        started = time.monotonic()
        insert_rows(conn, rows)
        insert_s = time.monotonic() - started
        end = current_binlog_end(source_config(mariadb))
    finally:
        conn.close()
    log.info("backlog rows=%d start=%s end=%s insert_s=%.1f", rows, start, end, insert_s)
    return Backlog(rows, start, end, insert_s)


def insert_rows(conn: object, rows: int) -> None:
    """Multi-row INSERTs of ROWS_PER_TRANSACTION rows, one autocommit transaction each."""
    with conn.cursor() as cur:  # type: ignore[attr-defined]
        for first in range(1, rows + 1, ROWS_PER_TRANSACTION):
            last = min(rows, first + ROWS_PER_TRANSACTION - 1)
            cur.executemany(INSERT, [item_row(i) for i in range(first, last + 1)])


def item_row(i: int) -> tuple[object, ...]:
    """A deterministic, typical order row."""
    created = EPOCH + timedelta(milliseconds=i * 37)
    note = f"order {i} for customer {i % 50_000}, deliver to door {i % 97}"
    price = f"{(i % 100_000) / 100:.2f}"
    return (i, i % 50_000, f"SKU-{i % 9973:06d}", i % 20 + 1, price, STATUSES[i % 3], note, created)


def topic_messages(bootstrap: str, topic: str, partitions: int = TOPIC_PARTITIONS) -> int:
    """Messages in a topic: the sum of its partitions' high watermarks (topics start at 0)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-watermarks"})
    try:
        total = 0
        for partition in range(partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            total += high - low
        return total
    finally:
        consumer.close()


def committed_messages(bootstrap: str, topic: str, partitions: int = TOPIC_PARTITIONS,
                       timeout_s: float = 600.0) -> tuple[int, int]:
    """Messages and distinct keys a ``read_committed`` consumer sees in a topic, from the start.

    Counted message by message: transaction markers occupy offsets, so high watermarks
    over-count a transactional topic. Reads each partition to its end (the last stable offset).
    """
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": "bench-committed-count",
        "isolation.level": "read_committed", "enable.auto.commit": False,
        "enable.partition.eof": True, "auto.offset.reset": "earliest",
    })
    messages = 0
    keys: set[bytes | str | None] = set()
    at_end: set[int] = set()
    deadline = time.monotonic() + timeout_s
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        while len(at_end) < partitions:
            if time.monotonic() > deadline:
                raise RuntimeError(f"topic {topic} not read to its end in {timeout_s:.0f}s")
            for message in consumer.consume(10_000, timeout=1.0):
                error = message.error()
                if error is None:
                    messages += 1
                    keys.add(message.key())
                elif error.code() == KafkaError._PARTITION_EOF:
                    at_end.add(int(message.partition() or 0))
                else:
                    raise RuntimeError(f"reading {topic}: {error}")
        return messages, len(keys)
    finally:
        consumer.close()


def warm_up(bootstrap: str, transactional: bool = False) -> None:
    """One idempotent message, so the broker's first-producer set-up is not in either timing.

    ``transactional`` also commits one transaction, so the broker's creation of its
    transaction-state topic (first transactional producer) is not in the exactly-once timing.
    """
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    producer.produce("bench.warmup", value=b"warm-up")
    if producer.flush(60) != 0:
        raise RuntimeError("kafka warm-up message not delivered within 60s")
    if transactional:
        txn = Producer({"bootstrap.servers": bootstrap, "transactional.id": "bench-warmup"})
        txn.init_transactions(120)
        txn.begin_transaction()
        txn.produce("bench.warmup", value=b"warm-up transaction")
        txn.commit_transaction(60)
