"""Figures derived from each mode's raw result, the printed table, and the ratio off/on."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Raw = dict[str, Any]


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    value: Callable[[Raw, Raw | None, int], Any]  # (mode result, empty baseline, pipelines)
    ratio: bool = False  # off/on is meaningful


def dig(raw: Raw, *path: str) -> Any:
    for step in path:
        if not isinstance(raw, dict) or step not in raw:
            return None
        raw = raw[step]
    return raw


def per_pipeline_mb(kind: str) -> Callable[[Raw, Raw | None, int], float | None]:
    def value(raw: Raw, empty: Raw | None, pipelines: int) -> float | None:
        total = dig(raw, "idle", "memory", kind)
        if total is None:
            return None
        base = dig(empty, "memory", kind) if empty else 0.0
        return round((float(total) - float(base or 0.0)) / pipelines, 2)
    return value


def cpu_ms_per_1k(raw: Raw, _empty: Raw | None, _n: int) -> float | None:
    cpu_s, events = dig(raw, "load", "cpu_s"), dig(raw, "load", "events_delivered")
    return round(cpu_s / events * 1e6, 1) if cpu_s is not None and events else None


def rows_per_s(raw: Raw, _empty: Raw | None, _n: int) -> float | None:
    rows, window = dig(raw, "load", "rows_committed"), dig(raw, "load", "window_s")
    return round(rows / window, 1) if rows is not None and window else None


def at(*path: str) -> Callable[[Raw, Raw | None, int], Any]:
    return lambda raw, _empty, _n: dig(raw, *path)


def joined(*path: str) -> Callable[[Raw, Raw | None, int], Any]:
    def value(raw: Raw, _empty: Raw | None, _n: int) -> str | None:
        found = dig(raw, *path)
        return None if found is None else "/".join(str(v) for v in found)
    return value


def summed(*path: str) -> Callable[[Raw, Raw | None, int], Any]:
    def value(raw: Raw, _empty: Raw | None, _n: int) -> int | None:
        found = dig(raw, *path)
        return None if found is None else sum(found)
    return value


FIGURES = [
    Figure("all_running_s", "all pipelines running after (s)", at("start", "all_running_s"),
           True),
    Figure("idle_rss_mb", "idle RSS, process tree (MB)", at("idle", "memory", "rss_mb"), True),
    Figure("idle_pss_mb", "idle PSS, process tree (MB)", at("idle", "memory", "pss_mb"), True),
    Figure("rss_per_pipeline_mb", "RSS per idle pipeline (MB)", per_pipeline_mb("rss_mb"),
           True),
    Figure("pss_per_pipeline_mb", "PSS per idle pipeline (MB)", per_pipeline_mb("pss_mb"),
           True),
    Figure("idle_cpu_pct", "idle CPU (% of one core)", at("idle", "cpu_pct_of_core"), True),
    Figure("idle_binlog_connections", "binlog connections per server, idle",
           joined("idle", "binlog_connections")),
    Figure("idle_binlog_connections_total", "  all servers, idle",
           summed("idle", "binlog_connections"), True),
    Figure("load_binlog_connections", "binlog connections per server, load (max)",
           joined("load", "binlog_connections_max")),
    Figure("rows_per_s", "rows committed/s (offered)", rows_per_s),
    Figure("events_per_s", "events delivered/s (Kafka append time)",
           at("load", "events_per_s"), True),
    Figure("load_cpu_pct", "CPU under load (% of one core)", at("load", "cpu_pct_of_core"),
           True),
    Figure("load_wait_pct", "  service waiting for a CPU (% of one core)",
           at("load", "run_queue_wait_pct_of_core"), True),
    Figure("machine_busy_pct", "  machine busy (% of all cores)",
           at("load", "machine_busy_pct_of_all_cores")),
    Figure("benchmark_cpu_pct", "  benchmark (load with its clients, consumer)",
           at("load", "others_cpu_pct_of_core", "benchmark_process")),
    Figure("mariadb_cpu_pct", "  MariaDB servers", at("load", "others_cpu_pct_of_core",
                                                      "mariadb_servers")),
    Figure("kafka_cpu_pct", "  Kafka broker", at("load", "others_cpu_pct_of_core",
                                                 "kafka_broker")),
    Figure("cpu_ms_per_1k_events", "CPU ms per 1k delivered events", cpu_ms_per_1k, True),
    Figure("latency_p50_ms", "latency commit->Kafka p50 (ms)", at("latency", "p50_ms"), True),
    Figure("latency_p99_ms", "latency commit->Kafka p99 (ms)", at("latency", "p99_ms"), True),
    Figure("latency_rows", "  sampled rows", at("latency", "rows")),
    Figure("load_rss_mb", "RSS under load (MB)", at("load", "memory", "rss_mb"), True),
    Figure("scrape_idle_ms", "/metrics scrape idle, median (ms)",
           at("idle", "metrics", "median_ms"), True),
    Figure("scrape_load_ms", "/metrics scrape under load, median (ms)",
           at("load", "metrics", "median_ms"), True),
    Figure("scrape_load_max_ms", "/metrics scrape under load, max (ms)",
           at("load", "metrics", "max_ms"), True),
    Figure("scrape_kb", "/metrics size (kB)",
           lambda raw, _e, _n: _kb(dig(raw, "load", "metrics", "bytes"))),
    Figure("scrape_samples", "/metrics samples", at("load", "metrics", "samples")),
    Figure("kill_pipelines", "kill -9 worker: its pipelines", at("kill", "pipelines")),
    Figure("kill_running_s", "  all running again after (s)", at("kill", "all_running_s"),
           True),
    Figure("kill_flowing_s", "  all delivering new rows after (s)",
           at("kill", "all_flowing_s"), True),
    Figure("kill_lost", "  rows lost (its pipelines)", at("delivery", "killed_worker", "lost")),
    Figure("kill_duplicates", "  rows delivered twice (its pipelines)",
           at("delivery", "killed_worker", "duplicates")),
    Figure("lost", "rows lost, all pipelines (gaps)", at("delivery", "lost")),
    Figure("missing", "rows not in Kafka at the end (all)", at("delivery", "missing")),
    Figure("drain_s", "drain after the load (s)", at("delivery", "drain_s")),
]


def _kb(value: int | None) -> float | None:
    return None if value is None else round(value / 1024, 1)


def figures(raw: Raw, empty: Raw | None, pipelines: int) -> dict[str, Any]:
    return {f.key: f.value(raw, empty, pipelines) for f in FIGURES}


def ratios(by_mode: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """off / on for every figure where the ratio means something."""
    on, off = by_mode.get("on"), by_mode.get("off")
    if on is None or off is None:
        return {}
    return {f.key: _ratio(off[f.key], on[f.key]) for f in FIGURES if f.ratio}


def _ratio(top: Any, bottom: Any) -> float | None:
    if not isinstance(top, int | float) or not isinstance(bottom, int | float) or not bottom:
        return None
    return round(top / bottom, 2)


def table(by_mode: dict[str, dict[str, Any]], ratio: dict[str, float | None]) -> str:
    modes = list(by_mode)
    header = f"{'':<44}" + "".join(f"{'sharing ' + m:>14}" for m in modes)
    header += f"{'off/on':>10}" if ratio else ""
    lines = [header]
    for figure in FIGURES:
        cells = "".join(f"{_text(by_mode[m][figure.key]):>14}" for m in modes)
        if ratio:
            cells += f"{_text(ratio.get(figure.key)) if figure.ratio else '':>10}"
        lines.append(f"{figure.label:<44}{cells}")
    return "\n".join(lines)


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
