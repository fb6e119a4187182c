"""The api's view of the metrics: every process's files, minus deleted pipelines, plus the
per-pipeline info and label series rendered from the stored specs.

Multiprocess mode cannot remove a label set, and a family has one fixed label set per process
file; so ``deltaforge_pipeline_info`` and ``deltaforge_pipeline_labels`` (whose label names
depend on each pipeline's ``metadata.labels``) are built here, at scrape time, from LMDB.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterator
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from api.exposition import Exposition
from state.stores import SpecStore, StatusStore

INFO_NAME = "deltaforge_pipeline_info"
LABELS_NAME = "deltaforge_pipeline_labels"
_INVALID = re.compile(r"[^a-zA-Z0-9_]")


def label_name(key: str) -> str:
    """A ``metadata.labels`` key as a label name: ``team.io/owner`` -> ``label_team_io_owner``."""
    return "label_" + _INVALID.sub("_", key)


class FleetMetrics:
    """The ``/metrics`` body: info and label series from LMDB, then every process file's
    series of pipelines that exist (``api.exposition``). Keep one instance: its renderer
    caches what does not change between scrapes."""

    def __init__(self, specs: SpecStore, statuses: StatusStore, path: str | None = None) -> None:
        self.specs = specs
        self.statuses = statuses
        self.path = path or os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
        self._exposition = Exposition()

    def render(self) -> bytes:
        records = dict(self.specs.items())
        workers = {name: f"worker-{status.worker}" for name, status in self.statuses.items()
                   if status.worker is not None}
        head = generate_latest(_Fixed([pipeline_info(records, workers),
                                       pipeline_labels(records)]))
        files = sorted(glob.glob(os.path.join(self.path, "*.db")))
        return head + self._exposition.render(files, records).encode()


class _Fixed(Collector):
    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return iter(self.metrics)


def pipeline_info(records: dict[str, Any], workers: dict[str, str]) -> Metric:
    """1 per pipeline with its tenant and the worker that last ran it (for per-worker joins)."""
    metric = Metric(INFO_NAME, "Always 1; join on it for the tenant and worker", "gauge")
    for name, record in records.items():
        tenant = str(record.spec.get("metadata", {}).get("tenant", "default"))
        labels = {"pipeline": name, "tenant": tenant, "worker": workers.get(name, "")}
        metric.add_sample(INFO_NAME, labels, 1.0)
    return metric


def pipeline_labels(records: dict[str, Any]) -> Metric:
    """One series per pipeline whose label names are its own (sanitized) metadata.labels."""
    metric = Metric(LABELS_NAME, "Always 1; metadata.labels as label_<key>, for joins", "gauge")
    for name, record in records.items():
        labels = {"pipeline": name}
        for key, value in sorted(record.spec.get("metadata", {}).get("labels", {}).items()):
            labels.setdefault(label_name(str(key)), str(value))
        metric.add_sample(LABELS_NAME, labels, 1.0)
    return metric
