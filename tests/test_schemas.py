"""Table schemas a pipeline has met: recorded when a table version is first used, with the
version incremented when ALTER TABLE changes the columns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.kafka_read import read_topic
from tests.support.pipelines import pipeline_yaml, unique, write_config
from tests.support.service import Service


@pytest.mark.services
def test_schemas_show_each_table_version(mariadb: Any, kafka: Any, tmp_path: Path) -> None:
    db = unique("schemas")
    with mariadb.connect() as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {db}")
        cur.execute(f"CREATE TABLE {db}.t (id INT UNSIGNED, name VARCHAR(20), "
                    "PRIMARY KEY (id))")
    kafka.create_topic(f"{db}.t")
    spec = pipeline_yaml("tracked", mariadb.cdc_dsn(), kafka.bootstrap, [f"{db}.t"], f"{db}.t")
    service = Service(write_config(tmp_path / "config", spec), tmp_path / "data")
    try:
        service.start()
        service.wait_running("tracked")
        assert service.get("/pipelines/tracked/schemas").json() == []
        with mariadb.connect(db) as conn, conn.cursor() as cur:
            cur.execute("INSERT INTO t VALUES (1, 'a')")
            conn.commit()
        read_topic(kafka.bootstrap, f"{db}.t", expect=1, timeout_s=30)
        service.wait_until(lambda: len(service.get("/pipelines/tracked/schemas").json()) == 1,
                           20, "the table schema")
        [first] = service.get("/pipelines/tracked/schemas").json()
        assert first["database"] == db and first["table"] == "t"
        assert first["column_count"] == 2 and first["primary_key"] == ["id"]
        assert first["registry_version"] == 1 and first["fingerprint"]

        with mariadb.connect(db) as conn, conn.cursor() as cur:
            cur.execute("ALTER TABLE t ADD COLUMN price DECIMAL(10,2)")
            cur.execute("INSERT INTO t VALUES (2, 'b', 9.99)")
            conn.commit()
        read_topic(kafka.bootstrap, f"{db}.t", expect=2, timeout_s=30)
        path = f"/pipelines/tracked/schemas/{db}/t"
        service.wait_until(lambda: service.get(path).json().get("registry_version") == 2, 20,
                           "version 2")
        detail = service.get(path).json()
        assert [c["name"] for c in detail["columns"]] == ["id", "name", "price"]
        assert detail["columns"][0]["is_primary_key"] is True
        assert detail["columns"][0]["unsigned"] is True
        assert detail["columns"][2]["type"] == "NEWDECIMAL"
        assert detail["columns"][2]["ordinal_position"] == 3
        assert detail["fingerprint"] != first["fingerprint"] and detail["loaded_at"] > 0
        assert detail["primary_key"] == ["id"]

        unknown = service.get(f"/pipelines/tracked/schemas/{db}/nope")
        assert unknown.status_code == 404 and unknown.json()["code"] == "SCHEMA_NOT_FOUND"
        missing = service.get("/pipelines/nope/schemas")
        assert missing.status_code == 404 and missing.json()["code"] == "PIPELINE_NOT_FOUND"
    finally:
        service.close()
