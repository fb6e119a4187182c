"""Where each value of the process files goes in ``/metrics``: worked out once, used by every
scrape until a file gets new series or the set of pipelines changes.

The merge (counters and histograms summed over processes, gauges by their multiprocess mode,
buckets made cumulative) and the text around each value depend only on which series lie where
in the files and on which pipelines exist. A ``MergePlan`` records them as slots: each merged
value is a slot, each value of a file is added or merged into one slot, and the text is the
rendered lines with a gap for each value. The rules are those of prometheus-client's
``MultiProcessCollector`` (``tests/test_exposition.py`` compares the two).
"""

from __future__ import annotations

import math
from collections.abc import Container, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client.utils import floatToGoString

from api.metric_files import Labels, MetricFile

Pairs = list[tuple[int, int]]  # (slot, index of the value among its file's doubles)
LineKey = tuple[str, Labels, float | None]  # sample, labels (with pid), a bucket's bound
_DROP_PID = {"min", "livemin", "max", "livemax", "sum", "livesum", "mostrecent",
             "livemostrecent"}


@dataclass(slots=True)
class FileSteps:
    """How one file's values go into the slots. A series' first value is assigned, before any
    later value of the same file is merged into it: so ``apply`` takes the lists in this order."""

    assign: Pairs = field(default_factory=list)  # with its timestamp, for a mostrecent gauge
    add: Pairs = field(default_factory=list)
    lower: Pairs = field(default_factory=list)  # min gauges
    higher: Pairs = field(default_factory=list)  # max gauges
    newer: Pairs = field(default_factory=list)  # mostrecent gauges: by the value's timestamp

    def apply(self, doubles: memoryview[float], values: list[float], stamps: list[float]) -> None:
        """Puts the file's values into ``values`` (``stamps``: the timestamp of each)."""
        for slot, at in self.assign:
            values[slot] = doubles[at]
            stamps[slot] = doubles[at + 1]
        for slot, at in self.add:
            values[slot] += doubles[at]
        for slot, at in self.lower:
            if doubles[at] < values[slot]:
                values[slot] = doubles[at]
        for slot, at in self.higher:
            if doubles[at] > values[slot]:
                values[slot] = doubles[at]
        for slot, at in self.newer:
            if doubles[at + 1] > stamps[slot]:
                values[slot] = doubles[at]
                stamps[slot] = doubles[at + 1]

    def for_gauge(self, mode: str, first: bool) -> Pairs:
        """The list for a value of a gauge in ``mode`` (a series' first value is assigned)."""
        if mode in ("sum", "livesum"):
            return self.add
        if first:
            return self.assign
        if mode in ("min", "livemin"):
            return self.lower
        if mode in ("max", "livemax"):
            return self.higher
        if mode in ("mostrecent", "livemostrecent"):
            return self.newer
        return self.assign  # all, liveall: one series per process


@dataclass(slots=True)
class _Family:
    """One family's slots, in the order its lines are exposed."""

    kind: str
    help_text: str
    mode: str  # a gauge's multiprocess mode
    series: dict[tuple[str, Labels], int] = field(default_factory=dict)  # (sample, labels)
    buckets: dict[Labels, dict[float, int]] = field(default_factory=dict)  # by label set, bound


@dataclass(frozen=True, slots=True)
class MergePlan:
    """What a scrape does with the files' values, for one list of files (as parsed so far) and
    the pipelines kept."""

    steps: list[FileSteps]  # by file
    slots: int
    chains: list[tuple[list[int], int]]  # a label set's bucket slots by bound, and its _count
    order: list[int]  # the slot of each line's value
    families_lines: list[tuple[int, int]]  # each family's range of lines
    parts: list[str]  # text, value, text, ..., text: the values left empty
    lines: dict[LineKey, str]  # each line's text before the value

    @classmethod
    def build(cls, files: Sequence[MetricFile], kept: Container[str],
              known_lines: Mapping[LineKey, str]) -> MergePlan:
        """``known_lines`` (the last plan's ``lines``) saves rendering the lines both have."""
        builder = _Builder(known_lines)
        steps = [builder.plan_file(file, kept) for file in files]
        builder.layout()
        return cls(steps, builder.slots, builder.chains, builder.order, builder.families_lines,
                   builder.parts, builder.lines)

    def render(self, doubles: Sequence[memoryview[float]]) -> str:
        """The text for the files' current values (``doubles`` in the order of the files)."""
        values = self._merge(doubles)
        lines = list(map(values.__getitem__, self.order))
        numbers: list[str] = []
        for start, end in self.families_lines:
            numbers += _go_floats(lines[start:end])
        parts = self.parts.copy()
        parts[1::2] = numbers
        return "".join(parts)

    def _merge(self, doubles: Sequence[memoryview[float]]) -> list[float]:
        """The value of each slot, buckets made cumulative."""
        values = [0.0] * self.slots
        stamps = [0.0] * self.slots
        for steps, file_doubles in zip(self.steps, doubles, strict=True):
            steps.apply(file_doubles, values, stamps)
        for bounds, count in self.chains:
            total = 0.0
            for slot in bounds:
                total += values[slot]
                values[slot] = total
            values[count] = total
        return values


