"""Pipeline YAML for tests, and the expected content of what MariaDB committed."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import yaml


def pipeline_yaml(name: str, dsn: str, brokers: str, tables: list[str], topic: str,
                  envelope: str = "native", **batch: Any) -> dict[str, Any]:
    return {
        "apiVersion": "deltaforge/v1",
        "kind": "Pipeline",
        "metadata": {"name": name, "tenant": "test", "labels": {"suite": "e2e"}},
        "spec": {
            "source": {"type": "mysql", "config": {
                "id": f"src-{name}", "dsn": dsn, "tables": tables, "heartbeat_s": 1.0,
                "read_timeout_s": 5.0}},
            "processors": [],
            "sinks": [{"type": "kafka", "config": {
                "id": "kafka", "brokers": brokers, "topic": topic, "envelope": envelope,
                "send_timeout_secs": 20}}],
            "batch": {"max_ms": 50, **batch},
        },
    }


def write_config(directory: Path, *documents: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for document in documents:
        path = directory / f"{document['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(document, sort_keys=False))
    return directory


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"
