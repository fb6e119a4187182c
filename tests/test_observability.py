"""Every metric family the code registers is documented in docs/observability.md."""

from __future__ import annotations

import dataclasses
import re

from prometheus_client import Metric
from prometheus_client.metrics import MetricWrapperBase

from api.metrics_collector import INFO_NAME, LABELS_NAME, label_name
from api.request_metrics import api_families
from tests.support.service import REPO
from workers.metrics import families

DOC = REPO / "docs" / "observability.md"


def family_names(holder: object) -> set[str]:
    names = set()
    for value in vars(holder).values() if not dataclasses.is_dataclass(holder) else [
            getattr(holder, f.name) for f in dataclasses.fields(holder)]:
        if isinstance(value, MetricWrapperBase):
            metric: Metric = value.describe()[0]
            names.add(metric.name + ("_total" if metric.type == "counter" else ""))
    return names


def supervisor_names() -> set[str]:
    """The supervisor's families, created in a throwaway registry-free way."""
    from supervisor import metrics as supervisor_metrics

    source = (REPO / "supervisor" / "metrics.py").read_text()
    assert supervisor_metrics.SupervisorMetrics  # the module imports cleanly
    return set(re.findall(r'"(deltaforge_[a-z0-9_]+)"', source))


def registered_names() -> set[str]:
    return (family_names(families()) | family_names(api_families()) | supervisor_names()
            | {INFO_NAME, LABELS_NAME})


def test_every_registered_metric_is_documented() -> None:
    documented = set(re.findall(r"`(deltaforge_[a-z0-9_]+)`", DOC.read_text()))
    missing = registered_names() - documented
    assert not missing, f"not in docs/observability.md: {sorted(missing)}"
    assert len(registered_names()) >= 33


def test_label_keys_become_valid_prometheus_label_names() -> None:
    assert label_name("app.kubernetes.io/name") == "label_app_kubernetes_io_name"
    assert label_name("team") == "label_team"


def test_dashboard_json_is_what_build_py_generates() -> None:
    import json

    from dashboards.build import OUT, build

    assert json.loads(OUT.read_text()) == build(), "run python dashboards/build.py"


def test_every_dashboard_query_is_filtered_by_tenant_and_uses_the_datasource_variable() -> None:
    from dashboards.build import build, expressions

    board = build()
    queries = expressions(board)
    assert len(queries) >= 40
    for title, expr in queries:
        assert "deltaforge_pipeline_info{" in expr and 'tenant=~"$tenant"' in expr, title
    panels = [p for row in board["panels"] for p in [row, *row.get("panels", [])]]
    assert all(p["datasource"]["uid"] == "${datasource}" for p in panels if p["type"] != "row")
    collapsed = {p["title"] for p in board["panels"] if p["type"] == "row" and p["collapsed"]}
    assert collapsed == {"Batching", "Infrastructure"}
    names = {v["name"] for v in board["templating"]["list"]}
    assert {"datasource", "instance", "tenant", "pipeline", "sink", "label_key",
            "label_value"} <= names