class _Builder:
    """Works out a ``MergePlan``: the slots family by family, then the text."""

    def __init__(self, known_lines: Mapping[LineKey, str]) -> None:
        self.known_lines = known_lines
        self.families: dict[str, _Family] = {}
        self.slots = 0
        self.chains: list[tuple[list[int], int]] = []
        self.order: list[int] = []
        self.families_lines: list[tuple[int, int]] = []
        self.parts = [""]
        self.lines: dict[LineKey, str] = {}

    def plan_file(self, file: MetricFile, kept: Container[str]) -> FileSteps:
        """The file's steps; the slots of its series, new ones in the order of its entries."""
        steps = FileSteps()
        for key, at in file.entries:
            if key.pipeline is not None and key.pipeline not in kept:
                continue
            family = self.families.get(key.family)
            if family is None:
                family = self.families[key.family] = _Family(file.kind, key.help_text, file.mode)
            if key.bound is not None:
                steps.add.append((self._bucket_slot(family, key.labels, key.bound), at))
            elif file.kind == "gauge":
                pid = () if family.mode in _DROP_PID else (("pid", file.pid),)
                slot, first = self._series_slot(family, (key.sample, key.labels + pid))
                steps.for_gauge(family.mode, first).append((slot, at))
            else:  # counters, and a histogram's _sum and _count
                slot, _ = self._series_slot(family, (key.sample, key.labels))
                steps.add.append((slot, at))
        return steps

    def layout(self) -> None:
        """The text, ``order`` and ``chains``; families and series in the order first seen."""
        for name, family in self.families.items():
            exposed = name + "_total" if family.kind == "counter" else name
            help_text = family.help_text.replace("\\", r"\\").replace("\n", r"\n")
            self.parts[-1] += f"# HELP {exposed} {help_text}\n# TYPE {exposed} {family.kind}\n"
            first_line = len(self.order)
            for (sample, labels), slot in family.series.items():
                if family.kind != "histogram" or not sample.endswith("_count"):  # summed below
                    self._add_line(slot, sample, labels)
            for labels, bounds in family.buckets.items():
                self._add_buckets(name, labels, bounds)
            self.families_lines.append((first_line, len(self.order)))

    def _series_slot(self, family: _Family, series: tuple[str, Labels]) -> tuple[int, bool]:
        """The series' slot, and whether it is new."""
        slot = family.series.get(series)
        if slot is not None:
            return slot, False
        slot = family.series[series] = self._new_slot()
        return slot, True

    def _bucket_slot(self, family: _Family, labels: Labels, bound: float) -> int:
        bounds = family.buckets.setdefault(labels, {})
        slot = bounds.get(bound)
        if slot is None:
            slot = bounds[bound] = self._new_slot()
        return slot

    def _new_slot(self) -> int:
        self.slots += 1
        return self.slots - 1

    def _add_buckets(self, name: str, labels: Labels, bounds: dict[float, int]) -> None:
        """One label set's buckets, by bound, and its ``_count``: their sum."""
        ordered = sorted(bounds)
        for bound in ordered:
            self._add_line(bounds[bound], name + "_bucket", labels, bound)
        count = self._new_slot()
        self._add_line(count, name + "_count", labels)
        self.chains.append(([bounds[bound] for bound in ordered], count))

    def _add_line(self, slot: int, sample: str, labels: Labels,
                  bound: float | None = None) -> None:
        key = (sample, labels, bound)
        line = self.lines[key] = self.known_lines.get(key) or _line(sample, labels, bound)
        self.parts[-1] += line
        self.parts += ("", "\n")
        self.order.append(slot)


def _line(sample: str, labels: Labels, bound: float | None) -> str:
    """``name{labels} `` (a bucket's ``le`` among the labels): a line before its value."""
    pairs = labels if bound is None else labels + (("le", floatToGoString(bound)),)
    rendered = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(pairs))
    return f"{sample}{{{rendered}}} " if rendered else f"{sample} "


def _go_floats(values: list[float]) -> Iterator[str]:
    """``floatToGoString`` of each value: that is ``repr`` for finite values below 1e6 (Go
    writes an exponent from there), which a family's values usually all are; checked in C."""
    if math.isfinite(sum(values)) and max(values, default=0.0) < 1e6:
        return map(repr, values)
    return (str(floatToGoString(value)) for value in values)


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")

