"""The api's view of the metrics: every process's files, minus deleted pipelines, plus the
per-pipeline info and label series rendered from the stored specs.

Multiprocess mode cannot remove a label set, and a family has one fixed label set per process
file; so ``deltaforge_pipeline_info`` and ``deltaforge_pipeline_labels`` (whose label names
depend on each pipeline's ``metadata.labels``) are built here, at scrape time, from LMDB.
"""

from __future__ import annotations

import re
from collections.abc import Container, Iterator
from typing import Any

from prometheus_client import multiprocess
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from state.stores import SpecStore, StatusStore

INFO_NAME = "deltaforge_pipeline_info"
LABELS_NAME = "deltaforge_pipeline_labels"
_INVALID = re.compile(r"[^a-zA-Z0-9_]")


def label_name(key: str) -> str:
    """A ``metadata.labels`` key as a label name: ``team.io/owner`` -> ``label_team_io_owner``."""
    return "label_" + _INVALID.sub("_", key)


class FleetCollector(Collector):
    """Merged process files, filtered to pipelines that exist, plus info and labels."""

    def __init__(self, specs: SpecStore, statuses: StatusStore) -> None:
        self.specs = specs
        self.statuses = statuses
        self.files = CollectorRegistry()
        multiprocess.MultiProcessCollector(self.files)

    def collect(self) -> Iterator[Metric]:
        records = dict(self.specs.items())
        workers = {name: f"worker-{status.worker}" for name, status in self.statuses.items()
                   if status.worker is not None}
        yield pipeline_info(records, workers)
        yield pipeline_labels(records)
        for family in self.files.collect():
            yield only_existing(family, records)


def only_existing(family: Metric, names: Container[str]) -> Metric:
    """The family without the series of pipelines that were deleted."""
    if not any("pipeline" in s.labels for s in family.samples):
        return family
    kept = [s for s in family.samples if s.labels.get("pipeline", "") in names]
    family.samples = kept
    return family


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
