"""Commit policies: an optional sink that fails falls behind on its own checkpoint and catches up
while the pipeline keeps running; the required sink never waits for it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from deploy.local.kafka import KafkaBroker
from tests.support.kafka_read import read_until
from tests.support.pipelines import pipeline_yaml, unique, write_config
from tests.support.proxy import TcpProxy
from tests.support.service import Service
from tests.test_chaos_kafka import proxied  # noqa: F401  (fixture: a broker behind a proxy)

pytestmark = pytest.mark.services


def insert(mariadb: Any, db: str, ids: range) -> None:
    with mariadb.connect(db) as conn, conn.cursor() as cur:
        for i in ids:
            cur.execute("INSERT INTO t VALUES (%s, %s)", (i, f"v{i}"))


def ids_in(records: list[Any]) -> set[int]:
    return {r.value["after"]["id"] for r in records}


def two_sink_pipeline(mariadb: Any, kafka: Any, side: tuple[KafkaBroker, TcpProxy]
                      ) -> tuple[str, dict[str, Any]]:
    """A table and a pipeline with a required sink on the session broker and an optional
    one (short send timeout) on the broker behind the proxy."""
    side_broker, proxy = side
    db = unique("policy")
    with mariadb.connect() as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {db}")
        cur.execute(f"CREATE TABLE {db}.t (id INT PRIMARY KEY, v VARCHAR(10))")
    kafka.create_topic(f"{db}.main")
    side_broker.create_topic(f"{db}.side")
    spec = pipeline_yaml("policy", mariadb.cdc_dsn(), kafka.bootstrap, [f"{db}.t"],
                         f"{db}.main")
    spec["spec"]["sinks"].append({"type": "kafka", "config": {
        "id": "side", "brokers": f"127.0.0.1:{proxy.port}", "topic": f"{db}.side",
        "required": False, "send_timeout_secs": 3}})
    return db, spec


def test_a_failed_optional_sink_catches_up_while_the_pipeline_runs(
        mariadb: Any, kafka: Any, proxied: tuple[KafkaBroker, TcpProxy],  # noqa: F811
        tmp_path: Path) -> None:
    _, proxy = proxied
    db, spec = two_sink_pipeline(mariadb, kafka, proxied)
    service = Service(write_config(tmp_path / "config", spec), tmp_path / "data", workers=1)
    side_bootstrap = f"127.0.0.1:{proxy.port}"
    try:
        service.start()
        service.wait_running("policy")
        insert(mariadb, db, range(0, 50))
        read_until(side_bootstrap, f"{db}.side", lambda got: ids_in(got) == set(range(50)))

        proxy.cut()
        insert(mariadb, db, range(50, 150))
        main = read_until(kafka.bootstrap, f"{db}.main", lambda got: len(got) >= 150)
        assert ids_in(main) == set(range(150))  # the required sink did not wait
        service.wait_until(lambda: "side" in service.pipeline("policy")["ops"]["sink_errors"],
                           30, "side sink failure recorded")
        assert service.status("policy") == "running"

        proxy.restore()
        insert(mariadb, db, range(150, 200))
        side = read_until(side_bootstrap, f"{db}.side",
                          lambda got: ids_in(got) == set(range(200)), timeout_s=90)
        assert ids_in(side) == set(range(200))
        main = read_until(kafka.bootstrap, f"{db}.main", lambda got: len(got) >= 200)
        assert len(main) == 200 and ids_in(main) == set(range(200))  # no replay on main
        ops = service.pipeline("policy")["ops"]
        assert ops["restarts"] == 0 and service.status("policy") == "running"
        assert "caught up and rejoined pipeline=policy sink=side" in service.log(tail_chars=None)
    finally:
        service.close()


@pytest.mark.parametrize(("policy", "fails"), [({"mode": "all"}, True),
                                               ({"mode": "quorum", "quorum": 1}, False)])
def test_policy_all_fails_on_any_sink_and_quorum_tolerates_one(
        mariadb: Any, kafka: Any, proxied: tuple[KafkaBroker, TcpProxy],  # noqa: F811
        tmp_path: Path, policy: dict[str, Any], fails: bool) -> None:
    _, proxy = proxied
    db, spec = two_sink_pipeline(mariadb, kafka, proxied)
    spec["spec"]["commit_policy"] = policy
    service = Service(write_config(tmp_path / "config", spec), tmp_path / "data", workers=1)
    try:
        service.start()
        service.wait_running("policy")
        proxy.cut()
        insert(mariadb, db, range(0, 20))
        if fails:  # "all" means every sink, optional ones included
            service.wait_until(lambda: service.status("policy") == "failed", 30, "failed")
            error = service.pipeline("policy")["ops"]["last_error"]
            assert "commit policy all not met" in error and "side" in error
        else:
            main = read_until(kafka.bootstrap, f"{db}.main", lambda got: len(got) >= 20)
            assert ids_in(main) == set(range(20))
            service.wait_until(lambda: "side" in service.pipeline("policy")["ops"]["sink_errors"],
                               30, "side failure recorded")
            assert service.status("policy") == "running"
        proxy.restore()
        side = read_until(f"127.0.0.1:{proxy.port}", f"{db}.side",
                          lambda got: ids_in(got) == set(range(20)), timeout_s=90)
        assert ids_in(side) == set(range(20))  # recovered by itself either way
    finally:
        proxy.restore()
        service.close()
