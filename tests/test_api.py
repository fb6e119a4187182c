"""Every endpoint and every error code through real HTTP against the real service."""

from __future__ import annotations

import copy
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.support.forks import forked, holding_the_writer_lock
from tests.support.pipelines import pipeline_yaml, unique, write_config
from tests.support.service import Service, free_port

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def db(mariadb: Any) -> str:
    name = unique("api")
    with mariadb.connect() as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
        cur.execute(f"CREATE TABLE {name}.t (id INT PRIMARY KEY, v VARCHAR(20))")
    return name


@pytest.fixture(scope="module")
def service(mariadb: Any, kafka: Any, db: str,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("api")
    kafka.create_topic(f"{db}.t")
    labelled = []
    for name, labels in (("red-a", {"color": "red", "tier": "a"}),
                         ("red-b", {"color": "red", "tier": "b"}),
                         ("blue-a", {"color": "blue", "tier": "a"})):
        doc = pipeline_yaml(name, mariadb.cdc_dsn(), kafka.bootstrap, [f"{db}.t"], f"{db}.t")
        doc["metadata"]["labels"] = labels
        labelled.append(doc)
    svc = Service(write_config(root / "config", *labelled), root / "data")
    try:
        svc.start()
        for doc in labelled:
            svc.wait_running(doc["metadata"]["name"])
        yield svc
    finally:
        svc.close()


def spec_for(name: str, mariadb: Any, kafka: Any, db: str) -> dict[str, Any]:
    return pipeline_yaml(name, mariadb.cdc_dsn(), kafka.bootstrap, [f"{db}.t"], f"{db}.t")


def names(response: Any) -> list[str]:
    assert response.status_code == 200, response.text
    return sorted(info["name"] for info in response.json())


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["code"] == code and isinstance(body["message"], str)
    return body  # type: ignore[no-any-return]


def test_health_ready_and_label_filters(service: Service) -> None:
    assert service.get("/health").json() == {"status": "healthy", "pipelines": 3}
    ready = service.get("/ready").json()
    assert ready["status"] == "ready" and len(ready["pipelines"]) == 3
    api = service.api
    assert names(api.get("/pipelines")) == ["blue-a", "red-a", "red-b"]
    assert names(api.get("/pipelines", params={"label": "color:red"})) == ["red-a", "red-b"]
    both = [("label", "color:red"), ("label", "tier:a")]
    assert names(api.get("/pipelines", params=both)) == ["red-a"]
    assert names(api.get("/pipelines", params={"label": "tier"})) == ["blue-a", "red-a",
                                                                        "red-b"]
    assert names(api.get("/pipelines", params=[("label", "tier"), ("label", "nope")])) == []
    assert_error(api.get("/pipelines", params={"label": ":x"}), 400, "INVALID_QUERY")


def test_get_pipeline_ops_checkpoints_and_redaction(service: Service) -> None:
    info = service.pipeline("red-a")
    assert set(info) == {"name", "status", "spec", "ops"}
    ops = info["ops"]
    for key in ("uptime_seconds", "lag_seconds", "dlq_entries", "sink_errors", "checkpoints",
                "worker", "restarts", "last_error", "generation"):
        assert key in ops
    assert "cdcpw" not in service.api.get("/pipelines").text
    assert "***" in info["spec"]["spec"]["source"]["config"]["dsn"]
    checkpoints = service.api.get("/pipelines/red-a/checkpoints").json()
    assert [c["sink_id"] for c in checkpoints] == ["kafka"]
    assert set(checkpoints[0]) == {"sink_id", "position", "age_seconds"}


def test_create_patch_delete_and_their_errors(service: Service, mariadb: Any, kafka: Any,
                                              db: str) -> None:
    api, name = service.api, unique("created").replace("_", "-")
    doc = spec_for(name, mariadb, kafka, db)
    created = api.post("/pipelines", json=doc)
    assert created.status_code == 200 and created.json()["name"] == name
    assert_error(api.post("/pipelines", json=doc), 409, "PIPELINE_ALREADY_EXISTS")
    service.wait_running(name)

    bad = copy.deepcopy(doc)
    bad["spec"]["batch"]["max_event"] = 3
    body = assert_error(api.post("/pipelines", json=bad), 400, "INVALID_SPEC")
    assert body["errors"] == [{"path": "$.spec.batch",
                               "message": "Object contains unknown field `max_event`"}]
    body = assert_error(api.patch(f"/pipelines/{name}", json={"spec": {"batch": {
        "max_events": 0}}}), 400, "INVALID_SPEC")
    assert body["errors"][0]["path"] == "$.spec.batch.max_events"
    assert_error(api.patch(f"/pipelines/{name}", json={"metadata": {"name": "other"}}), 400,
                 "PIPELINE_NAME_MISMATCH")
    assert_error(api.patch("/pipelines/missing", json={}), 404, "PIPELINE_NOT_FOUND")

    # echoing the redacted spec back keeps the real password
    echoed = api.patch(f"/pipelines/{name}", json=service.pipeline(name)["spec"])
    assert echoed.status_code == 200
    service.wait_running(name)
    assert service.pipeline(name)["ops"]["last_error"] is None

    assert api.delete(f"/pipelines/{name}").status_code == 204
    assert_error(api.get(f"/pipelines/{name}"), 404, "PIPELINE_NOT_FOUND")
    assert_error(api.delete(f"/pipelines/{name}"), 404, "PIPELINE_NOT_FOUND")
    assert_error(api.get(f"/pipelines/{name}/checkpoints"), 404, "PIPELINE_NOT_FOUND")


def test_body_route_and_method_errors(service: Service) -> None:
    api = service.api
    json_type = {"content-type": "application/json"}
    assert_error(api.post("/pipelines", content=b"{nope", headers=json_type), 400,
                 "INVALID_JSON")
    assert_error(api.post("/pipelines", content=b"{}", headers={"content-type": "text/plain"}),
                 415, "UNSUPPORTED_MEDIA_TYPE")
    assert_error(api.patch("/pipelines/red-a", content=b"[1"), 415, "UNSUPPORTED_MEDIA_TYPE")
    body = assert_error(api.post("/pipelines", json=[1, 2]), 400, "INVALID_SPEC")
    assert body["errors"][0]["path"] == "$"
    assert_error(api.get("/no/such/route"), 404, "NOT_FOUND")
    assert_error(api.put("/pipelines"), 405, "METHOD_NOT_ALLOWED")
    assert_error(api.delete("/health"), 405, "METHOD_NOT_ALLOWED")
    assert_error(api.post("/pipelines/red-a/explode"), 404, "NOT_FOUND")
    assert_error(api.post("/pipelines/missing/pause"), 404, "PIPELINE_NOT_FOUND")
    assert_error(api.post("/pipelines/pause"), 400, "INVALID_QUERY")
    assert_error(api.put("/log-level", json={"level": "loud"}), 400, "INVALID_REQUEST")
    assert_error(api.post("/validate", params={"connect": "maybe"}, json={}), 400,
                 "INVALID_QUERY")


def test_single_and_bulk_pause_resume_stop(service: Service) -> None:
    api = service.api
    paused = api.post("/pipelines/blue-a/pause")
    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    assert api.post("/pipelines/blue-a/stop").json()["status"] == "stopped"
    assert api.post("/pipelines/blue-a/resume").json()["status"] in ("pending", "running")
    service.wait_running("blue-a")

    result = api.post("/pipelines/pause", params={"label": "color:red"}).json()
    assert result["action"] == "pause" and result["matched"] == 2
    assert {(r["name"], r["ok"], r["status"]) for r in result["results"]} == {
        ("red-a", True, "paused"), ("red-b", True, "paused")}
    assert service.status("blue-a") == "running"
    result = api.post("/pipelines/stop", params=[("label", "color:red"), ("label", "tier:b")])
    assert [(r["name"], r["status"]) for r in result.json()["results"]] == [("red-b", "stopped")]
    result = api.post("/pipelines/resume", params={"label": "color"}).json()
    assert result["matched"] == 3 and all(r["ok"] for r in result["results"])
    for name in ("red-a", "red-b", "blue-a"):
        service.wait_running(name)


def test_supervisor_unavailable_is_503_and_the_change_applies_later(service: Service) -> None:
    assert service.process is not None
    supervisor = service.process.pid
    os.kill(supervisor, signal.SIGSTOP)
    try:
        started = time.monotonic()
        body = assert_error(service.api.post("/pipelines/red-b/pause"), 503,
                            "SUPERVISOR_UNAVAILABLE")
        assert time.monotonic() - started < 9.0 and "stored" in body["message"]
    finally:
        os.kill(supervisor, signal.SIGCONT)
    service.wait_status("red-b", "paused")
    assert service.api.post("/pipelines/red-b/resume").status_code == 200
    service.wait_running("red-b")


def test_a_change_waiting_for_lmdbs_writer_lock_leaves_the_api_answering(
        service: Service, children: list[int]) -> None:
    """A stuck worker can hold LMDB's one writer lock until the supervisor kills it. A pause
    then waits for the lock, but reads go on answering, and the pause completes once the lock
    is free (here: its stopped holder is killed)."""
    holder = forked(lambda: None, holding_the_writer_lock(service.data_dir))
    children.append(holder)
    os.kill(holder, signal.SIGSTOP)
    with httpx.Client(base_url=service.api.base_url, timeout=60) as writer, \
            ThreadPoolExecutor(1) as pool:
        pausing = pool.submit(writer.post, "/pipelines/red-a/pause")
        asked = time.monotonic()
        while time.monotonic() - asked < 2.0:  # the pause is waiting by then
            assert service.api.get("/health", timeout=5).status_code == 200
            assert service.api.get("/pipelines/red-a", timeout=5).status_code == 200
        assert not pausing.done(), pausing.result().text  # it waits for the lock
        os.kill(holder, signal.SIGKILL)
        paused = pausing.result(timeout=30)
    assert paused.status_code == 200 and paused.json()["status"] == "paused", paused.text
    assert service.api.post("/pipelines/red-a/resume").status_code == 200
    service.wait_running("red-a")


def test_log_level_round_trip_reaches_workers(service: Service) -> None:
    api = service.api
    assert api.get("/log-level").json() == {"level": "info"}
    assert api.put("/log-level", json={"level": "debug"}).json() == {"level": "debug"}
    try:
        assert api.get("/log-level").json() == {"level": "debug"}
        api.post("/pipelines/red-a/pause")
        service.wait_until(lambda: " DEBUG worker-" in service.log(None), 20, "worker debug")
    finally:
        assert api.put("/log-level", json={"level": "INFO"}).json() == {"level": "info"}
        api.post("/pipelines/red-a/resume")
    service.wait_running("red-a")


def test_validate_dry_run_and_connect_checks(service: Service, mariadb: Any, kafka: Any,
                                             db: str) -> None:
    api = service.api
    doc = spec_for("dry", mariadb, kafka, db)
    assert api.post("/validate", json=doc).json() == {
        "valid": True, "pipeline": "dry", "source_type": "mysql", "sink_count": 1}
    assert_error(api.get("/pipelines/dry"), 404, "PIPELINE_NOT_FOUND")  # nothing was created
    bad = copy.deepcopy(doc)
    bad["spec"]["sinks"][0]["config"]["required"] = "maybe"
    invalid = api.post("/validate", json=bad)
    assert invalid.status_code == 400
    assert invalid.json() == {"valid": False, "errors": [{
        "path": "$.spec.sinks[0].config.required", "message": "Expected `bool`, got `str`"}]}

    good = api.post("/validate", params={"connect": "true"}, json=doc).json()
    assert good["valid"] is True
    assert [(c["name"], c["ok"]) for c in good["checks"]] == [
        ("mysql.connect", True), ("mysql.grants", True), ("mysql.binlog", True),
        ("kafka.kafka", True)]

    wrong = copy.deepcopy(doc)
    wrong["spec"]["source"]["config"]["dsn"] = mariadb.cdc_dsn().replace("cdcpw", "nope")
    denied = api.post("/validate", params={"connect": "true"}, json=wrong)
    assert denied.status_code == 400
    checks = {c["name"]: c for c in denied.json()["checks"]}
    assert not checks["mysql.connect"]["ok"] and "Access denied" in checks["mysql.connect"][
        "message"]
    assert checks["kafka.kafka"]["ok"]
    assert "nope" not in denied.text

    unreachable = copy.deepcopy(doc)
    unreachable["spec"]["source"]["config"]["dsn"] = f"mysql://cdc:pw@127.0.0.1:{free_port()}/"
    refused = api.post("/validate", params={"connect": "true"}, json=unreachable).json()
    assert refused["valid"] is False
    assert [c["ok"] for c in refused["checks"]] == [False, False, False, True]
    assert refused["errors"][0]["path"] == "check:mysql.connect"


def test_health_is_503_while_a_pipeline_fails(service: Service, mariadb: Any, kafka: Any,
                                              db: str) -> None:
    doc = spec_for("doomed", mariadb, kafka, db)
    doc["spec"]["source"]["config"]["dsn"] = f"mysql://cdc:pw@127.0.0.1:{free_port()}/"
    assert service.api.post("/pipelines", json=doc).status_code == 200
    service.wait_until(lambda: service.get("/health").status_code == 503, 30, "unhealthy")
    assert service.get("/health").json() == {"status": "unhealthy",
                                             "failed_pipelines": ["doomed"]}
    assert service.api.delete("/pipelines/doomed").status_code == 204
    assert service.get("/health").json() == {"status": "healthy", "pipelines": 3}


def test_openapi_lists_every_route_and_method(service: Service) -> None:
    doc = service.api.get("/openapi.json").json()
    operations = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    expected = {("/health", "get"), ("/ready", "get"), ("/metrics", "get"),
                ("/openapi.json", "get"), ("/log-level", "get"), ("/log-level", "put"),
                ("/validate", "post"), ("/pipelines", "get"), ("/pipelines", "post"),
                ("/pipelines/pause", "post"), ("/pipelines/resume", "post"),
                ("/pipelines/stop", "post"), ("/pipelines/{name}", "get"),
                ("/pipelines/{name}", "patch"), ("/pipelines/{name}", "delete"),
                ("/pipelines/{name}/checkpoints", "get"),
                ("/pipelines/{name}/journal/dlq", "get"),
                ("/pipelines/{name}/journal/dlq", "delete"),
                ("/pipelines/{name}/journal/dlq/count", "get"),
                ("/pipelines/{name}/journal/dlq/ack", "post"),
                ("/pipelines/{name}/schemas", "get"),
                ("/pipelines/{name}/schemas/{db}/{table}", "get"),
                ("/pipelines/{name}/{action}", "post")}
    assert operations == expected
    assert "PipelineSpec" in doc["components"]["schemas"]


def test_metrics_endpoint(service: Service) -> None:
    response = service.get("/metrics")
    assert response.status_code == 200 and "deltaforge_" in response.text
