"""The hand-written baseline: BinLogStreamReader in a loop feeding a confluent_kafka Producer."""

from __future__ import annotations

import logging
import resource
import time
from typing import Any

import orjson
from confluent_kafka import KafkaError, Message, Producer
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.row_event import WriteRowsEvent

from benchmarks.dataset import DATABASE, TABLE, Backlog
from benchmarks.measure import Result, cpu_s
from deploy.local.mariadb import CDC_PASSWORD, CDC_USER, MariaDBServer

log = logging.getLogger(__name__)

BASELINE_SERVER_ID = 424242


class DeliveryCounter:
    """Counts acknowledged and failed messages from the producer's delivery callbacks."""

    def __init__(self) -> None:
        self.acked = 0
        self.failed = 0

    def __call__(self, error: KafkaError | None, _message: Message) -> None:
        if error is None:
            self.acked += 1
        else:
            self.failed += 1


def run_baseline(mariadb: MariaDBServer, bootstrap: str, topic: str, backlog: Backlog) -> Result:
    """Read backlog.rows inserted rows from the binlog, produce each as JSON, flush; timed."""
    cpu_before = cpu_s(resource.RUSAGE_SELF)
    started = time.monotonic()
    delivered = DeliveryCounter()
    producer = Producer({
        "bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
        "linger.ms": 5, "compression.type": "lz4",
    })
    stream = open_stream(mariadb, backlog)
    try:
        read = produce_rows(stream, producer, topic, backlog.rows, delivered)
    finally:
        stream.close()
    producer.flush(60)
    wall_s = time.monotonic() - started
    cpu = cpu_s(resource.RUSAGE_SELF) - cpu_before
    if read != backlog.rows or delivered.acked != backlog.rows:
        raise RuntimeError(f"baseline read {read} rows, acked {delivered.acked} "
                           f"(failed {delivered.failed}) of {backlog.rows}")
    return Result("baseline", read, wall_s, cpu, {"acked": delivered.acked})


def open_stream(mariadb: MariaDBServer, backlog: Backlog) -> BinLogStreamReader:
    settings = {"host": mariadb.host, "port": mariadb.port, "user": CDC_USER,
                "passwd": CDC_PASSWORD}
    return BinLogStreamReader(
        connection_settings=settings, server_id=BASELINE_SERVER_ID,
        log_file=backlog.start.file, log_pos=backlog.start.pos, resume_stream=True,
        blocking=False, only_events=[WriteRowsEvent], only_schemas=[DATABASE],
        only_tables=[TABLE], is_mariadb=False,
    )


def produce_rows(stream: BinLogStreamReader, producer: Producer, topic: str, limit: int,
                 on_delivery: DeliveryCounter) -> int:
    """What a user writes by hand: every row's values as JSON, keyed by the primary key."""
    produced = 0
    for event in stream:
        for row in event.rows:
            values: dict[str, Any] = row["values"]
            send(producer, topic, str(values["id"]), orjson.dumps(values, default=str),
                 on_delivery)
            produced += 1
            if produced >= limit:
                return produced
        producer.poll(0)
    return produced


def send(producer: Producer, topic: str, key: str, value: bytes,
         on_delivery: DeliveryCounter) -> None:
    """Produce, waiting for room when the local queue is full."""
    while True:
        try:
            producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
            return
        except BufferError:
            producer.poll(0.05)
