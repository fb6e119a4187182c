"""Shared binlog streams in the real service: connections per server, idle checkpoints, and a
paused pipeline that catches up while the others flow. Compared row by row."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.kafka_read import read_topic
from tests.support.metrics import summed
from tests.support.pipelines import pipeline_yaml, unique, write_config
from tests.support.service import Service

pytestmark = pytest.mark.services
TABLES = ("a", "b", "c", "d", "e", "f")


@pytest.fixture
def db(mariadb: Any, kafka: Any) -> Iterator[str]:
    name = unique("fleet")
    with mariadb.connect() as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
        for table in TABLES:
            cur.execute(f"CREATE TABLE {name}.{table} (id INT PRIMARY KEY, v VARCHAR(20))")
            kafka.create_topic(f"{name}.{table}")
    yield name
    with mariadb.connect() as conn, conn.cursor() as cur:
        cur.execute(f"DROP DATABASE {name}")


@pytest.fixture
def cdc_user(mariadb: Any) -> Iterator[tuple[str, str]]:
    """A replication user of this test only, so its dump connections can be counted."""
    user, password = f"u{uuid.uuid4().hex[:8]}", "pw"
    with mariadb.connect() as conn, conn.cursor() as cur:
        cur.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'")
        cur.execute(f"GRANT REPLICATION SLAVE, BINLOG MONITOR, SELECT ON *.* TO '{user}'@'%'")
    yield user, password
    with mariadb.connect() as conn, conn.cursor() as cur:
        cur.execute(f"DROP USER '{user}'@'%'")


def dsn_of(mariadb: Any, user: tuple[str, str]) -> str:
    return f"mysql://{user[0]}:{user[1]}@{mariadb.host}:{mariadb.port}/"


def write_rows(mariadb: Any, db: str, table: str, ids: range) -> list[int]:
    with mariadb.connect(db) as conn, conn.cursor() as cur:
        for i in ids:
            cur.execute(f"INSERT INTO {table} VALUES ({i}, 'v{i}')")
    return list(ids)


def delivered_ids(kafka: Any, topic: str, expect: int) -> list[int]:
    return [int(r.value["after"]["id"]) for r in read_topic(kafka.bootstrap, topic, expect, 60)]


def dump_connections(mariadb: Any, user: str) -> int:
    with mariadb.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                    "WHERE COMMAND LIKE 'Binlog Dump%%' AND USER = %s", (user,))
        return int(cur.fetchone()[0])


def start_service(tmp_path: Path, documents: list[dict[str, Any]], workers: int,
                  sharing: str = "on") -> Service:
    service = Service(write_config(tmp_path / "config", *documents), tmp_path / "data",
                      workers=workers, extra_args=["--stream-sharing", sharing])
    service.start()
    for document in documents:
        service.wait_running(document["metadata"]["name"])
    return service


@pytest.mark.parametrize("sharing", ["on", "off"])
def test_binlog_connections_per_server_are_one_per_worker_with_sharing(
        mariadb: Any, kafka: Any, db: str, cdc_user: tuple[str, str], tmp_path: Path,
        sharing: str) -> None:
    documents = [pipeline_yaml(f"p{t}", dsn_of(mariadb, cdc_user), kafka.bootstrap,
                               [f"{db}.{t}"], f"{db}.{t}") for t in TABLES]
    service = start_service(tmp_path, documents, workers=2, sharing=sharing)
    try:
        written = {t: write_rows(mariadb, db, t, range(1, 4)) for t in TABLES}
        for table, ids in written.items():
            assert delivered_ids(kafka, f"{db}.{table}", len(ids)) == ids
        workers_used = len({service.pipeline(f"p{t}")["ops"]["worker"] for t in TABLES})
        expected = workers_used if sharing == "on" else len(TABLES)
        service.wait_until(lambda: dump_connections(mariadb, cdc_user[0]) == expected, 30,
                           f"{expected} binlog connections")
    finally:
        service.close()


def test_an_idle_pipeline_checkpoints_where_the_shared_stream_is(
        mariadb: Any, kafka: Any, db: str, tmp_path: Path) -> None:
    documents = [pipeline_yaml(f"p{t}", mariadb.cdc_dsn(), kafka.bootstrap, [f"{db}.{t}"],
                               f"{db}.{t}") for t in ("a", "b")]
    service = start_service(tmp_path, documents, workers=1)
    try:
        first = position_of(service, "pa")
        write_rows(mariadb, db, "b", range(1, 6))
        assert delivered_ids(kafka, f"{db}.b", 5) == [1, 2, 3, 4, 5]
        service.wait_until(lambda: position_of(service, "pa") == position_of(service, "pb"), 30,
                           "the idle pipeline's checkpoint at the stream's position")
        assert position_of(service, "pa") != first
        service.wait_until(lambda: metric(service, "deltaforge_source_lag_seconds",
                                          pipeline="pa") == 0.0, 30, "idle lag 0")
    finally:
        service.close()


def metric(service: Service, name: str, **labels: str) -> float | None:
    return summed(service.get("/metrics").text, name, **labels)


def position_of(service: Service, name: str) -> str:
    (checkpoint,) = service.get(f"/pipelines/{name}/checkpoints").json()
    return str(checkpoint["position"])


def test_a_paused_pipeline_catches_up_after_resume_while_the_others_flow(
        mariadb: Any, kafka: Any, db: str, tmp_path: Path) -> None:
    flowing = pipeline_yaml("flowing", mariadb.cdc_dsn(), kafka.bootstrap, [f"{db}.a"],
                            f"{db}.a")
    paused = pipeline_yaml("paused", mariadb.cdc_dsn(), kafka.bootstrap, [f"{db}.a"],
                           f"{db}.b")
    service = start_service(tmp_path, [flowing, paused], workers=1)
    try:
        before = write_rows(mariadb, db, "a", range(1, 11))
        assert delivered_ids(kafka, f"{db}.b", 10) == before
        assert service.api.post("/pipelines/paused/pause").status_code == 200
        service.wait_status("paused", "paused")
        during = write_rows(mariadb, db, "a", range(11, 41))
        assert delivered_ids(kafka, f"{db}.a", 40) == before + during
        assert delivered_ids(kafka, f"{db}.b", 10) == before  # nothing while paused

        assert service.api.post("/pipelines/paused/resume").status_code == 200
        service.wait_running("paused")
        after = write_rows(mariadb, db, "a", range(41, 51))
        assert delivered_ids(kafka, f"{db}.b", 50) == before + during + after
        assert delivered_ids(kafka, f"{db}.a", 50) == before + during + after
        service.wait_until(lambda: metric(service, "deltaforge_stream_pipelines",
                                          state="attached") == 2.0, 30,
                           "both attached to the stream again")
    finally:
        service.close()
