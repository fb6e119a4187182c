"""Lifecycle through the API against the real service, MariaDB and Kafka: pause/resume and
stop/resume lose nothing, PATCH restarts with the new spec, DELETE removes state, API changes
persist across restarts, and SIGHUP applies edited config files by the precedence rules."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import lmdb
import pytest
import yaml

from tests.support.kafka_read import Record, read_topic, read_until
from tests.support.pipelines import pipeline_yaml, unique, write_config
from tests.support.service import Service, free_port

pytestmark = pytest.mark.services


def make_table(mariadb: Any, kafka: Any) -> str:
    db = unique("life")
    with mariadb.connect() as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {db}")
        cur.execute(f"CREATE TABLE {db}.t (id INT PRIMARY KEY, v VARCHAR(20))")
    kafka.create_topic(f"{db}.t", partitions=2)
    return db


def insert(mariadb: Any, db: str, ids: range) -> None:
    with mariadb.connect(db) as conn, conn.cursor() as cur:
        for i in ids:
            cur.execute("INSERT INTO t VALUES (%s, %s)", (i, f"v{i}"))


def table_rows(mariadb: Any, db: str) -> set[tuple[int, str]]:
    with mariadb.connect(db) as conn, conn.cursor() as cur:
        cur.execute("SELECT id, v FROM t")
        return {(int(i), str(v)) for i, v in cur.fetchall()}


def kafka_rows(records: list[Record]) -> set[tuple[int, str]]:
    return {(r.value["after"]["id"], r.value["after"]["v"]) for r in records
            if r.value["op"] == "c"}


def wait_rows(kafka: Any, db: str, expected: set[tuple[int, str]]) -> list[Record]:
    return read_until(kafka.bootstrap, f"{db}.t", lambda recs: kafka_rows(recs) >= expected,
                      timeout_s=60)


def state_keys(data_dir: Path, db_name: str) -> list[str]:
    """Keys of one sub-database, read from a read-only LMDB environment."""
    env = lmdb.open(str(data_dir / "state"), readonly=True, max_dbs=16, lock=True)
    try:
        db = env.open_db(db_name.encode(), create=False)
        with env.begin(db=db) as txn:
            return [bytes(key).decode() for key, _ in txn.cursor()]
    finally:
        env.close()


def test_pause_resume_and_stop_resume_lose_nothing(mariadb: Any, kafka: Any,
                                                   tmp_path: Path) -> None:
    db = make_table(mariadb, kafka)
    doc = pipeline_yaml("flow", mariadb.cdc_dsn(), kafka.bootstrap, [f"{db}.t"], f"{db}.t")
    service = Service(write_config(tmp_path / "config", doc), tmp_path / "data")
    try:
        service.start()
        service.wait_running("flow")
        insert(mariadb, db, range(1, 21))
        wait_rows(kafka, db, table_rows(mariadb, db))

        assert service.api.post("/pipelines/flow/pause").json()["status"] == "paused"
        time.sleep(1.0)  # let the drain finish before writing more
        insert(mariadb, db, range(21, 41))
        time.sleep(3.0)
        held = read_topic(kafka.bootstrap, f"{db}.t", expect=10**6, timeout_s=3)
        assert max(id_ for id_, _ in kafka_rows(held)) == 20  # paused: nothing consumed
        service.api.post("/pipelines/flow/resume")
        service.wait_running("flow")
        wait_rows(kafka, db, table_rows(mariadb, db))

        assert service.api.post("/pipelines/flow/stop").json()["status"] == "stopped"
        insert(mariadb, db, range(41, 61))
        service.api.post("/pipelines/flow/resume")
        service.wait_running("flow")
        insert(mariadb, db, range(61, 71))
        records = wait_rows(kafka, db, table_rows(mariadb, db))
        assert kafka_rows(records) == table_rows(mariadb, db)
        assert len(kafka_rows(records)) == 70
    finally:
        service.close()


def test_patch_batch_settings_restarts_with_new_generation(mariadb: Any, kafka: Any,
                                                           tmp_path: Path) -> None:
    db = make_table(mariadb, kafka)
    service = Service(tmp_path / "empty-config", tmp_path / "data")
    (tmp_path / "empty-config").mkdir()
    try:
        service.start()
        doc = pipeline_yaml("patched", mariadb.cdc_dsn(), kafka.bootstrap, [f"{db}.t"],
                            f"{db}.t")
        assert service.api.post("/pipelines", json=doc).status_code == 200
        before = service.wait_running("patched")["ops"]["generation"]
        insert(mariadb, db, range(1, 6))
        wait_rows(kafka, db, table_rows(mariadb, db))

        patch = {"spec": {"batch": {"max_events": 3, "max_ms": 20}}}
        patched = service.api.patch("/pipelines/patched", json=patch)
        assert patched.status_code == 200
        assert patched.json()["spec"]["spec"]["batch"]["max_events"] == 3
        service.wait_until(lambda: service.pipeline("patched")["ops"]["generation"] == before + 1
                           and service.status("patched") == "running", 60, "new generation")
        # defaults are omitted from the stored spec, as they are from the YAML
        assert service.pipeline("patched")["spec"]["spec"]["batch"] == {
            "max_events": 3, "max_ms": 20}
        insert(mariadb, db, range(6, 16))
        records = wait_rows(kafka, db, table_rows(mariadb, db))
        assert kafka_rows(records) == table_rows(mariadb, db)
        # the restart resumed from the checkpoint: rows 1-5 were not sent again
        assert sum(1 for r in records if r.value["op"] == "c") == 15
    finally:
        service.close()


def test_patch_removing_a_sink_deletes_its_checkpoint_and_delete_removes_state(
        mariadb: Any, kafka: Any, tmp_path: Path) -> None:
    db = make_table(mariadb, kafka)
    doc = pipeline_yaml("gone", mariadb.cdc_dsn(), kafka.bootstrap, [f"{db}.t"], f"{db}.t")
    second = dict(doc["spec"]["sinks"][0], config={**doc["spec"]["sinks"][0]["config"],
                                                   "id": "second"})
    doc["spec"]["sinks"].append(second)
    keep = pipeline_yaml("kept", mariadb.cdc_dsn(), kafka.bootstrap, [f"{db}.t"], f"{db}.t")
    service = Service(write_config(tmp_path / "config", keep), tmp_path / "data")
    try:
        service.start()
        service.api.post("/pipelines", json=doc)
        service.wait_running("gone")
        service.wait_running("kept")
        sink_ids = {c["sink_id"] for c in service.api.get("/pipelines/gone/checkpoints").json()}
        assert sink_ids == {"kafka", "second"}

        assert service.api.patch("/pipelines/gone",
                                 json={"spec": {"sinks": [{}, None]}}).status_code == 200
        service.wait_until(lambda: [c["sink_id"] for c in service.api.get(
            "/pipelines/gone/checkpoints").json()] == ["kafka"], 30, "checkpoint removed")
        service.wait_running("gone")

        assert service.api.delete("/pipelines/gone").status_code == 204
        assert service.get("/pipelines/gone").status_code == 404
        assert service.get("/pipelines/gone/checkpoints").status_code == 404

        def state_gone() -> bool:
            keys = state_keys(tmp_path / "data", "checkpoints") + state_keys(
                tmp_path / "data", "status")
            return not any(k.split("\0")[0] == "gone" for k in keys)

        service.wait_until(state_gone, 30, "status and checkpoints deleted")
        assert "kept" in state_keys(tmp_path / "data", "status")
        assert service.status("kept") == "running"
    finally:
        service.close()


def test_api_pipelines_persist_across_restart(mariadb: Any, kafka: Any, tmp_path: Path) -> None:
    db = make_table(mariadb, kafka)
    (tmp_path / "config").mkdir()
    service = Service(tmp_path / "config", tmp_path / "data")
    try:
        service.start()
        doc = pipeline_yaml("durable", mariadb.cdc_dsn(), kafka.bootstrap, [f"{db}.t"],
                            f"{db}.t")
        service.api.post("/pipelines", json=doc)
        service.wait_running("durable")
        paused = pipeline_yaml("sleeper", mariadb.cdc_dsn(), kafka.bootstrap, [f"{db}.t"],
                               f"{db}.t")
        service.api.post("/pipelines", json=paused)
        service.api.post("/pipelines/sleeper/pause")
        insert(mariadb, db, range(1, 4))
        wait_rows(kafka, db, table_rows(mariadb, db))
        assert service.stop() == 0

        insert(mariadb, db, range(4, 8))  # written while the service is down
        service.start()
        service.wait_running("durable")
        assert service.status("sleeper") == "paused"
        records = wait_rows(kafka, db, table_rows(mariadb, db))
        assert kafka_rows(records) == table_rows(mariadb, db)
    finally:
        service.close()


def unreachable(name: str, **batch: Any) -> dict[str, Any]:
    port = free_port()
    return pipeline_yaml(name, f"mysql://u:pw@127.0.0.1:{port}/", f"127.0.0.1:{port}",
                         ["db.t"], "t", **batch)


def test_sighup_and_restart_apply_config_files_by_precedence(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config", unreachable("same"), unreachable("edited"),
                          unreachable("removed"), unreachable("api-owned"))
    service = Service(config, tmp_path / "data")
    try:
        service.start(wait_ready=False)
        service.wait_until(lambda: service.get("/pipelines").status_code == 200, 30, "api")
        api = service.api
        assert api.patch("/pipelines/same", json={"metadata": {"labels": {"by": "api"}}}
                         ).status_code == 200
        assert api.patch("/pipelines/api-owned", json={"spec": {"batch": {"max_events": 9}}}
                         ).status_code == 200
        edited = unreachable("edited", max_events=5)
        write_config(config, edited, unreachable("added"))
        (config / "removed.yaml").unlink()
        (config / "api-owned.yaml").unlink()
        service.send_signal(signal.SIGHUP)
        service.wait_until(lambda: service.get("/pipelines/added").status_code == 200, 30,
                           "reload")

        assert service.get("/pipelines/removed").status_code == 404
        assert service.pipeline("same")["spec"]["metadata"]["labels"]["by"] == "api"
        assert service.pipeline("edited")["spec"]["spec"]["batch"]["max_events"] == 5
        assert service.pipeline("api-owned")["spec"]["spec"]["batch"]["max_events"] == 9
        assert "config reloaded" in service.log(None)

        assert service.stop() == 0
        service.start(wait_ready=False)
        service.wait_until(lambda: service.get("/pipelines").status_code == 200, 30, "api")
        names = sorted(p["name"] for p in service.get("/pipelines").json())
        assert names == ["added", "api-owned", "edited", "same"]
        assert service.pipeline("same")["spec"]["metadata"]["labels"]["by"] == "api"

        changed = unreachable("same")
        changed["metadata"]["labels"] = {"by": "file"}
        write_config(config, changed)
        service.send_signal(signal.SIGHUP)
        service.wait_until(lambda: service.pipeline("same")["spec"]["metadata"]["labels"]
                           == {"by": "file"}, 30, "changed file wins")
        assert yaml.safe_load((config / "same.yaml").read_text())["metadata"]["name"] == "same"
    finally:
        service.close()
