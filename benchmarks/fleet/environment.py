"""The fleet's world: private MariaDB servers and one Kafka broker, tables, topics, pipelines."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymysql
import yaml
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from pymysql.connections import Connection

from deploy.local.kafka import KafkaBroker
from deploy.local.mariadb import ROOT_PASSWORD, MariaDBServer
from deploy.local.processes import free_port

log = logging.getLogger(__name__)

TOPIC_CONFIG = {"message.timestamp.type": "LogAppendTime"}  # delivery time set by the broker
SERVER_SETTINGS = (
    "SET GLOBAL max_connections = 2000",  # sharing off: one dump connection per pipeline
    "SET GLOBAL innodb_flush_log_at_trx_commit = 0",  # a cheap load generator, not durability
)
TABLE_DDL = (
    "CREATE TABLE {db}.{table} ("
    " id BIGINT UNSIGNED NOT NULL PRIMARY KEY,"
    " commit_us BIGINT NOT NULL DEFAULT (UNIX_TIMESTAMP(NOW(6)) * 1000000),"
    " note VARCHAR(64) NOT NULL DEFAULT 'fleet benchmark row')"
)


@dataclass(frozen=True)
class Services:
    servers: list[MariaDBServer]
    kafka: KafkaBroker


@dataclass(frozen=True)
class PipelinePlan:
    """One pipeline of one mode: its server, its table and its topic."""

    name: str
    server: int
    table_index: int
    database: str
    table: str
    topic: str


@contextmanager
def running_services(base_dir: Path, servers: int) -> Iterator[Services]:
    """Start ``servers`` MariaDB servers and, meanwhile, one Kafka broker; stop all on exit."""
    mariadbs = [MariaDBServer(base_dir / f"mariadb-{i}", free_port()) for i in range(servers)]
    port = free_port()
    controller_port = next(p for p in iter(free_port, None) if p != port)
    kafka = KafkaBroker(base_dir / "kafka", port, controller_port)
    every: list[MariaDBServer | KafkaBroker] = [*mariadbs, kafka]
    with ExitStack() as stack:
        for service in every:
            stack.callback(service.stop)  # registered first: a half-started service stops too
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=1) as pool:
            kafka_started = pool.submit(kafka.start)
            for server in mariadbs:  # one at a time: parallel mariadb-install-db runs collide
                server.start()
            kafka_started.result()
        for server in mariadbs:
            server.execute(*SERVER_SETTINGS)
        log.info("services started servers=%d seconds=%.1f", servers, time.monotonic() - started)
        yield Services(mariadbs, kafka)


class BinlogMonitor:
    """One lasting root connection per server (a new one costs a TLS context in PyMySQL)."""

    QUERY = ("SELECT COUNT(*) FROM information_schema.PROCESSLIST"
             " WHERE COMMAND LIKE 'Binlog Dump%'")

    def __init__(self, services: Services) -> None:
        self.connections = [root_connection(s) for s in services.servers]

    def counts(self) -> list[int]:
        """Binlog dump connections open on each server right now."""
        found = []
        for conn in self.connections:
            with conn.cursor() as cur:
                cur.execute(self.QUERY)
                row = cur.fetchone()
                found.append(int(row[0]) if row else 0)
        return found

    def close(self) -> None:
        for conn in self.connections:
            conn.close()


def root_connection(server: MariaDBServer) -> Connection:
    """Root over TCP without TLS: PyMySQL would build an SSL context (~50 ms CPU) per connect."""
    return pymysql.connect(host=server.host, port=server.port, user="root",
                           password=ROOT_PASSWORD, autocommit=True, connect_timeout=5,
                           read_timeout=60, write_timeout=60, ssl_disabled=True)


def plan_pipelines(mode: str, servers: int, per_server: int) -> list[PipelinePlan]:
    database = f"fleet_{mode}"
    return [PipelinePlan(f"fleet-s{s}-t{t:03d}", s, t, database, f"t{t:03d}",
                         f"fleet.{mode}.s{s}.t{t:03d}")
            for s in range(servers) for t in range(per_server)]


def create_tables(services: Services, plans: list[PipelinePlan]) -> None:
    """A fresh database per mode on every server, one empty table per pipeline."""
    for index, server in enumerate(services.servers):
        mine = [p for p in plans if p.server == index]
        conn = server.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS {mine[0].database}")
                cur.execute(f"CREATE DATABASE {mine[0].database}")
                for plan in mine:
                    cur.execute(TABLE_DDL.format(db=plan.database, table=plan.table))
        finally:
            conn.close()


def drop_database(services: Services, database: str) -> None:
    for server in services.servers:
        conn = server.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS {database}")
        finally:
            conn.close()


def create_topics(kafka: KafkaBroker, topics: list[str], timeout_s: float = 120.0) -> None:
    """One partition each, LogAppendTime; waits until every partition has a leader."""
    admin = kafka.admin()
    new = [NewTopic(t, num_partitions=1, replication_factor=1, config=TOPIC_CONFIG)
           for t in topics]
    for future in admin.create_topics(new, operation_timeout=timeout_s).values():
        future.result(timeout=timeout_s)
    deadline = time.monotonic() + timeout_s
    while not _all_led(admin, set(topics)):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(topics)} topics have no leaders after {timeout_s:.0f}s")
        time.sleep(0.5)


def _all_led(admin: AdminClient, topics: set[str]) -> bool:
    metadata = admin.list_topics(timeout=10).topics
    return all(t in metadata and metadata[t].error is None
               and all(p.leader >= 0 for p in metadata[t].partitions.values()) for t in topics)


def delete_topics(kafka: KafkaBroker, topics: list[str]) -> None:
    """Best effort: a later mode does not need them, the broker is lighter without them."""
    admin = kafka.admin()  # referenced until the futures are done, or librdkafka aborts them
    try:
        for future in admin.delete_topics(topics, operation_timeout=60).values():
            future.result(timeout=60)
    except KafkaException as exc:
        log.warning("deleting topics failed: %s", exc)


def write_configs(config_dir: Path, services: Services, plans: list[PipelinePlan],
                  batch_max_ms: int | None = None) -> None:
    config_dir.mkdir(parents=True, exist_ok=True)
    for plan in plans:
        document = pipeline_document(plan, services)
        if batch_max_ms is not None:
            document["spec"]["batch"] = {"max_ms": batch_max_ms}
        (config_dir / f"{plan.name}.yaml").write_text(yaml.safe_dump(document, sort_keys=False))


def pipeline_document(plan: PipelinePlan, services: Services) -> dict[str, Any]:
    """Product defaults except what identifies the pipeline (batching, heartbeats, envelope)."""
    dsn = services.servers[plan.server].cdc_dsn(plan.database)
    return {
        "apiVersion": "deltaforge/v1",
        "kind": "Pipeline",
        "metadata": {"name": plan.name, "tenant": "fleet",
                     "labels": {"server": f"s{plan.server}"}},
        "spec": {
            "source": {"type": "mysql", "config": {
                "id": plan.name, "dsn": dsn, "tables": [f"{plan.database}.{plan.table}"]}},
            "sinks": [{"type": "kafka", "config": {
                "id": "kafka", "brokers": services.kafka.bootstrap, "topic": plan.topic,
                "envelope": "native"}}],
        },
    }
