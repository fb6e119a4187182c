"""Crashes and restarts: Kafka ends up with every committed row; duplicates only after the
last durable checkpoint (at-least-once), none at all after a clean stop."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from state.env import open_state
from state.records import BinlogPosition, binlog_file_number
from state.stores import CheckpointStore
from tests.support.kafka_read import Record, read_topic, read_until
from tests.support.pipelines import pipeline_yaml, unique, write_config
from tests.support.service import Service

pytestmark = pytest.mark.services


class RowWriter(threading.Thread):
    """Inserts rows ``start..stop-1`` in small transactions, as an application would."""

    def __init__(self, mariadb: Any, db: str, start: int, stop: int, pause_s: float = 0.002):
        super().__init__(daemon=True)
        self.mariadb, self.db, self.range, self.pause_s = mariadb, db, range(start, stop), pause_s
        self.committed = 0

    def run(self) -> None:
        with self.mariadb.connect(self.db) as conn, conn.cursor() as cur:
            ids = list(self.range)
            for index in range(0, len(ids), 3):
                chunk = ids[index:index + 3]
                conn.begin()
                cur.executemany("INSERT INTO t VALUES (%s, %s)", [(i, f"row-{i}") for i in chunk])
                conn.commit()
                self.committed += len(chunk)
                time.sleep(self.pause_s)


def committed_rows(mariadb: Any, db: str) -> dict[int, str]:
    with mariadb.connect(db) as conn, conn.cursor() as cur:
        cur.execute("SELECT id, v FROM t")
        return dict(cur.fetchall())


def delivered_rows(records: list[Record]) -> dict[int, str]:
    return {r.value["after"]["id"]: r.value["after"]["v"] for r in records}


def checkpoint_of(data_dir: Path, pipeline: str) -> BinlogPosition:
    state = open_state(data_dir)
    try:
        return CheckpointStore(state).for_pipeline(pipeline)["kafka"].position
    finally:
        state.close()


def at_or_after(record: Record, position: BinlogPosition) -> bool:
    """Whether the record's rows event starts at or after the checkpoint's boundary."""
    source = record.value["source"]
    here = (binlog_file_number(source["file"]), source["pos"])
    return here >= (binlog_file_number(position.file), position.pos)


def duplicates(records: list[Record]) -> list[Record]:
    counts = Counter(r.value["event_id"] for r in records)
    return [r for r in records if counts[r.value["event_id"]] > 1]


@pytest.fixture
def table(mariadb: Any, kafka: Any) -> str:
    db = unique("crash")
    with mariadb.connect() as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {db}")
        cur.execute(f"CREATE TABLE {db}.t (id INT PRIMARY KEY, v VARCHAR(40))")
    kafka.create_topic(f"{db}.t", partitions=3)
    return db


def start_service(mariadb: Any, kafka: Any, db: str, tmp_path: Path,
                  exactly_once: bool = False) -> Service:
    spec = pipeline_yaml("p", mariadb.cdc_dsn(), kafka.bootstrap, [f"{db}.t"], f"{db}.t",
                         max_events=50)
    if exactly_once:
        spec["spec"]["sinks"][0]["config"].update(exactly_once=True,
                                                  checkpoint_topic=f"{db}.checkpoints")
    service = Service(write_config(tmp_path / "config", spec), tmp_path / "data", workers=1)
    service.start()
    service.wait_running("p")
    return service


def test_kill_9_of_a_worker_loses_nothing(mariadb: Any, kafka: Any, table: str,
                                          tmp_path: Path) -> None:
    service = start_service(mariadb, kafka, table, tmp_path)
    try:
        writer = RowWriter(mariadb, table, 0, 3000)
        writer.start()
        service.wait_until(lambda: writer.committed > 1000, 60, "1000 rows written")
        victim = service.worker_pid("p")
        os.kill(victim, signal.SIGKILL)
        checkpoint = checkpoint_of(service.data_dir, "p")
        service.wait_until(lambda: service.status("p") == "running"
                           and service.worker_pid("p") != victim, 60, "worker back")
        writer.join(120)
        expected = committed_rows(mariadb, table)
        records = read_until(kafka.bootstrap, f"{table}.t",
                             lambda got: delivered_rows(got) == expected)
        assert delivered_rows(records) == expected
        assert all(at_or_after(r, checkpoint) for r in duplicates(records))
    finally:
        service.close()


@pytest.mark.parametrize("exactly_once", [False, True], ids=["at_least_once", "exactly_once"])
def test_kill_9_of_the_whole_service_then_restart_loses_nothing(
        mariadb: Any, kafka: Any, table: str, tmp_path: Path, exactly_once: bool) -> None:
    """At-least-once: duplicates only at or after the checkpoint; exactly-once, read with
    read_committed: none at all."""
    service = start_service(mariadb, kafka, table, tmp_path, exactly_once)
    isolation = "read_committed" if exactly_once else "read_uncommitted"
    writer = RowWriter(mariadb, table, 0, 2000)
    try:
        writer.start()
        service.wait_until(lambda: writer.committed > 600, 60, "600 rows written")
        service.kill9()
        checkpoint = checkpoint_of(service.data_dir, "p")
        writer.join(120)  # rows keep coming while the service is down
        service.start()
        expected = committed_rows(mariadb, table)
        records = read_until(kafka.bootstrap, f"{table}.t",
                             lambda got: delivered_rows(got) == expected, isolation=isolation)
        assert delivered_rows(records) == expected
        assert all(at_or_after(r, checkpoint) for r in duplicates(records))
        if exactly_once:
            time.sleep(2)  # anything duplicated would arrive by now
            records = read_topic(kafka.bootstrap, f"{table}.t", len(records) + 1, timeout_s=3,
                                 isolation=isolation)
            assert len(records) == len(expected) and not duplicates(records)
    finally:
        service.close()


def test_clean_stop_and_restart_neither_loses_nor_duplicates(
        mariadb: Any, kafka: Any, table: str, tmp_path: Path) -> None:
    service = start_service(mariadb, kafka, table, tmp_path)
    try:
        RowWriter(mariadb, table, 0, 300, pause_s=0).run()
        service.wait_until(lambda: service.pipeline("p")["ops"]["events_total"] >= 300, 60,
                           "300 rows delivered")
        assert service.stop() == 0
        RowWriter(mariadb, table, 300, 600, pause_s=0).run()  # written while stopped
        service.start()
        RowWriter(mariadb, table, 600, 900, pause_s=0).run()
        records = read_topic(kafka.bootstrap, f"{table}.t", expect=900)
        time.sleep(2)  # anything duplicated would arrive by now
        records = read_topic(kafka.bootstrap, f"{table}.t", expect=len(records) + 1, timeout_s=3)
        assert delivered_rows(records) == committed_rows(mariadb, table)
        assert len(records) == 900 and not duplicates(records)
    finally:
        service.close()

