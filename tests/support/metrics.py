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


def summed(text: str, name: str, **labels: str) -> float | None:
    """The sum of ``name``'s samples whose labels include ``labels``; None when there is none."""
    wanted = set(labels.items())
    values = [value for (sample, sample_labels), value in metric_samples(text).items()
              if sample == name and wanted <= set(sample_labels)]
    return sum(values) if values else None
