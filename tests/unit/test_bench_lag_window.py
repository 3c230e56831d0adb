"""The loop-lag figures of the runner-density benchmark, from two histogram scrapes."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from bench.lag_window import lag_window
from shared import metrics
from tests.observability.exposition import Samples, parse


def _scrape(registry: CollectorRegistry) -> Samples:
    return parse(generate_latest(registry).decode())


def test_only_the_windows_samples_count_and_the_p99_is_its_bucket_bound() -> None:
    registry = CollectorRegistry()
    lag = metrics.histogram(metrics.RUNNER_LOOP_LAG, registry)
    for _ in range(50):  # before the window: large lags that must not count
        lag.observe(0.3)
    before = _scrape(registry)
    for _ in range(198):
        lag.observe(0.001)
    lag.observe(0.012)
    lag.observe(0.012)
    window = lag_window(before, _scrape(registry), target_s=0.01)
    assert window["samples"] == 200
    # 2 of 200 samples above 10 ms: 1 %, so the p99 is still within 10 ms.
    assert window["share_over_target"] == pytest.approx(0.01)
    assert window["p99_bound_ms"] == pytest.approx(1.0)
    assert window["mean_ms"] == pytest.approx((198 * 0.001 + 2 * 0.012) / 200 * 1000)


def test_a_p99_above_the_target_is_reported_with_its_bucket() -> None:
    registry = CollectorRegistry()
    lag = metrics.histogram(metrics.RUNNER_LOOP_LAG, registry)
    before = _scrape(registry)
    for value in [0.001] * 95 + [0.012] * 5:
        lag.observe(value)
    window = lag_window(before, _scrape(registry), target_s=0.01)
    assert window["p99_bound_ms"] == pytest.approx(15.0)
    assert 10.0 < window["p99_interpolated_ms"] <= 15.0
    assert window["share_over_target"] == pytest.approx(0.05)


def test_no_samples_and_a_target_off_the_bucket_edges() -> None:
    registry = CollectorRegistry()
    metrics.histogram(metrics.RUNNER_LOOP_LAG, registry)
    empty = _scrape(registry)
    window = lag_window(empty, empty, target_s=0.01)
    assert window["samples"] == 0
    assert math.isnan(window["p99_bound_ms"])
    with pytest.raises(ValueError, match="bucket edge"):
        lag_window(empty, empty, target_s=0.012)
