"""Parse a /metrics page into {(sample name, sorted labels): value}."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

SampleKey = tuple[str, tuple[tuple[str, str], ...]]


def metric_samples(text: str) -> dict[SampleKey, float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
