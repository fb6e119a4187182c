"""The api's view of the metrics: every process's files, minus deleted pipelines, plus the
per-pipeline info and label series rendered from the stored specs.

Multiprocess mode cannot remove a label set, and a family has one fixed label set per process
file; so ``deltaforge_pipeline_info`` and ``deltaforge_pipeline_labels`` (whose label names
depend on each pipeline's ``metadata.labels``) are built here, at scrape time, from LMDB.
"""

from __future__ import annotations

import glob
import json
import os
import re
from collections.abc import Container, Iterable, Iterator
from typing import Any

from prometheus_client.metrics_core import Metric
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from state.stores import SpecStore, StatusStore

INFO_NAME = "deltaforge_pipeline_info"
LABELS_NAME = "deltaforge_pipeline_labels"
_INVALID = re.compile(r"[^a-zA-Z0-9_]")


def label_name(key: str) -> str:
    """A ``metadata.labels`` key as a label name: ``team.io/owner`` -> ``label_team_io_owner``."""
    return "label_" + _INVALID.sub("_", key)


ParsedKey = tuple[str, str, dict[str, str], tuple[tuple[str, str], ...], str]


class FleetCollector(Collector):
    """Merged process files, filtered to pipelines that exist, plus info and labels.

    Keep one instance: it remembers parsed series keys between scrapes (JSON-decoding every
    key is a third of a scrape's cost with tens of thousands of series).
    """

    def __init__(self, specs: SpecStore, statuses: StatusStore, path: str | None = None) -> None:
        self.specs = specs
        self.statuses = statuses
        self.path = path or os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
        self._keys: dict[str, ParsedKey] = {}

    def collect(self) -> Iterator[Metric]:
        records = dict(self.specs.items())
        workers = {name: f"worker-{status.worker}" for name, status in self.statuses.items()
                   if status.worker is not None}
        yield pipeline_info(records, workers)
        yield pipeline_labels(records)
        files = glob.glob(os.path.join(self.path, "*.db"))
        yield from merge(self.read(files, records))

    def read(self, files: list[str], names: Container[str]) -> dict[str, Metric]:
        """Every file's samples of existing pipelines, grouped by family, not yet merged (as
        prometheus_client's ``MultiProcessCollector._read_metrics``, with a lasting key cache)."""
        metrics: dict[str, Metric] = {}
        for path in files:
            parts = os.path.basename(path).split("_")
            kind = parts[0]
            try:
                values = MmapedDict.read_all_values_from_file(path)
            except FileNotFoundError:  # a live gauge file removed by mark_process_dead
                continue
            for key, value, timestamp, _ in values:
                family, sample, labels, labels_key, help_text = self.parse(key)
                if labels.get("pipeline", "") not in names and "pipeline" in labels:
                    continue
                metric = metrics.get(family)
                if metric is None:
                    metric = metrics[family] = Metric(family, help_text, kind)
                if kind == "gauge":
                    metric._multiprocess_mode = parts[1]  # type: ignore[attr-defined]
                    metric.add_sample(sample, labels_key + (("pid", parts[2][:-3]),),  # type: ignore[arg-type]
                                      value, timestamp)
                else:
                    metric.add_sample(sample, labels_key, value)  # type: ignore[arg-type]
        return metrics

    def parse(self, key: str) -> ParsedKey:
        parsed = self._keys.get(key)
        if parsed is None:
            family, sample, labels, help_text = json.loads(key)
            parsed = (family, sample, labels, tuple(sorted(labels.items())), help_text)
            self._keys[key] = parsed
        return parsed


def merge(metrics: dict[str, Metric]) -> Iterable[Metric]:
    """Sum counters and histograms over processes, pick gauges by their mode (the library's)."""
    merged: Iterable[Metric] = MultiProcessCollector._accumulate_metrics(metrics, True)
    return merged


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
