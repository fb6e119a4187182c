"""The data-path part of ``/metrics``: every process file merged and rendered as text, fast.

prometheus_client's multiprocess path builds a ``Sample`` per series and file, merges them in
generic dictionaries and formats each line from scratch: with 300 pipelines (four histograms
each, ~20k series) a scrape took seconds on a busy machine. This does the same merge (counters
and histograms summed over processes, gauges by their multiprocess mode) with what does not
change between scrapes cached per series key: the parsed key and the rendered name and labels.
The output is the same exposition ``generate_latest`` writes (``tests/test_exposition.py``
compares the two).
"""

from __future__ import annotations

import json
import os
from collections.abc import Container, Iterable
from dataclasses import dataclass, field

from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.utils import floatToGoString

Labels = tuple[tuple[str, str], ...]
_DROP_PID = {"min", "livemin", "max", "livemax", "sum", "livesum", "mostrecent",
             "livemostrecent"}


@dataclass(frozen=True, slots=True)
class SeriesKey:
    """One parsed key of a process file (the same key recurs in every file and scrape)."""

    family: str
    sample: str
    labels: Labels  # sorted; without ``le`` for a histogram bucket
    pipeline: str | None
    bound: float | None  # a histogram bucket's ``le``
    help_text: str


@dataclass(slots=True)
class Family:
    """What one family's samples add up to over every file of a scrape."""

    kind: str
    help_text: str
    mode: str = ""  # a gauge's multiprocess mode
    values: dict[tuple[str, Labels], float] = field(default_factory=dict)
    stamps: dict[tuple[str, Labels], float] = field(default_factory=dict)
    buckets: dict[Labels, dict[float, float]] = field(default_factory=dict)


class Exposition:
    """Renders a metrics directory; keep one instance, its caches are what makes it fast."""

    def __init__(self) -> None:
        self._keys: dict[str, SeriesKey] = {}
        self._lines: dict[tuple[str, Labels, float | None], str] = {}  # text before the value

    def render(self, files: Iterable[str], pipelines: Container[str]) -> str:
        """Every family of ``files``, leaving out series of pipelines not in ``pipelines``."""
        families: dict[str, Family] = {}
        for path in files:
            self._add_file(path, pipelines, families)
        out: list[str] = []
        for name, family in families.items():
            self._render_family(name, family, out)
        return "".join(out)

    def _add_file(self, path: str, pipelines: Container[str],
                  families: dict[str, Family]) -> None:
        kind, _, rest = os.path.basename(path).partition("_")
        mode, pid = "", ""
        if kind == "gauge":
            mode, _, pid = rest.rpartition("_")
            pid = pid.removesuffix(".db")
        try:
            values = MmapedDict.read_all_values_from_file(path)
        except FileNotFoundError:  # a live gauge file removed by mark_process_dead
            return
        for raw, value, stamp, _ in values:
            key = self._keys.get(raw) or self._parse(raw)
            if key.pipeline is not None and key.pipeline not in pipelines:
                continue
            family = families.get(key.family)
            if family is None:
                family = families[key.family] = Family(kind, key.help_text, mode)
            if key.bound is not None:
                bounds = family.buckets.setdefault(key.labels, {})
                bounds[key.bound] = bounds.get(key.bound, 0.0) + value
            elif kind == "gauge":
                _merge_gauge(family, key, value, stamp, pid)
            else:  # counters, and a histogram's _sum and _count
                series = (key.sample, key.labels)
                family.values[series] = family.values.get(series, 0.0) + value

    def _parse(self, raw: str) -> SeriesKey:
        family, sample, labels, help_text = json.loads(raw)
        bound = labels.pop("le", None)
        key = SeriesKey(family, sample, tuple(sorted(labels.items())), labels.get("pipeline"),
                        None if bound is None else float(bound), help_text)
        self._keys[raw] = key
        return key

    def _render_family(self, name: str, family: Family, out: list[str]) -> None:
        exposed = name + "_total" if family.kind == "counter" else name
        help_text = family.help_text.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {exposed} {help_text}\n# TYPE {exposed} {family.kind}\n")
        for (sample, labels), value in family.values.items():
            if family.kind != "histogram" or not sample.endswith("_count"):
                out.append(f"{self._line(sample, labels)}{_number(value)}\n")
        bucket_name = name + "_bucket"
        for labels, bounds in family.buckets.items():
            total = 0.0
            for bound in sorted(bounds):
                total += bounds[bound]
                out.append(f"{self._line(bucket_name, labels, bound)}{_number(total)}\n")
            out.append(f"{self._line(name + '_count', labels)}{_number(total)}\n")

    def _line(self, sample: str, labels: Labels, bound: float | None = None) -> str:
        """``name{labels} `` (a bucket's ``le`` among them), rendered once per series."""
        line = self._lines.get((sample, labels, bound))
        if line is None:
            pairs = labels if bound is None else labels + (("le", floatToGoString(bound)),)
            text = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(pairs))
            line = f"{sample}{{{text}}} " if text else f"{sample} "
            self._lines[(sample, labels, bound)] = line
        return line


def _merge_gauge(family: Family, key: SeriesKey, value: float, stamp: float, pid: str) -> None:
    mode = family.mode
    labels = key.labels if mode in _DROP_PID else key.labels + (("pid", pid),)
    series = (key.sample, labels)
    current = family.values.get(series)
    if mode in ("min", "livemin"):
        family.values[series] = value if current is None else min(current, value)
    elif mode in ("max", "livemax"):
        family.values[series] = value if current is None else max(current, value)
    elif mode in ("sum", "livesum"):
        family.values[series] = (current or 0.0) + value
    elif mode in ("mostrecent", "livemostrecent"):
        if current is None or stamp > family.stamps[series]:
            family.values[series] = value
            family.stamps[series] = stamp
    else:  # all, liveall: one series per process
        family.values[series] = value


def _number(value: float) -> str:
    """``floatToGoString``; its common case (finite, no exponent either way: Go switches to
    one from 1e6 up) is just ``repr``."""
    text = repr(value)
    if "e" in text or "n" in text or (value > 0 and text.find(".") > 6):
        return str(floatToGoString(value))
    return text


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
