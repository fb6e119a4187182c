"""Generate dashboards/deltaforge-fleet.json (Grafana) so every panel uses the same filters.

    python dashboards/build.py

Every pipeline-level query is joined with ``deltaforge_pipeline_info`` (tenant, worker) and
``deltaforge_pipeline_labels`` (the label filter), so the tenant, pipeline and label variables
apply to every panel; worker-level queries join on the workers that host those pipelines.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("deltaforge-fleet.json")
RATE = "$__rate_interval"
DS = {"type": "prometheus", "uid": "${datasource}"}
INSTANCE = 'instance=~"$instance"'
SINK = 'sink=~"$sink"'

# The selected pipelines: 1 per (instance, pipeline), carrying tenant and worker.
FILTER = (
    "group by (instance, pipeline, tenant, worker) ("
    f'deltaforge_pipeline_info{{{INSTANCE}, tenant=~"$tenant", pipeline=~"$pipeline"}}'
    " * on (instance, pipeline) group_left () "
    f'deltaforge_pipeline_labels{{{INSTANCE}, $label_key=~"$label_value"}})'
)


def j(expr: str) -> str:
    """``expr`` (with instance and pipeline labels) restricted to the selected pipelines."""
    return f"({expr}) * on (instance, pipeline) group_left (tenant, worker) {FILTER}"


def wj(expr: str) -> str:
    """A per-worker ``expr`` restricted to workers hosting selected pipelines."""
    return f"({expr}) * on (instance, worker) group_left () group by (instance, worker) ({FILTER})"


def ij(expr: str) -> str:
    """A per-instance ``expr`` kept only for instances with selected pipelines."""
    return f"({expr}) and on (instance) group by (instance) ({FILTER})"


def per_pipeline_rate(metric: str, selector: str = "", by: str = "") -> str:
    labels = f"instance, pipeline{', ' + by if by else ''}"
    return j(f"sum by ({labels}) (rate({metric}{{{INSTANCE}{selector}}}[{RATE}]))")


def q(expr: str, legend: str = "", instant: bool = False) -> dict[str, Any]:
    return {"expr": expr, "legendFormat": legend, "instant": instant, "range": not instant}


TABLE_LEGEND = {"displayMode": "table", "placement": "right", "showLegend": True,
                "calcs": ["lastNotNull", "max", "mean"], "sortBy": "Max", "sortDesc": True}


class Board:
    """Lays panels out on Grafana's 24-column grid, row by row."""

    def __init__(self) -> None:
        self.panels: list[dict[str, Any]] = []
        self.y = 0
        self.x = 0
        self.next_id = 1
        self.row_panels: list[dict[str, Any]] | None = None

    def row(self, title: str, collapsed: bool = False) -> None:
        self.newline()
        row: dict[str, Any] = {"type": "row", "title": title, "collapsed": collapsed,
                               "id": self.take_id(), "gridPos": self.pos(24, 1), "panels": []}
        self.panels.append(row)
        self.y += 1
        self.row_panels = row["panels"] if collapsed else None

    def add(self, kind: str, title: str, targets: list[dict[str, Any]], width: int = 12,
            height: int = 8, unit: str = "short", **extra: Any) -> None:
        if self.x + width > 24:
            self.newline()
        panel: dict[str, Any] = {
            "type": kind, "title": title, "id": self.take_id(), "datasource": DS,
            "gridPos": self.pos(width, height),
            "targets": [{**t, "refId": chr(65 + i), "datasource": DS}
                        for i, t in enumerate(targets)],
            "fieldConfig": {"defaults": {"unit": unit, **extra.pop("defaults", {})},
                            "overrides": []},
            "options": extra.pop("options", {}),
        }
        panel.update(extra)
        if kind == "timeseries":
            panel["options"].setdefault("legend", TABLE_LEGEND)
            panel["options"].setdefault("tooltip", {"mode": "multi", "sort": "desc"})
        (self.row_panels if self.row_panels is not None else self.panels).append(panel)
        self.x += width
        self.height = height

    def stat(self, title: str, expr: str, unit: str = "short",
             thresholds: tuple[float, float] | None = None) -> None:
        steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
        if thresholds:
            steps += [{"color": "orange", "value": thresholds[0]},
                      {"color": "red", "value": thresholds[1]}]
        self.add("stat", title, [q(expr, instant=True)], width=3, height=4, unit=unit,
                 defaults={"thresholds": {"mode": "absolute", "steps": steps}},
                 options={"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "background"})

    def top(self, title: str, expr: str, legend: str, unit: str = "short") -> None:
        """A top-10 table, sortable by clicking its column headers."""
        self.add("table", title, [q(f"topk(10, {expr})", legend, instant=True) | {
            "format": "table"}], width=6, height=8, unit=unit,
            options={"sortBy": [{"displayName": "Value", "desc": True}], "showHeader": True},
            transformations=[{"id": "organize", "options": {
                "excludeByName": {"Time": True, "__name__": True, "instance": False},
                "renameByName": {"Value": "Value"}}}])

    def series(self, title: str, targets: list[dict[str, Any]], unit: str = "short",
               width: int = 12) -> None:
        self.add("timeseries", title, targets, width=width, unit=unit)

    def take_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def pos(self, w: int, h: int) -> dict[str, int]:
        return {"x": self.x, "y": self.y, "w": w, "h": h}

    def newline(self) -> None:
        if self.x:
            self.y += getattr(self, "height", 8)
            self.x = 0


def fleet_overview(b: Board) -> None:
    b.row("Fleet overview")
    b.stat("Running", f"count({j('deltaforge_pipeline_status == 1')}) or vector(0)")
    b.stat("Failed", f"count({j('deltaforge_pipeline_status == -1')}) or vector(0)",
           thresholds=(1, 1))
    b.stat("Events/s", f"sum({per_pipeline_rate('deltaforge_sink_events_total', ', ' + SINK)})"
           " or vector(0)", unit="ops")
    b.stat("Data/s", f"sum({per_pipeline_rate('deltaforge_sink_bytes_total', ', ' + SINK)})"
           " or vector(0)", unit="Bps")
    b.stat("Max lag", f"max({j('deltaforge_source_lag_seconds')})", unit="s",
           thresholds=(5, 30))
    b.stat("DLQ total", f"sum({j('deltaforge_dlq_entries')}) or vector(0)",
           thresholds=(10, 100))
    b.stat("Errors/s", f"(sum({per_pipeline_rate('deltaforge_sink_errors_total')}) or vector(0))"
           f" + (sum({per_pipeline_rate('deltaforge_source_errors_total')}) or vector(0))",
           thresholds=(0.01, 1))
    b.stat("Txn aborts/s", f"sum({per_pipeline_rate('deltaforge_sink_txn_aborts_total')})"
           " or vector(0)", thresholds=(0.01, 1))


def top_pipelines(b: Board) -> None:
    b.row("Top 10 (worst first)")
    b.top("Laggiest", j("deltaforge_source_lag_seconds"), "{{pipeline}}", unit="s")
    b.top("Busiest (events/s)", per_pipeline_rate("deltaforge_sink_events_total", ", " + SINK),
          "{{pipeline}}", unit="ops")
    b.top("Biggest DLQ backlog", j("deltaforge_dlq_entries"), "{{pipeline}}")
    b.top("Most sink errors (range)", j("sum by (instance, pipeline) (increase("
          f"deltaforge_sink_errors_total{{{INSTANCE}}}[$__range]))"), "{{pipeline}}")
    b.top("Most source errors (range)", j("sum by (instance, pipeline) (increase("
          f"deltaforge_source_errors_total{{{INSTANCE}}}[$__range]))"), "{{pipeline}}")


def throughput(b: Board) -> None:
    b.row("Throughput")
    b.series("Events/s: read vs acknowledged", [
        q(f"sum({per_pipeline_rate('deltaforge_source_events_total')})", "read"),
        q(f"sum({per_pipeline_rate('deltaforge_sink_events_total', ', ' + SINK)})", "acked")],
        unit="ops")
    b.series("Events/s by pipeline (top 10)", [q(
        f"topk(10, {per_pipeline_rate('deltaforge_sink_events_total', ', ' + SINK)})",
        "{{pipeline}}")], unit="ops")
    b.series("Bytes/s: binlog vs acknowledged", [
        q(f"sum({per_pipeline_rate('deltaforge_source_bytes_total')})", "binlog"),
        q(f"sum({per_pipeline_rate('deltaforge_sink_bytes_total', ', ' + SINK)})", "acked")],
        unit="Bps")
    b.series("Row changes/s by op", [q(
        f"sum by (op) ({per_pipeline_rate('deltaforge_source_events_total', by='op')})",
        "{{op}}")], unit="ops")


def quantile(phi: float, metric: str, by: str = "", selector: str = "") -> str:
    inner = per_pipeline_rate(f"{metric}_bucket", selector, by=("le, " + by) if by else "le")
    return f"histogram_quantile({phi}, sum by (le{', ' + by if by else ''}) ({inner}))"


def latency_and_lag(b: Board) -> None:
    b.row("Latency and lag")
    b.series("End-to-end latency (source commit to ack)", [
        q(quantile(phi, "deltaforge_e2e_latency_seconds"), f"p{int(phi * 100)}")
        for phi in (0.5, 0.95, 0.99)], unit="s")
    b.series("Sink latency p95 by sink", [q(
        quantile(0.95, "deltaforge_sink_latency_seconds", "sink", ", " + SINK), "{{sink}}")],
        unit="s")
    b.series("Source lag (top 10 pipelines)", [q(
        f"topk(10, {j('deltaforge_source_lag_seconds')})", "{{pipeline}}")], unit="s")
    b.series("Table lag (top 10 tables)", [q(
        f"topk(10, {j('deltaforge_source_table_lag_seconds')})", "{{pipeline}} {{table}}")],
        unit="s")


def checkpoints(b: Board) -> None:
    b.row("Checkpoints and exactly-once")
    b.series("Checkpoint age (oldest 10 sinks)", [q(
        f"topk(10, time() - {j(f'deltaforge_sink_last_checkpoint_ts{{{SINK}}}')})",
        "{{pipeline}} {{sink}}")], unit="s")
    b.series("Checkpoint writes/s", [q(
        f"sum({per_pipeline_rate('deltaforge_checkpoints_total')})", "writes")], unit="ops")
    b.series("Sinks whose last batch failed", [q(
        f"count by (required) ({j('deltaforge_sink_checkpoint_status == 0')}) or vector(0)",
        "required={{required}}")])
    b.series("Kafka transactions/s", [
        q(f"sum({per_pipeline_rate('deltaforge_sink_txn_commits_total', ', ' + SINK)})",
          "commits"),
        q(f"sum({per_pipeline_rate('deltaforge_sink_txn_aborts_total', ', ' + SINK)})",
          "aborts")], unit="ops")


def dead_letters(b: Board) -> None:
    b.row("Dead-letter queue")
    b.series("Entries (top 10)", [q(f"topk(10, {j('deltaforge_dlq_entries')})",
                                    "{{pipeline}}")])
    b.series("Dead-lettered events/s by error kind", [q(
        f"sum by (error_kind) "
        f"({per_pipeline_rate('deltaforge_dlq_events_total', ', ' + SINK, by='error_kind')})",
        "{{error_kind}}")], unit="ops")
    b.series("Saturation (top 10)", [q(f"topk(10, {j('deltaforge_dlq_saturation_ratio')})",
                                       "{{pipeline}}")], unit="percentunit")
    b.series("Overflow: evicted and rejected/s", [
        q(f"sum({per_pipeline_rate('deltaforge_dlq_evicted_total')}) or vector(0)", "evicted"),
        q(f"sum({per_pipeline_rate('deltaforge_dlq_rejected_total')}) or vector(0)",
          "rejected")], unit="ops")


def errors(b: Board) -> None:
    b.row("Errors and reliability")
    b.series("Sink errors/s (top 10)", [q(
        f"topk(10, {per_pipeline_rate('deltaforge_sink_errors_total', ', ' + SINK)})",
        "{{pipeline}}")], unit="ops")
    b.series("Source errors/s by kind, reconnects/s", [
        q(f"sum by (kind) ({per_pipeline_rate('deltaforge_source_errors_total', by='kind')})",
          "{{kind}}"),
        q(f"sum({per_pipeline_rate('deltaforge_source_reconnects_total')})", "reconnects")],
        unit="ops")
    b.add("state-timeline", "Pipeline state (1 running, 0.5 paused, 0 stopped, -1 failed)",
          [q(j("deltaforge_pipeline_status"), "{{pipeline}}")], width=24, height=10,
          defaults={"thresholds": {"mode": "absolute", "steps": [
              {"color": "red", "value": None}, {"color": "gray", "value": 0},
              {"color": "orange", "value": 0.5}, {"color": "green", "value": 1}]}},
          options={"showValue": "never", "mergeValues": True})


def workers(b: Board) -> None:
    b.row("Workers")
    b.stat("Workers up", f"sum({ij(f'deltaforge_workers_up{{{INSTANCE}}}')})")
    b.newline()
    b.series("Restarts (range)", [q(wj(
        f"sum by (instance, worker) (increase(deltaforge_worker_restarts_total{{{INSTANCE}}}"
        "[$__range]))"), "{{worker}}")])
    b.series("Heartbeat age", [q(wj(f"deltaforge_worker_heartbeat_age_seconds{{{INSTANCE}}}"),
                                 "{{worker}}")], unit="s")
    b.series("Pipelines per worker", [q(wj(f"deltaforge_pipelines_assigned{{{INSTANCE}}}"),
                                        "{{worker}}")])
    b.series("Events/s per worker", [q(
        f"sum by (worker) ({per_pipeline_rate('deltaforge_sink_events_total')})",
        "{{worker}}")], unit="ops")


def batching(b: Board) -> None:
    b.row("Batching", collapsed=True)
    b.series("Average events per batch", [q(
        f"sum({per_pipeline_rate('deltaforge_batch_events_sum')}) / "
        f"sum({per_pipeline_rate('deltaforge_batch_events_count')})", "events")])
    b.series("Average bytes per batch", [q(
        f"sum({per_pipeline_rate('deltaforge_batch_bytes_sum')}) / "
        f"sum({per_pipeline_rate('deltaforge_batch_bytes_count')})", "bytes")], unit="bytes")
    b.series("Batch size p95 (events)", [q(quantile(0.95, "deltaforge_batch_events"), "p95")])
    b.series("Batches/s", [q(f"sum({per_pipeline_rate('deltaforge_batch_events_count')})",
                             "batches")], unit="ops")


def infrastructure(b: Board) -> None:
    b.row("Infrastructure", collapsed=True)
    b.series("API requests/s by route and status", [q(ij(
        "sum by (instance, route, status) "
        f"(rate(deltaforge_api_requests_total{{{INSTANCE}}}[{RATE}]))"),
        "{{route}} {{status}}")], unit="reqps")
    b.series("API latency p95 by route", [q(
        "histogram_quantile(0.95, sum by (le, route) (" + ij(
            "sum by (instance, le, route) (rate(deltaforge_api_request_duration_seconds_bucket"
            f"{{{INSTANCE}}}[{RATE}]))") + "))", "{{route}}")], unit="s")
    b.series("Scrape duration and samples", [
        q(ij(f'scrape_duration_seconds{{{INSTANCE}}}'), "scrape s {{instance}}"),
        q(ij(f'scrape_samples_scraped{{{INSTANCE}}}'), "samples {{instance}}")])


def variable(name: str, query: str, label: str, regex: str = "", multi: bool = True,
             all_value: str | None = ".*") -> dict[str, Any]:
    var: dict[str, Any] = {
        "name": name, "label": label, "type": "query", "datasource": DS,
        "query": {"query": query, "refId": name}, "definition": query, "refresh": 2,
        "regex": regex, "multi": multi, "includeAll": all_value is not None, "sort": 1,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]} if all_value
        else {},
    }
    if all_value is not None:
        var["allValue"] = all_value
    return var


