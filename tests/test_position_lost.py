"""A checkpoint that is not on the server any more fails the pipeline with what to do."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from deploy.local.mariadb import MariaDBServer
from deploy.local.processes import free_port
from state.records import BinlogPosition
from state.spec import MysqlConfigSpec
from tests.support.kafka_read import read_topic
from tests.support.pipelines import pipeline_yaml, unique, write_config
from tests.support.service import Service
from workers.source.errors import SourcePositionLostError
from workers.source.mysql import current_binlog_end
from workers.source.reachability import mariadb_gtids_reachable, verify_position

pytestmark = pytest.mark.services


def test_pipelines_starting_together_share_one_control_session(mariadb: Any) -> None:
    """20 starts of pipelines on one server check their positions with one session, and a
    position newer than the shared answers is checked again rather than refused."""
    db = unique("reach")
    mariadb.execute(f"CREATE DATABASE {db}", f"CREATE TABLE {db}.t (id INT PRIMARY KEY)")
    config = MysqlConfigSpec(id=db, dsn=mariadb.cdc_dsn(), tables=[f"{db}.t"])
    end = current_binlog_end(config)
    before = connections(mariadb)
    starts = [threading.Thread(target=verify_position, args=(config, end)) for _ in range(20)]
    for start in starts:
        start.start()
    for start in starts:
        start.join(30)
    assert connections(mariadb) - before == 2  # the shared fetch, and this count's own
    mariadb.execute(f"INSERT INTO {db}.t VALUES (1)")
    verify_position(config, current_binlog_end(config))  # newer GTIDs than the shared answers
    with pytest.raises(SourcePositionLostError, match="binlog file mysql-bin.999999 is gone"):
        verify_position(config, BinlogPosition("mysql-bin.999999", 4, 0, end.gtid_set,
                                               end.server_id))


def connections(mariadb: Any) -> int:
    with mariadb.connect() as conn, conn.cursor() as cur:
        cur.execute("SHOW GLOBAL STATUS LIKE 'Connections'")
        return int(cur.fetchone()[1])


def test_mariadb_gtid_reachability() -> None:
    assert mariadb_gtids_reachable("0-1-57", "0-1-57")
    assert mariadb_gtids_reachable("0-1-57,2-5-3", "0-1-90,2-5-3,7-1-1")
    assert not mariadb_gtids_reachable("0-1-57", "0-1-20")
    assert not mariadb_gtids_reachable("3-1-1", "0-1-20")


def make_table(server: Any, db: str) -> None:
    with server.connect() as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {db}")
        cur.execute(f"CREATE TABLE {db}.t (id INT PRIMARY KEY)")


def test_a_replaced_server_behind_the_dsn_fails_the_pipeline_loudly(
        mariadb: Any, kafka: Any, tmp_path: Path) -> None:
    db = unique("moved")
    make_table(mariadb, db)
    kafka.create_topic(f"{db}.t")
    spec = pipeline_yaml("moved", mariadb.cdc_dsn(), kafka.bootstrap, [f"{db}.t"], f"{db}.t")
    config = write_config(tmp_path / "config", spec)
    service = Service(config, tmp_path / "data", workers=1)
    replacement = MariaDBServer(tmp_path / "replacement", free_port())
    try:
        service.start()
        service.wait_running("moved")
        with mariadb.connect(db) as conn, conn.cursor() as cur:
            for i in range(30):
                cur.execute("INSERT INTO t VALUES (%s)", (i,))
        assert len(read_topic(kafka.bootstrap, f"{db}.t", expect=30)) == 30
        assert service.stop() == 0

        replacement.start()  # a fresh server, same server_id, same binlog file names
        make_table(replacement, db)
        spec["spec"]["source"]["config"]["dsn"] = replacement.cdc_dsn()
        write_config(config, spec)
        service.start(wait_ready=False)
        service.wait_until(lambda: service.status("moved") == "failed", 60, "moved failed")
        error = service.pipeline("moved")["ops"]["last_error"]
        assert "server identity changed" in error or "is gone" in error, error
        assert "re-snapshot" in error and "re-creating the pipeline" in error
    finally:
        service.close()
        replacement.stop()
