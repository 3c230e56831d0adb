"""Reading Prometheus text exposition in tests: samples by name and labels."""

from __future__ import annotations

from collections import Counter

import httpx
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of ``text``; fails on a metric family declared twice."""
    declared = Counter(line.split()[2] for line in text.splitlines() if line.startswith("# TYPE "))
    twice = sorted(name for name, n in declared.items() if n > 1)
    assert not twice, f"metric families declared twice: {twice}"
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The one sample of ``name`` with exactly ``labels``; KeyError if there is none."""
    return samples[(name, frozenset(labels.items()))]


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


def scrape(url: str) -> Samples:
    """Every sample a ``/metrics`` endpoint serves now."""
    response = httpx.get(url, timeout=5.0)
    assert response.status_code == 200, f"{url}: {response.status_code}"
    return parse(response.text)
