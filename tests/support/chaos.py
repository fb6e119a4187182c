"""Shared pieces of the chaos tests: delivery modes, a steady change load, checkpoints, and the
row-by-row comparison of what MariaDB committed against what Kafka holds."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lmdb
import pymysql

from state.env import MAX_READERS, SUB_DATABASES, StateEnv
from state.records import BinlogPosition, binlog_file_number
from state.stores import CheckpointStore
from tests.support.kafka_read import Record, read_until
from tests.support.pipelines import pipeline_yaml, write_config
from tests.support.service import Service

Version = tuple[int, str]  # (id, v): every value the writer commits is unique
EventOrder = tuple[int, int, int]  # (binlog file number, rows event end, row index)
HANGING_CHECK_INTERVAL_S = 10.0  # the watcher looks for hanging transactions at most this often


@dataclass(frozen=True)
class DeliveryMode:
    """How the pipeline delivers and what a consumer may then see."""

    name: str
    sink_config: dict[str, Any] = field(default_factory=dict)
    isolation: str = "read_uncommitted"
    duplicates_allowed: bool = True


AT_LEAST_ONCE = DeliveryMode("at_least_once")
EXACTLY_ONCE = DeliveryMode("exactly_once", {"exactly_once": True}, "read_committed", False)
DELIVERY_MODES = [AT_LEAST_ONCE, EXACTLY_ONCE]


class ChangeWriter(threading.Thread):
    """A steady load: each transaction inserts two new rows and updates one earlier row.

    Every committed value is unique (``<id>:<transaction number>``). Survives server restarts
    and network cuts: it reconnects, and keeps the versions of a transaction whose commit
    failed as ``uncertain`` (it may or may not have committed).
    """

    def __init__(self, connect: Callable[[], Any], pause_s: float = 0.01,
                 max_transactions: int = 100_000) -> None:
        super().__init__(daemon=True, name="change-writer")
        self.connect, self.pause_s, self.max_transactions = connect, pause_s, max_transactions
        self.committed: list[Version] = []
        self.uncertain: list[Version] = []
        self.failures = 0
        self._ids: list[int] = []
        self._next_id = 0
        self._stop_event = threading.Event()

    @property
    def transactions(self) -> int:
        return len(self.committed) // 3

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stop_event.set()
        self.join(timeout_s)
        assert not self.is_alive(), "change writer did not stop"

    def run(self) -> None:
        conn: Any = None
        number = 0
        while not self._stop_event.is_set() and number < self.max_transactions:
            number += 1
            versions = self._plan(number)
            try:
                conn = conn or self.connect()
                self._apply(conn, versions)
            except (pymysql.err.MySQLError, OSError):
                self.failures += 1
                self.uncertain += versions
                _close_quietly(conn)
                conn = None
                self._stop_event.wait(0.2)
                continue
            self.committed += versions
            self._ids += [row_id for row_id, _ in versions[:2]]
            self._stop_event.wait(self.pause_s)
        _close_quietly(conn)

    def _plan(self, number: int) -> list[Version]:
        new = [self._next_id, self._next_id + 1]
        self._next_id += 2
        updated = random.choice(self._ids) if self._ids else new[0]
        return [(new[0], f"{new[0]}:{number}"), (new[1], f"{new[1]}:{number}"),
                (updated, f"{updated}:{number}u")]

    @staticmethod
    def _apply(conn: Any, versions: list[Version]) -> None:
        conn.begin()
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO t (id, v) VALUES (%s, %s)", versions[:2])
            cur.execute("UPDATE t SET v = %s WHERE id = %s", (versions[2][1], versions[2][0]))
        conn.commit()


def _close_quietly(conn: Any) -> None:
    if conn is not None:
        try:
            conn.close()
        except Exception:  # already broken: nothing left to close
            pass


def create_table(server: Any, kafka: Any, db: str, partitions: int = 3) -> str:
    """A database with table ``t`` and its topic ``<db>.t``; returns the topic."""
    with server.connect() as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {db}")
        cur.execute(f"CREATE TABLE {db}.t (id INT PRIMARY KEY, v VARCHAR(40))")
    kafka.create_topic(f"{db}.t", partitions=partitions)
    return f"{db}.t"


def start_pipeline(tmp_path: Path, mode: DeliveryMode, dsn: str, brokers: str, db: str,
                   timeout_s: float = 60.0) -> Service:
    """The real CLI with one worker running pipeline ``p`` from ``db.t`` to topic ``db.t``."""
    spec = pipeline_yaml("p", dsn, brokers, [f"{db}.t"], f"{db}.t", max_events=50)
    spec["spec"]["sinks"][0]["config"].update(mode.sink_config)
    if mode.sink_config.get("exactly_once"):
        # Every test's pipeline is "p": a shared checkpoint topic would hand one test's
        # position to the next (which the position check then rightly refuses).
        spec["spec"]["sinks"][0]["config"]["checkpoint_topic"] = f"{db}.checkpoints"
    service = Service(write_config(tmp_path / "config", spec), tmp_path / "data", workers=1)
    service.start(timeout_s=timeout_s)
    service.wait_running("p", timeout_s)
    return service


def read_checkpoint(data_dir: Path, pipeline: str = "p", sink_id: str = "kafka"
                    ) -> BinlogPosition | None:
    """The durable checkpoint of a sink, read from LMDB without opening it for writing."""
    env = lmdb.open(str(data_dir / "state"), readonly=True, max_dbs=len(SUB_DATABASES) + 2,
                    max_readers=MAX_READERS)
    try:
        record = CheckpointStore(StateEnv(env)).for_pipeline(pipeline).get(sink_id)
        return None if record is None else record.position
    finally:
        env.close()


def committed_rows(server: Any, db: str) -> dict[int, str]:
    with server.connect(db) as conn, conn.cursor() as cur:
        cur.execute("SELECT id, v FROM t")
        return dict(cur.fetchall())


def delivered_rows(records: list[Record]) -> dict[int, str]:
    """The last value per key (records of one key are in one partition, in offset order)."""
    return {r.value["after"]["id"]: r.value["after"]["v"] for r in records}


def delivered_versions(records: list[Record]) -> set[Version]:
    return {(r.value["after"]["id"], r.value["after"]["v"]) for r in records}


def read_delivery(bootstrap: str, topic: str, mode: DeliveryMode, writer: ChangeWriter,
                  expected: dict[int, str], timeout_s: float = 90.0) -> list[Record]:
    """Everything in the topic once it holds every committed version and the final rows."""
    wanted = set(writer.committed)

    def complete(records: list[Record]) -> bool:
        return delivered_rows(records) == expected and wanted <= delivered_versions(records)

    return read_until(bootstrap, topic, complete, timeout_s, mode.isolation)


def assert_delivered(records: list[Record], writer: ChangeWriter, expected: dict[int, str],
                     mode: DeliveryMode, checkpoints: list[BinlogPosition]) -> None:
    """Zero gaps, nothing invented, final rows equal, per-key order, duplicates allowed only
    at or after the oldest of ``checkpoints`` (none at all when the mode forbids them)."""
    versions = delivered_versions(records)
    missing = set(writer.committed) - versions
    assert not missing, f"{len(missing)} committed changes never reached Kafka: {_few(missing)}"
    invented = versions - set(writer.committed) - set(writer.uncertain)
    assert not invented, f"{len(invented)} changes in Kafka were never written: {_few(invented)}"
    assert delivered_rows(records) == expected, "last message per key differs from the table"
    assert_key_order(records)
    assert_duplicates(records, mode, checkpoints)


def assert_key_order(records: list[Record]) -> None:
    """One key, one partition; first deliveries of a key's changes come in commit order."""
    partitions: dict[str | None, set[int]] = {}
    last: dict[str | None, EventOrder] = {}
    seen: set[str] = set()
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        partitions.setdefault(record.key, set()).add(record.partition)
        event_id = record.value["event_id"]
        if event_id in seen:
            continue  # a replayed duplicate: its first delivery was checked
        seen.add(event_id)
        order = event_order(event_id)
        assert order > last.get(record.key, (-1, -1, -1)), f"key {record.key} out of order"
        last[record.key] = order
    split = {key: parts for key, parts in partitions.items() if len(parts) > 1}
    assert not split, f"keys in more than one partition: {_few(split.items())}"


