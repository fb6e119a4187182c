"""Metrics of a real run: caught-up lag, per-table lag, deleted pipelines, API routes, info."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.metrics import metric_samples
from tests.support.pipelines import pipeline_yaml, unique, write_config
from tests.support.service import Service

pytestmark = pytest.mark.services


def sample(service: Service, name: str, **labels: str) -> float | None:
    samples = metric_samples(service.get("/metrics").text)
    return samples.get((name, tuple(sorted(labels.items()))))


def assigned(service: Service) -> float:
    return sum(sample(service, "deltaforge_pipelines_assigned", worker=f"worker-{i}") or 0
               for i in range(2))


def test_lag_is_zero_once_caught_up_and_deleted_pipelines_disappear(
        mariadb: Any, kafka: Any, tmp_path: Path) -> None:
    db = unique("lag")
    with mariadb.connect() as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {db}")
        cur.execute(f"CREATE TABLE {db}.t (id INT PRIMARY KEY)")
    kafka.create_topic(f"{db}.t")
    keep = pipeline_yaml("keep", mariadb.cdc_dsn(), kafka.bootstrap, [f"{db}.t"], f"{db}.t")
    keep["metadata"]["labels"] = {"team.io/owner": "data", "tier": "gold"}
    gone = pipeline_yaml("gone", mariadb.cdc_dsn(), kafka.bootstrap, [f"{db}.t"], f"{db}.t")
    service = Service(write_config(tmp_path / "config", keep, gone), tmp_path / "data")
    try:
        service.start()
        service.wait_running("keep")
        service.wait_running("gone")
        with mariadb.connect(db) as conn, conn.cursor() as cur:
            cur.execute("INSERT INTO t VALUES (1), (2)")
        table = f"{db}.t"
        service.wait_until(lambda: sample(service, "deltaforge_source_table_lag_seconds",
                                          pipeline="keep", table=table) is not None, 30,
                           "table lag")
        # heartbeat_s is 1: within a few seconds of idling the caught-up pipeline shows 0
        service.wait_until(lambda: sample(service, "deltaforge_source_lag_seconds",
                                          pipeline="keep") == 0.0
                           and sample(service, "deltaforge_source_table_lag_seconds",
                                      pipeline="keep", table=table) == 0.0, 20, "lag 0")
        assert sample(service, "deltaforge_sink_last_checkpoint_ts", pipeline="keep",
                      sink="kafka")
        assert sample(service, "deltaforge_pipeline_labels", pipeline="keep",
                      label_team_io_owner="data", label_tier="gold") == 1.0
        info = [key for key in metric_samples(service.get("/metrics").text)
                if key[0] == "deltaforge_pipeline_info" and ("pipeline", "keep") in key[1]]
        assert len(info) == 1 and ("tenant", "test") in info[0][1]
        assert dict(info[0][1])["worker"].startswith("worker-")

        assert service.api.delete("/pipelines/gone").status_code == 204
        text = service.get("/metrics").text
        assert 'pipeline="gone"' not in text and 'pipeline="keep"' in text
        assert sample(service, "deltaforge_api_requests_total", route="/pipelines/{name}",
                      method="DELETE", status="204") == 1.0
        assert sample(service, "deltaforge_workers_up") == 2.0
        assert sample(service, "deltaforge_worker_heartbeat_age_seconds",
                      worker="worker-0") is not None
        service.wait_until(lambda: assigned(service) == 1, 10, "one pipeline assigned")
    finally:
        service.close()
