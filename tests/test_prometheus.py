"""The dashboard and the alert rules against a real Prometheus scraping the real service.

30+ pipelines (two exactly-once, one failing on an unreachable MySQL, one exactly-once whose
topic refuses its messages, one that dead-letters every event) share one MariaDB database and
one Kafka; Prometheus scrapes
every second; then every PromQL expression of ``dashboards/deltaforge-fleet.json`` and
``dashboards/alerts.yml`` is evaluated through ``/api/v1/query``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.pipelines import pipeline_yaml, unique, write_config
from tests.support.service import REPO, Service, free_port

pytestmark = pytest.mark.services
DASHBOARD = REPO / "dashboards" / "deltaforge-fleet.json"
ALERTS = REPO / "dashboards" / "alerts.yml"
PIPELINES = 30
VARIABLES = {"$__rate_interval": "30s", "$__range": "5m", "$instance": ".*", "$tenant": ".*",
             "$pipeline": ".*", "$sink": ".*", "$label_key": "pipeline", "$label_value": ".*"}
# Registered by the code but not produced by this load: rejections need a full DLQ with the
# reject policy (which fails the pipeline), reconnects a dropped binlog connection.
NOT_EXERCISED = {"deltaforge_dlq_rejected_total", "deltaforge_source_reconnects_total"}
PROMETHEUS_OWN = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
NAME = re.compile(r"\b(deltaforge_[a-z0-9_]+|up|scrape_[a-z_]+)\b")


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("prometheus is not installed (apt-get install prometheus)")
        pytest.skip("prometheus is not installed")
    return found


@pytest.fixture
def load(mariadb: Any, kafka: Any, tmp_path: Path) -> Iterator[tuple[Service, str]]:
    db = unique("fleet")
    with mariadb.connect() as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {db}")
        for i in [*range(PIPELINES), 97, 98]:
            cur.execute(f"CREATE TABLE {db}.t{i:02d} (id INT PRIMARY KEY, v VARCHAR(400))")
    kafka.create_topic(f"{db}.events", partitions=3)
    kafka.create_topic(f"{db}.small", config={"max.message.bytes": "300"})
    docs = [fleet_pipeline(i, db, mariadb.cdc_dsn(), kafka.bootstrap) for i in range(PIPELINES)]
    broken = fleet_pipeline(99, db, f"mysql://cdc:x@127.0.0.1:{free_port()}/{db}", kafka.bootstrap)
    refused = fleet_pipeline(98, db, mariadb.cdc_dsn(), kafka.bootstrap)  # sink fails, txn aborts
    refused["spec"]["sinks"][0]["config"].update(topic=f"{db}.small", exactly_once=True,
                                                 checkpoint_topic=f"{db}.ckpt98")
    dead_letters = fleet_pipeline(97, db, mariadb.cdc_dsn(), kafka.bootstrap)  # DLQ, evictions
    dead_letters["spec"]["sinks"][0]["config"]["topic"] = f"{db}.${{after.region}}"
    dead_letters["spec"]["journal"] = {"enabled": True, "dlq": {"max_entries": 3}}
    dead_letters["metadata"]["tenant"] = "initech"  # keeps the per-tenant counts below exact
    service = Service(write_config(tmp_path / "config", *docs, broken, refused, dead_letters),
                      tmp_path / "data", workers=3)
    try:
        service.start()
        for doc in docs:
            service.wait_running(doc["metadata"]["name"])
        yield service, db
    finally:
        service.close()


def fleet_pipeline(i: int, db: str, dsn: str, brokers: str) -> dict[str, Any]:
    doc = pipeline_yaml(f"p{i:02d}", dsn, brokers, [f"{db}.t{i:02d}"], f"{db}.events")
    doc["metadata"].update(tenant="acme" if i % 2 else "globex",
                           labels={"team": f"team-{i % 3}", "app.kubernetes.io/name": "cdc"})
    if i < 2:
        doc["spec"]["sinks"][0]["config"].update(exactly_once=True,
                                                 checkpoint_topic=f"{db}.ckpt{i}")
    return doc


def write_rows(mariadb: Any, db: str, start: int) -> None:
    with mariadb.connect(db) as conn, conn.cursor() as cur:
        for i in range(PIPELINES):
            cur.execute(f"INSERT INTO t{i:02d} VALUES (%s, 'a'), (%s, 'b')", (start, start + 1))
            cur.execute(f"UPDATE t{i:02d} SET v = 'c' WHERE id = %s", (start,))
        cur.execute("INSERT INTO t98 VALUES (%s, %s)", (start, "x" * 400))
        cur.executemany("INSERT INTO t97 VALUES (%s, 'no region column to route by')",
                        [(start + k,) for k in range(4)])


@pytest.fixture
def prometheus(tmp_path: Path, load: tuple[Service, str]) -> Iterator[httpx.Client]:
    binary = prometheus_binary()
    service, _ = load
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [{"job_name": "deltaforge",
                            "static_configs": [{"targets": [f"127.0.0.1:{service.port}"]}]}],
    }))
    log = (tmp_path / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    try:
        yield client
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(20)
        client.close()


def query(client: httpx.Client, expr: str) -> list[Any]:
    response = client.get("/api/v1/query", params={"query": expr})
    body = response.json()
    assert body["status"] == "success", f"{expr}\n{body}"
    return body["data"]["result"]  # type: ignore[no-any-return]


def wait_scrapes(client: httpx.Client, count: int, timeout_s: float = 40.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            result = query(client, 'count_over_time(up{job="deltaforge"}[5m])')
            if result and float(result[0]["value"][1]) >= count:
                return
        except (httpx.TransportError, json.JSONDecodeError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"Prometheus did not scrape {count} times in {timeout_s}s")


def substitute(expr: str) -> str:
    for name in sorted(VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, VARIABLES[name])
    return expr


def dashboard_queries() -> list[tuple[str, str]]:
    from dashboards.build import expressions

    board = json.loads(DASHBOARD.read_text())
    found = expressions(board)
    for var in board["templating"]["list"]:
        definition = var.get("definition", "")
        inner = re.fullmatch(r"label_(?:values|names)\((.*?)(?:, *\$?\w+)?\)", definition)
        if inner:
            found.append((f"variable {var['name']}", inner.group(1)))
    return found


def alert_queries() -> list[tuple[str, str]]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [(rule["alert"], rule["expr"]) for group in rules["groups"] for rule in group["rules"]]


def test_promtool_accepts_the_alert_rules() -> None:
    prometheus_binary()
    result = subprocess.run(["promtool", "check", "rules", str(ALERTS)], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_dashboard_and_alert_query_runs_on_real_data(
        mariadb: Any, load: tuple[Service, str], prometheus: httpx.Client) -> None:
    service, db = load
    write_rows(mariadb, db, 1)
    os.kill(service.worker_pid("p02"), signal.SIGKILL)  # a worker restart to count
    write_rows(mariadb, db, 10)
    service.wait_until(lambda: service.status("p99") == "failed", 30, "p99 failed")
    service.wait_until(lambda: "deltaforge_sink_txn_aborts_total{" in service.get("/metrics").text,
                       30, "an aborted transaction")
    for path in ("/pipelines", "/pipelines/p00", "/pipelines/nope", "/health"):
        service.get(path)
    service.wait_until(lambda: all(service.status(f"p{i:02d}") == "running"
                                   for i in range(PIPELINES)), 60, "all running again")
    wait_scrapes(prometheus, 3)
    write_rows(mariadb, db, 20)
    time.sleep(2.5)  # two more scrapes with the last rows delivered
    emitted = set(prometheus.get("/api/v1/label/__name__/values").json()["data"])
    from tests.test_observability import registered_names

    assert NOT_EXERCISED <= registered_names()
    empty = []
    for title, expr in dashboard_queries() + alert_queries():
        names = set(NAME.findall(expr))
        unknown = names - emitted - NOT_EXERCISED
        assert not unknown, f"{title}: {sorted(unknown)} are not emitted\n{expr}"
        result = query(prometheus, substitute(expr))
        if not result and not names & NOT_EXERCISED and (title, expr) not in alert_queries():
            empty.append(title)
    assert not empty, f"dashboard queries without data: {empty}"
    # An alert returns series only while it fires; what it watches must have data now.
    silent = [f"{alert}: {name}" for alert, expr in alert_queries()
              for name in sorted(set(NAME.findall(expr)) - NOT_EXERCISED - PROMETHEUS_OWN)
              if not query(prometheus, name)]
    assert not silent, f"alert rules watching series without data: {silent}"
    assert query(prometheus, 'deltaforge_pipeline_status == -1'), "the failed-pipeline alert"
    running = query(prometheus, substitute(
        'count(deltaforge_pipeline_status == 1 and on (pipeline) '
        'deltaforge_pipeline_info{tenant="acme"})'))
    assert float(running[0]["value"][1]) == PIPELINES // 2
    assert query(prometheus, 'deltaforge_pipeline_labels{label_team="team-1", '
                 'label_app_kubernetes_io_name="cdc"}')