def assert_duplicates(records: list[Record], mode: DeliveryMode,
                      checkpoints: list[BinlogPosition]) -> None:
    dups = duplicates(records)
    if not mode.duplicates_allowed:
        assert not dups, f"{len(dups)} duplicates in {mode.name} mode: {_few(dups)}"
        return
    if not dups:
        return
    assert checkpoints, f"{len(dups)} duplicates without any fault: {_few(dups)}"
    oldest = min(checkpoints, key=BinlogPosition.sort_key)
    early = [r for r in dups if not at_or_after(r, oldest)]
    assert not early, f"duplicates before the oldest checkpoint {oldest}: {_few(early)}"


def assert_replays_bounded(records: list[Record], checkpoints: list[BinlogPosition]) -> None:
    """An event appears at most once plus once per crash whose checkpoint was at or before it."""
    counts = Counter(r.value["event_id"] for r in records)
    for record in records:
        replays = sum(1 for c in checkpoints if at_or_after(record, c))
        assert counts[record.value["event_id"]] <= 1 + replays, (
            f"{record.value['event_id']} delivered {counts[record.value['event_id']]} times, "
            f"only {replays} crashes had a checkpoint at or before it")


def duplicates(records: list[Record]) -> list[Record]:
    counts = Counter(r.value["event_id"] for r in records)
    return [r for r in records if counts[r.value["event_id"]] > 1]


