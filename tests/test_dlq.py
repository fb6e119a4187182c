"""Dead-letter queue with real rejected events: the rest of the batch and later rows reach
Kafka, the checkpoint moves past, entries can be peeked, counted, acked and purged, and the
overflow policies drop_oldest and block behave as documented (nothing vanishes silently)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from state.env import open_state
from state.records import BinlogPosition
from state.spec import DlqSpec, JournalSpec
from state.stores import DlqStore
from state.writer import GroupCommitWriter
from tests.support.kafka_read import read_topic
from tests.support.pipelines import pipeline_yaml, unique, write_config
from tests.support.service import Service
from workers.dlq import DeadLetterQueue, DlqFullError
from workers.events import ChangeEvent
from workers.metrics import PipelineMetrics
from workers.sinks.errors import SinkEventError

pytestmark = pytest.mark.services


def journaled(name: str, mariadb: Any, kafka: Any, db: str, table: str,
              **dlq: Any) -> dict[str, Any]:
    spec = pipeline_yaml(name, mariadb.cdc_dsn(), kafka.bootstrap, [f"{db}.{table}"],
                         f"{db}.{table}.${{after.region}}")
    spec["spec"]["journal"] = {"enabled": True, "max_event_bytes": 3000, "dlq": dlq}
    spec["spec"]["sinks"][0]["config"]["client_conf"] = {"message.max.bytes": 2000}
    return spec


def exactly_once(spec: dict[str, Any], checkpoint_topic: str) -> dict[str, Any]:
    spec["spec"]["sinks"][0]["config"].update(exactly_once=True,
                                              checkpoint_topic=checkpoint_topic)
    return spec


def insert(mariadb: Any, db: str, table: str, rows: list[tuple[int, str | None, str]]) -> None:
    with mariadb.connect(db) as conn, conn.cursor() as cur:
        cur.executemany(f"INSERT INTO {table} VALUES (%s, %s, %s)", rows)
        conn.commit()


def ids(records: list[Any]) -> list[int]:
    return [r.value["after"]["id"] for r in records]


def dlq(service: Service, name: str, **params: Any) -> Any:
    response = service.get(f"/pipelines/{name}/journal/dlq", **params)
    assert response.status_code == 200, response.text
    return response.json()


def count(service: Service, name: str) -> int:
    return int(service.get(f"/pipelines/{name}/journal/dlq/count").json()["count"])


@pytest.fixture(scope="module")
def setup(mariadb: Any, kafka: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    db = unique("dlq")
    with mariadb.connect() as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {db}")
        for table in ("main", "evict", "stall", "eos", "refuse", "off"):
            cur.execute(f"CREATE TABLE {db}.{table} (id INT PRIMARY KEY, region VARCHAR(10), "
                        "body TEXT)")
    for table in ("main", "evict", "stall", "eos"):
        kafka.create_topic(f"{db}.{table}.eu")
    kafka.create_topic(f"{db}.off")
    off = pipeline_yaml("dlq-off", mariadb.cdc_dsn(), kafka.bootstrap, [f"{db}.off"],
                        f"{db}.off")
    config = write_config(
        tmp_path_factory.mktemp("dlq-config"),
        journaled("dlq-main", mariadb, kafka, db, "main"),
        journaled("dlq-drop", mariadb, kafka, db, "evict", max_entries=2),
        journaled("dlq-block", mariadb, kafka, db, "stall", max_entries=2,
                  overflow_policy="block"),
        journaled("dlq-reject", mariadb, kafka, db, "refuse", max_entries=1,
                  overflow_policy="reject"),
        exactly_once(journaled("dlq-eos", mariadb, kafka, db, "eos"), f"{db}.checkpoints"),
        off)
    service = Service(config, tmp_path_factory.mktemp("dlq-data"))
    try:
        service.start()
        for name in ("dlq-main", "dlq-drop", "dlq-block", "dlq-eos", "dlq-reject",
                     "dlq-off"):
            service.wait_running(name)
        yield service, db
    finally:
        service.close()


def test_rejected_events_are_set_aside_and_the_rest_is_delivered(
        setup: Any, mariadb: Any, kafka: Any) -> None:
    service, db = setup
    insert(mariadb, db, "main", [(1, "eu", "a"), (2, None, "b"), (3, "eu", "x" * 5000),
                                 (4, "eu", "d")])
    insert(mariadb, db, "main", [(5, "eu", "e")])
    records = read_topic(kafka.bootstrap, f"{db}.main.eu", expect=3, timeout_s=30)
    assert ids(records) == [1, 4, 5]
    assert [r.value["after"]["body"] for r in records] == ["a", "d", "e"]
    service.wait_until(lambda: count(service, "dlq-main") == 2, 20, "two dlq entries")

    routing, too_large = dlq(service, "dlq-main")
    assert routing["seq"] < too_large["seq"]
    assert routing["pipeline"] == "dlq-main" and routing["stream"] == "dlq"
    assert routing["meta"]["sink_id"] == "kafka" and routing["meta"]["attempts"] == 1
    assert routing["meta"]["error_kind"] == "routing error"
    assert "region" in routing["meta"]["error_message"]
    assert routing["event"]["after"] == {"id": 2, "region": None, "body": "b"}
    assert routing["payload_truncated"] is False
    assert too_large["meta"]["error_kind"] == "serialization error"
    assert "too large" in too_large["meta"]["error_message"].lower()
    assert too_large["payload_truncated"] is True
    assert str(too_large["event"]["after"]).startswith("<truncated")
    for entry in (routing, too_large):
        assert entry["source_cursor"]["file"] and entry["source_cursor"]["pos"] > 0
        assert entry["event_id"] and entry["timestamp"] > time.time() - 120

    checkpoint = service.pipeline("dlq-main")["ops"]["checkpoints"][0]["position"]
    cursor = too_large["source_cursor"]
    assert (checkpoint["file"], checkpoint["pos"]) > (cursor["file"], cursor["pos"])
    assert service.pipeline("dlq-main")["ops"]["dlq_entries"] == 2
    assert service.status("dlq-main") == "running"

    assert [e["seq"] for e in dlq(service, "dlq-main", error_kind="routing error")] == [
        routing["seq"]]
    assert [e["seq"] for e in dlq(service, "dlq-main", error_kind="serialization error",
                                  limit=1)] == [too_large["seq"]]
    assert dlq(service, "dlq-main", sink_id="other") == []
    assert [e["seq"] for e in dlq(service, "dlq-main", limit=1)] == [routing["seq"]]
    assert service.get("/pipelines/dlq-main/journal/dlq", limit="x").status_code == 400

    ack = service.api.post("/pipelines/dlq-main/journal/dlq/ack",
                           json={"up_to_seq": routing["seq"]})
    assert ack.status_code == 200 and ack.json() == {"acked": 1}
    assert [e["seq"] for e in dlq(service, "dlq-main")] == [too_large["seq"]]
    bad = service.api.post("/pipelines/dlq-main/journal/dlq/ack", json={"up_to_seq": "x"})
    assert bad.status_code == 400 and bad.json()["code"] == "INVALID_BODY"
    purge = service.api.delete("/pipelines/dlq-main/journal/dlq")
    assert purge.status_code == 200 and purge.json() == {"purged": 1}
    assert count(service, "dlq-main") == 0

    insert(mariadb, db, "main", [(6, None, "f")])  # seqs never repeat after a purge
    service.wait_until(lambda: count(service, "dlq-main") == 1, 20, "a new entry")
    assert dlq(service, "dlq-main")[0]["seq"] > too_large["seq"]


def test_drop_oldest_evicts_the_oldest_entries(setup: Any, mariadb: Any, kafka: Any) -> None:
    service, db = setup
    insert(mariadb, db, "evict", [(i, None, "") for i in range(1, 6)] + [(9, "eu", "ok")])
    assert ids(read_topic(kafka.bootstrap, f"{db}.evict.eu", expect=1, timeout_s=30)) == [9]
    service.wait_until(lambda: count(service, "dlq-drop") == 2, 20, "two entries")
    entries = dlq(service, "dlq-drop")
    assert [e["event"]["after"]["id"] for e in entries] == [4, 5]
    assert "evicted" in service.log(tail_chars=None)
    assert service.status("dlq-drop") == "running"


def test_block_stalls_until_purged_then_continues_without_loss(
        setup: Any, mariadb: Any, kafka: Any) -> None:
    service, db = setup
    insert(mariadb, db, "stall", [(1, None, ""), (2, None, ""), (3, None, "")])
    insert(mariadb, db, "stall", [(4, "eu", "after the stall")])
    service.wait_until(lambda: "dlq full" in str(
        service.pipeline("dlq-block")["ops"]["last_error"]), 30, "blocked on a full dlq")
    assert count(service, "dlq-block") == 2
    seen = [e["event"]["after"]["id"] for e in dlq(service, "dlq-block")]
    assert read_topic(kafka.bootstrap, f"{db}.stall.eu", expect=1, timeout_s=3) == []
    assert service.status("dlq-block") == "running"

    assert service.api.delete("/pipelines/dlq-block/journal/dlq").json() == {"purged": 2}
    records = read_topic(kafka.bootstrap, f"{db}.stall.eu", expect=1, timeout_s=30)
    assert ids(records) == [4]
    service.wait_until(lambda: count(service, "dlq-block") == 1, 20, "the third entry")
    seen += [e["event"]["after"]["id"] for e in dlq(service, "dlq-block")]
    assert seen == [1, 2, 3]
    service.wait_until(lambda: service.pipeline("dlq-block")["ops"]["last_error"] is None, 10,
                       "the block cleared")


def test_reject_fails_the_pipeline_loudly_and_keeps_the_checkpoint(
        setup: Any, mariadb: Any) -> None:
    service, db = setup
    before = checkpoint_of(service, "dlq-reject")
    with mariadb.connect() as conn, conn.cursor() as cur:
        cur.execute("SHOW MASTER STATUS")
        file, pos = cur.fetchone()[:2]
    rejected_tx_start = (file, int(pos))  # the inserts below come after this
    insert(mariadb, db, "refuse", [(1, None, ""), (2, None, "")])
    service.wait_until(lambda: service.status("dlq-reject") == "failed", 30, "failed")
    error = service.pipeline("dlq-reject")["ops"]["last_error"]
    assert "dead-letter queue full" in error and "overflow_policy reject" in error
    assert count(service, "dlq-reject") == 1
    # The checkpoint never passes the rejected event. It may move up to where the rejected
    # transaction starts: a shared stream checkpoints idle pipelines where it stands.
    after = checkpoint_of(service, "dlq-reject")
    assert before <= after <= rejected_tx_start, (before, after, rejected_tx_start)


def checkpoint_of(service: Service, name: str) -> tuple[str, int]:
    position = service.pipeline(name)["ops"]["checkpoints"][0]["position"]
    return position["file"], int(position["pos"])


def test_exactly_once_resends_the_batch_without_the_rejected_event(
        setup: Any, mariadb: Any, kafka: Any) -> None:
    service, db = setup
    insert(mariadb, db, "eos", [(1, "eu", "a"), (2, None, "b"), (3, "eu", "x" * 5000),
                                (4, "eu", "d")])
    insert(mariadb, db, "eos", [(5, "eu", "e")])
    records = read_topic(kafka.bootstrap, f"{db}.eos.eu", expect=3, timeout_s=30,
                         isolation="read_committed")
    assert ids(records) == [1, 4, 5]  # once each: the aborted transactions are invisible
    service.wait_until(lambda: count(service, "dlq-eos") == 2, 20, "two dlq entries")
    kinds = [e["meta"]["error_kind"] for e in dlq(service, "dlq-eos")]
    assert kinds == ["routing error", "serialization error"]
    assert service.status("dlq-eos") == "running"


def test_dlq_routes_answer_structured_errors(setup: Any) -> None:
    service, _ = setup
    for method, path in (("GET", "/journal/dlq"), ("GET", "/journal/dlq/count"),
                         ("DELETE", "/journal/dlq")):
        off = service.api.request(method, f"/pipelines/dlq-off{path}")
        assert off.status_code == 409 and off.json()["code"] == "DLQ_DISABLED"
        missing = service.api.request(method, f"/pipelines/nope{path}")
        assert missing.status_code == 404 and missing.json()["code"] == "PIPELINE_NOT_FOUND"
    ack = service.api.post("/pipelines/dlq-off/journal/dlq/ack", json={"up_to_seq": 1})
    assert ack.status_code == 409 and ack.json()["code"] == "DLQ_DISABLED"
    paths = service.get("/openapi.json").json()["paths"]
    assert set(paths["/pipelines/{name}/journal/dlq"]) == {"get", "delete"}
    assert "post" in paths["/pipelines/{name}/journal/dlq/ack"]


def rejected(row_id: int) -> SinkEventError:
    position = BinlogPosition("mysql-bin.000001", 100 + row_id)
    event = ChangeEvent(f"1:mysql-bin.000001:{row_id}:0", "c", "db", "t", None,
                        {"id": row_id, "body": "x" * 100}, ("id",), 0, 1, "mysql-bin.000001",
                        row_id, None, None, position, True, 100)
    return SinkEventError(event, "routing error", "no topic", 0)


def test_queue_evicts_expires_and_never_reuses_a_seq(tmp_path: Path) -> None:
    state = open_state(tmp_path)
    writer = GroupCommitWriter(state)
    store = DlqStore(state)
    metrics = PipelineMetrics("p")
    try:
        spec = JournalSpec(enabled=True, max_event_bytes=120, dlq=DlqSpec(max_entries=3))
        queue = DeadLetterQueue("p", spec, store, writer, metrics)
        for row_id in range(5):
            queue.add("kafka", rejected(row_id))
        writer.flush()
        entries = store.peek("p", 10)
        assert [e.seq for e in entries] == [3, 4, 5] and queue.evicted == 2
        assert all(e.payload_truncated for e in entries)
        assert store.purge("p") == 3
        queue = DeadLetterQueue("p", spec, store, writer, metrics)  # a restarted pipeline
        queue.add("kafka", rejected(9))
        writer.flush()
        assert [e.seq for e in store.peek("p", 10)] == [6]

        blocking = DeadLetterQueue("p", JournalSpec(enabled=True, dlq=DlqSpec(
            max_entries=1, overflow_policy="block")), store, writer, metrics)
        with pytest.raises(DlqFullError):
            blocking.add("kafka", rejected(10))
        assert store.ack("p", 6) == 1 and blocking.has_room(time.monotonic() + 1)

        aged = DeadLetterQueue("p", JournalSpec(enabled=True, dlq=DlqSpec(max_age_secs=1)),
                               store, writer, metrics)
        aged.add("kafka", rejected(11))
        writer.flush()
        time.sleep(2.1)
        aged.add("kafka", rejected(12))
        aged.expire_old(time.monotonic() + 120)
        writer.flush()
        assert [e.event["after"]["id"] for e in store.peek("p", 10)] == [12]
    finally:
        writer.close()
        state.close()
