"""Property-based API test: operations taken from /openapi.json, called with generated path
parameters, queries, content types and bodies (random JSON and mutations of a valid spec).
The service must never answer 500 and every error must be a JSON body with code and message."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.pipelines import pipeline_yaml, unique, write_config
from tests.support.service import Service

pytestmark = pytest.mark.services

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12)
NAMES = st.sampled_from(["fz-seed", "pause", "missing"]) | st.text(min_size=1, max_size=20)
CONTENT_TYPES = st.sampled_from(["application/json", "application/json; charset=utf-8",
                                 "text/plain", "application/x-www-form-urlencoded", None])


@pytest.fixture(scope="module")
def service(mariadb: Any, kafka: Any, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[Service, dict[str, Any]]]:
    root = tmp_path_factory.mktemp("fuzz")
    db = unique("fz")
    with mariadb.connect() as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {db}")
        cur.execute(f"CREATE TABLE {db}.t (id INT PRIMARY KEY)")
    seed = pipeline_yaml("fz-seed", mariadb.cdc_dsn(), kafka.bootstrap, [f"{db}.t"], f"{db}.t")
    svc = Service(write_config(root / "config", seed), root / "data")
    try:
        svc.start()
        yield svc, seed
    finally:
        svc.close()


def mutate(document: Any, data: st.DataObject) -> Any:
    """Replace, drop or keep one leaf or subtree of ``document``."""
    if not isinstance(document, dict | list) or data.draw(st.integers(0, 4)) == 0:
        return data.draw(JSON)
    keys = list(document.keys()) if isinstance(document, dict) else list(range(len(document)))
    if not keys:
        return document
    key = data.draw(st.sampled_from(keys))
    copied = copy.copy(document)
    if isinstance(copied, dict) and data.draw(st.booleans()):
        del copied[key]
    else:
        copied[key] = mutate(document[key], data)
    return copied


def body_for(seed: dict[str, Any], data: st.DataObject) -> bytes | None:
    kind = data.draw(st.sampled_from(["none", "spec", "json", "garbage"]))
    if kind == "none":
        return None
    if kind == "garbage":
        return data.draw(st.binary(max_size=40))
    value = mutate(copy.deepcopy(seed), data) if kind == "spec" else data.draw(JSON)
    metadata = value.get("metadata") if isinstance(value, dict) else None
    if kind == "spec" and isinstance(metadata, dict) and data.draw(st.booleans()):
        value["metadata"] = {**metadata, "name": data.draw(NAMES)}
    return json.dumps(value).encode()


def url_for(path: str, data: st.DataObject) -> str:
    for param in ("{name}", "{action}"):
        if param in path:
            value = data.draw(st.sampled_from(["pause", "resume", "stop"]) | NAMES)
            path = path.replace(param, quote(value, safe=""))
    return path


def query_for(data: st.DataObject) -> list[tuple[str, str]]:
    labels = data.draw(st.lists(st.text(max_size=10), max_size=3))
    query = [("label", label) for label in labels]
    if data.draw(st.booleans()):
        query.append(("connect", data.draw(st.sampled_from(["false", "maybe", "", "FALSE"]))))
    return query


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_no_500_and_every_error_is_structured_json(
        service: tuple[Service, dict[str, Any]], data: st.DataObject) -> None:
    svc, seed = service
    operations = [(path, method.upper()) for path, ops in
                  svc.api.get("/openapi.json").json()["paths"].items() for method in ops]
    path, method = data.draw(st.sampled_from(operations))
    headers = {}
    content_type = data.draw(CONTENT_TYPES)
    if content_type is not None:
        headers["content-type"] = content_type
    response = svc.api.request(method, url_for(path, data), params=query_for(data),
                               content=body_for(seed, data), headers=headers)
    assert response.status_code != 500, response.text
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/json"), response.text
        body = response.json()
        assert ("code" in body and "message" in body) or body.get("valid") is False or \
            body.get("status") in ("unhealthy", "not_ready"), body


def test_service_survived_the_fuzzing(service: tuple[Service, dict[str, Any]]) -> None:
    svc, _ = service
    svc.api.put("/log-level", json={"level": "info"})
    assert svc.get("/health").status_code in (200, 503)
    assert svc.process is not None and svc.process.poll() is None
    assert "Traceback" not in svc.log(None)