def event_order(event_id: str) -> EventOrder:
    """Commit order from ``server_id:file:end_pos:row_index``."""
    _, file, end_pos, row = event_id.rsplit(":", 3)
    return binlog_file_number(file), int(end_pos), int(row)


def at_or_after(record: Record, position: BinlogPosition) -> bool:
    """Whether the record's rows event starts at or after the checkpoint's boundary."""
    source = record.value["source"]
    here = (binlog_file_number(source["file"]), source["pos"])
    return here >= (binlog_file_number(position.file), position.pos)


def _few(items: Any, limit: int = 5) -> str:
    listed = sorted(items, key=str)
    more = f" ... and {len(listed) - limit} more" if len(listed) > limit else ""
    return ", ".join(map(str, listed[:limit])) + more


class StatusWatcher(threading.Thread):
    """Polls a pipeline's status and keeps each change with its time (evidence for reports).

    Given ``broker``, it also acts as the operator the runbook asks for: when the pipeline
    fails on a hanging transaction (Kafka's doing, see test_chaos_kafka), it aborts those."""

    def __init__(self, service: Service, pipeline: str = "p", interval_s: float = 0.2,
                 broker: Any = None) -> None:
        super().__init__(daemon=True, name="status-watcher")
        self.service, self.pipeline, self.interval_s = service, pipeline, interval_s
        self.broker = broker
        self.changes: list[tuple[float, str | None, str | None]] = []
        self.hanging_aborted = 0
        self._stop_event = threading.Event()
        self._started_at = time.monotonic()

    def run(self) -> None:
        last: tuple[str | None, str | None] = (None, None)
        aborted_at = -HANGING_CHECK_INTERVAL_S
        while not self._stop_event.wait(self.interval_s):
            response = self.service.get(f"/pipelines/{self.pipeline}")
            body = response.json() if response.status_code == 200 else {}
            now = (body.get("status"), body.get("ops", {}).get("last_error"))
            if now != last:
                self.changes.append((round(time.monotonic() - self._started_at, 1), *now))
                last = now
            if (self.broker is not None and now[0] == "failed"
                    and "hanging transaction" in (now[1] or "")
                    and time.monotonic() - aborted_at > HANGING_CHECK_INTERVAL_S):
                aborted_at = time.monotonic()
                self.hanging_aborted += abort_hanging_transactions(self.broker)

    def seen(self) -> set[str | None]:
        return {status for _, status, _ in self.changes}

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)
        print(f"status changes of {self.pipeline}: {self.changes}; "
              f"hanging transactions aborted: {self.hanging_aborted}")


def abort_hanging_transactions(broker: Any) -> int:
    """What docs/guarantees.md tells an operator to do about a hanging transaction: list them
    with ``kafka-transactions.sh find-hanging`` and abort each; returns how many it aborted.
    ``--max-transaction-timeout 0`` makes every open transaction a candidate at once (the tool
    otherwise waits 15 minutes); the tool still keeps only those the coordinator no longer has
    open, so a live transaction is never aborted."""
    listing = broker.transactions("find-hanging", "--broker-id", "1",
                                  "--max-transaction-timeout", "0")
    lines = listing.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("Topic"))
    rows = [line.split() for line in lines[header + 1:] if line.strip()]
    for topic, partition, _producer, _epoch, _coordinator_epoch, start, *_ in rows:
        broker.transactions("abort", "--topic", topic, "--partition", partition,
                            "--start-offset", start)
    return len(rows)
