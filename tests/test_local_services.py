"""The local services themselves: MariaDB binlog settings and CDC grants, Kafka transactions."""

from __future__ import annotations

import time

import pymysql
import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from deploy.local.kafka import KafkaBroker
from deploy.local.mariadb import MariaDBServer

pytestmark = pytest.mark.services

CDC_VARIABLES = {
    "log_bin": "ON",
    "binlog_format": "ROW",
    "binlog_row_image": "FULL",
    "binlog_row_metadata": "FULL",
}


def cdc_connect(mariadb: MariaDBServer) -> pymysql.connections.Connection:
    return pymysql.connect(host=mariadb.host, port=mariadb.port, user="cdc", password="cdcpw",
                           autocommit=True, connect_timeout=5)


def test_mariadb_writes_a_full_row_binlog(mariadb: MariaDBServer) -> None:
    with mariadb.connect() as conn, conn.cursor() as cur:
        cur.execute("SHOW GLOBAL VARIABLES WHERE Variable_name IN %s", (tuple(CDC_VARIABLES),))
        assert dict(cur.fetchall()) == CDC_VARIABLES


def test_cdc_user_reads_binlog_position_and_data_only(
    mariadb: MariaDBServer, unique_name: str
) -> None:
    with mariadb.connect() as root, root.cursor() as cur:
        cur.execute(f"CREATE DATABASE {unique_name}")
        cur.execute(f"CREATE TABLE {unique_name}.t (id INT PRIMARY KEY, v VARCHAR(10))")
        cur.execute(f"INSERT INTO {unique_name}.t VALUES (1, 'a')")
    with cdc_connect(mariadb) as conn, conn.cursor() as cur:
        cur.execute("SHOW MASTER STATUS")
        binlog_file, position = cur.fetchone()[:2]
        assert binlog_file.startswith("mysql-bin.") and position > 0
        cur.execute(f"SELECT id, v FROM {unique_name}.t")
        assert cur.fetchall() == ((1, "a"),)
        for statement in (f"CREATE DATABASE {unique_name}_x", f"DELETE FROM {unique_name}.t"):
            with pytest.raises(pymysql.err.OperationalError) as denied:
                cur.execute(statement)
            assert denied.value.args[0] in (1044, 1142, 1227), denied.value  # access denied


def test_cdc_dsn_names_the_cdc_user(mariadb: MariaDBServer) -> None:
    assert mariadb.cdc_dsn("shop") == f"mysql://cdc:cdcpw@127.0.0.1:{mariadb.port}/shop"
    assert mariadb.root_dsn == f"mysql://root:rootpw@127.0.0.1:{mariadb.port}/"


def test_read_committed_consumer_sees_only_committed_transactions(
    kafka: KafkaBroker, unique_name: str
) -> None:
    kafka.create_topic(unique_name, partitions=1)
    producer = Producer({"bootstrap.servers": kafka.bootstrap,
                         "transactional.id": f"{unique_name}-tx"})
    producer.init_transactions(30)
    send_transaction(producer, unique_name, [b"committed-1", b"committed-2"], commit=True)
    send_transaction(producer, unique_name, [b"aborted-1"], commit=False)
    send_transaction(producer, unique_name, [b"committed-3"], commit=True)

    assert read_values(kafka, unique_name, "read_committed", expect=3) == [
        b"committed-1", b"committed-2", b"committed-3"]
    assert read_values(kafka, unique_name, "read_uncommitted", expect=4) == [
        b"committed-1", b"committed-2", b"aborted-1", b"committed-3"]


def send_transaction(producer: Producer, topic: str, values: list[bytes], commit: bool) -> None:
    producer.begin_transaction()
    for value in values:
        producer.produce(topic, value=value, key=b"k")
    producer.flush(30)
    if commit:
        producer.commit_transaction(30)
    else:
        producer.abort_transaction(30)


def read_values(kafka: KafkaBroker, topic: str, isolation: str, expect: int,
                timeout_s: float = 30.0) -> list[bytes]:
    """Values of partition 0 from the start, read with assign() (no group join)."""
    consumer = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": "unused",
                         "enable.auto.commit": False, "isolation.level": isolation,
                         "enable.partition.eof": True})
    consumer.assign([TopicPartition(topic, 0, 0)])
    values: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            error = message.error()
            if error is not None and error.code() == KafkaError._PARTITION_EOF:
                if len(values) >= expect:
                    break
                continue
            assert error is None, error
            values.append(message.value() or b"")
    finally:
        consumer.close()
    assert len(values) >= expect, f"{isolation}: {len(values)} of {expect} after {timeout_s}s"
    return values
