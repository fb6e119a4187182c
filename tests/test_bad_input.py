"""Bad input gives clear errors naming the pipeline and the cause; other pipelines keep running."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.kafka_read import read_topic
from tests.support.pipelines import pipeline_yaml, unique, write_config
from tests.support.service import REPO, Service, free_port


def write_bad_files(directory: Path, good: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "broken.yaml").write_text("metadata:\n  name: broken\n spec: [\n")
    typo = yaml.safe_load(yaml.safe_dump(good))
    typo["metadata"]["name"] = "typo"
    typo["spec"]["batch"]["max_event"] = 10
    (directory / "typo.yaml").write_text(yaml.safe_dump(typo))
    wrong = yaml.safe_load(yaml.safe_dump(good))
    wrong["metadata"]["name"] = "wrong-type"
    wrong["spec"]["sinks"][0]["config"]["required"] = "maybe"
    (directory / "wrong-type.yaml").write_text(yaml.safe_dump(wrong))


def run_validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "supervisor.cli", "validate", str(path)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)


def test_validate_reports_each_error_with_file_pipeline_and_path(tmp_path: Path) -> None:
    good = pipeline_yaml("good", "mysql://u:p@127.0.0.1:1/", "127.0.0.1:1", ["db.t"], "t")
    write_config(tmp_path, good)
    write_bad_files(tmp_path, good)
    result = run_validate(tmp_path)
    assert result.returncode == 2
    lines = result.stdout.splitlines()
    assert any(line.startswith("ok good") for line in lines)
    assert any("broken.yaml" in line and "invalid YAML" in line and "line 3" in line
               for line in lines)
    assert any("pipeline typo:" in line and "unknown field `max_event`" in line
               and "`$.spec.batch`" in line for line in lines)
    assert any("pipeline wrong-type:" in line and "Expected `bool`, got `str`" in line
               and "`$.spec.sinks[0].config.required`" in line for line in lines)


def test_validate_accepts_the_examples() -> None:
    result = run_validate(REPO / "examples" / "pipelines")
    assert result.returncode == 0, result.stdout
    assert result.stdout.count("ok ") == 2


def test_a_data_dir_whose_state_cannot_be_opened_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("not a directory")
    result = subprocess.run([sys.executable, "-m", "supervisor.cli", "--data-dir", str(tmp_path),
                             "--api-addr", f"127.0.0.1:{free_port()}"],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 3, result.stderr  # ExitCode.STATE
    assert f"state error: cannot open state in {tmp_path / 'state'}" in result.stderr
    assert "Traceback" not in result.stderr, result.stderr


@pytest.mark.services
def test_service_runs_good_pipelines_and_fails_bad_ones_loudly(
        mariadb: Any, kafka: Any, tmp_path: Path) -> None:
    db = unique("bad")
    with mariadb.connect() as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {db}")
        cur.execute(f"CREATE TABLE {db}.t (id INT PRIMARY KEY)")
    kafka.create_topic(f"{db}.t")
    dead_port = free_port()
    good = pipeline_yaml("good", mariadb.cdc_dsn(), kafka.bootstrap, [f"{db}.t"], f"{db}.t")
    unreachable = pipeline_yaml("no-mysql", f"mysql://cdc:cdcpw@127.0.0.1:{dead_port}/",
                                kafka.bootstrap, [f"{db}.t"], f"{db}.t")
    password = pipeline_yaml("bad-password", mariadb.cdc_dsn().replace("cdcpw", "nope"),
                             kafka.bootstrap, [f"{db}.t"], f"{db}.t")
    no_kafka = pipeline_yaml("no-kafka", mariadb.cdc_dsn(), "kafka.invalid:9092", [f"{db}.t"],
                             f"{db}.t")
    config = write_config(tmp_path / "config", good, unreachable, password, no_kafka)
    write_bad_files(config, good)
    service = Service(config, tmp_path / "data")
    try:
        service.start(wait_ready=False)
        service.wait_running("good")
        with mariadb.connect(db) as conn, conn.cursor() as cur:
            cur.executemany("INSERT INTO t VALUES (%s)", [(i,) for i in range(10)])
        assert len(read_topic(kafka.bootstrap, f"{db}.t", expect=10)) == 10

        for name in ("no-mysql", "bad-password", "no-kafka"):
            service.wait_until(lambda n=name: service.status(n) == "failed", 60, f"{name} failed")
        errors = {n: service.pipeline(n)["ops"]["last_error"]
                  for n in ("no-mysql", "bad-password", "no-kafka")}
        assert f"127.0.0.1:{dead_port}" in errors["no-mysql"]
        assert "Access denied" in errors["bad-password"] and "nope" not in errors["bad-password"]
        assert "kafka.invalid:9092" in errors["no-kafka"]
        assert service.pipeline("no-kafka")["ops"]["next_retry_at"] is not None

        health = service.get("/health")
        assert health.status_code == 503
        assert sorted(health.json()["failed_pipelines"]) == ["bad-password", "no-kafka",
                                                             "no-mysql"]
        assert service.status("good") == "running"
        assert service.get("/pipelines/typo").status_code == 404
        log = service.log(tail_chars=None)
        assert "typo.yaml: pipeline typo: Object contains unknown field `max_event`" in log
        assert "broken.yaml: invalid YAML" in log
        assert "nope" not in log
    finally:
        service.close()


@pytest.mark.services
def test_an_event_that_cannot_be_routed_fails_the_pipeline_instead_of_vanishing(
        mariadb: Any, kafka: Any, tmp_path: Path) -> None:
    db = unique("route")
    with mariadb.connect() as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {db}")
        cur.execute(f"CREATE TABLE {db}.t (id INT PRIMARY KEY, region VARCHAR(10))")
    spec = pipeline_yaml("routed", mariadb.cdc_dsn(), kafka.bootstrap, [f"{db}.t"],
                         f"{db}.${{after.region}}")
    service = Service(write_config(tmp_path / "config", spec), tmp_path / "data")
    try:
        service.start()
        service.wait_running("routed")
        with mariadb.connect(db) as conn, conn.cursor() as cur:
            cur.execute("INSERT INTO t VALUES (1, 'eu'), (2, NULL)")
        service.wait_until(lambda: service.status("routed") == "failed", 60, "routed failed")
        error = service.pipeline("routed")["ops"]["last_error"]
        assert "rejected event" in error and "routing error" in error and "region" in error
        assert service.get("/health").status_code == 503
        checkpoint = service.pipeline("routed")["ops"]["checkpoints"][0]["position"]
        service.wait_until(lambda: service.pipeline("routed")["ops"]["restarts"] >= 2, 60,
                           "a retry that fails the same way")
        assert service.pipeline("routed")["ops"]["checkpoints"][0]["position"] == checkpoint
    finally:
        service.close()