def templating() -> list[dict[str, Any]]:
    return [
        {"name": "datasource", "label": "Data source", "type": "datasource",
         "query": "prometheus", "current": {}, "hide": 0, "refresh": 1, "regex": ""},
        variable("instance", "label_values(deltaforge_pipeline_info, instance)", "Instance"),
        variable("tenant", 'label_values(deltaforge_pipeline_info{instance=~"$instance"}, '
                 "tenant)", "Tenant"),
        variable("pipeline", 'label_values(deltaforge_pipeline_info{instance=~"$instance", '
                 'tenant=~"$tenant"}, pipeline)', "Pipeline"),
        variable("sink", 'label_values(deltaforge_sink_events_total{instance=~"$instance", '
                 'pipeline=~"$pipeline"}, sink)', "Sink"),
        variable("label_key", "label_names(deltaforge_pipeline_labels)", "Label",
                 regex="/^(pipeline|label_.+)$/", multi=False, all_value=None)
        | {"current": {"selected": True, "text": "pipeline", "value": "pipeline"}},
        variable("label_value", 'label_values(deltaforge_pipeline_labels{instance=~"$instance"}'
                 ", $label_key)", "Label value"),
    ]


def build() -> dict[str, Any]:
    board = Board()
    for section in (fleet_overview, top_pipelines, throughput, latency_and_lag, checkpoints,
                    dead_letters, errors, workers, batching, infrastructure):
        section(board)
    return {
        "title": "DeltaForge-Py fleet", "uid": "deltaforge-py-fleet", "editable": True,
        "schemaVersion": 39, "version": 1, "refresh": "30s", "tags": ["deltaforge", "cdc"],
        "time": {"from": "now-1h", "to": "now"}, "timezone": "",
        "templating": {"list": templating()}, "annotations": {"list": []},
        "panels": board.panels,
    }


def expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target, collapsed rows included."""
    found = []
    for panel in dashboard["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            found += [(inner["title"], t["expr"]) for t in inner.get("targets", [])]
    return found


if __name__ == "__main__":
    OUT.write_text(json.dumps(build(), indent=2) + "\n")
    print(f"wrote {OUT} ({len(expressions(build()))} queries)")
