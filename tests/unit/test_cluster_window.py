"""The live view's arithmetic: rates over a sliding window, quantiles, histogram quantiles."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest

from shared.pricing import default_price_table
from shared.usage_totals import totals_from_hash
from switchboard.cluster_stats import percentile, setup_document
from switchboard.cluster_window import ClusterWindow, Reading, histogram_quantile


def reading(at: float, ended: int, cost: str = "0") -> Reading:
    return Reading(at, {"ended": ended}, Decimal(cost))


def test_rates_need_two_readings() -> None:
    window = ClusterWindow()
    window.add(reading(100.0, 5, "1"), {})
    assert window.per_minute() == {}
    assert window.burn_usd_per_hour() is None
    assert window.uptime_s() == 0.0


def test_rates_are_differences_over_the_window_not_since_start() -> None:
    window = ClusterWindow(window_s=60.0)
    window.add(reading(0.0, 0, "0"), {})
    window.add(reading(30.0, 10, "0.5"), {})
    assert window.per_minute() == {"ended": pytest.approx(20.0)}
    assert window.burn_usd_per_hour() == pytest.approx(60.0)
    # 200 s later, only the last minute counts: 30 calls in 60 s.
    for at, ended in ((100.0, 40), (170.0, 60), (230.0, 90)):
        window.add(reading(at, ended, str(ended / 20)), {})
    assert window.per_minute() == {"ended": pytest.approx(30.0 * 60 / 60.0)}
    assert window.burn_usd_per_hour() == pytest.approx(1.5 * 3600 / 60.0)
    assert window.uptime_s() == 230.0


def test_a_new_outcome_counts_from_zero() -> None:
    window = ClusterWindow()
    window.add(Reading(0.0, {"ended": 2}, Decimal(0)), {})
    window.add(Reading(60.0, {"ended": 2, "rejected": 3}, Decimal(0)), {})
    assert window.per_minute() == {"ended": 0.0, "rejected": pytest.approx(3.0)}


def test_setup_latencies_are_kept_once_per_call_and_bounded() -> None:
    window = ClusterWindow()
    window.add(reading(0.0, 0), {"a": 0.010, "b": 0.020})
    window.add(reading(1.0, 0), {"b": 0.999, "c": 0.030})  # b again: first value stays
    assert sorted(window.setup_latencies_s()) == [0.010, 0.020, 0.030]
    window.add(reading(2.0, 0), {f"call{i}": 0.001 for i in range(6000)})
    assert len(window.setup_latencies_s()) == 5000


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([], 0.5, None),
        ([3.0], 0.99, 3.0),
        ([1.0, 2.0, 3.0, 4.0], 0.5, 2.0),
        ([4.0, 1.0, 3.0, 2.0], 0.99, 4.0),
        (list(range(1, 101)), 0.99, 99),
        (list(range(1, 101)), 0.5, 50),
    ],
)
def test_percentile_is_nearest_rank(values: list[float], q: float, expected: float | None) -> None:
    assert percentile(values, q) == expected


def test_histogram_quantile_interpolates_inside_the_bucket() -> None:
    buckets = [(0.1, 10.0), (0.2, 30.0), (0.5, 40.0), (math.inf, 40.0)]
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.15)
    assert histogram_quantile(1.0, buckets) == pytest.approx(0.5)
    assert histogram_quantile(0.1, buckets) == pytest.approx(0.04)


def test_histogram_quantile_edges() -> None:
    assert histogram_quantile(0.5, []) is None
    assert histogram_quantile(0.5, [(0.1, 0.0), (math.inf, 0.0)]) is None
    # Everything beyond the last finite bound: that bound is the best answer.
    assert histogram_quantile(0.99, [(0.1, 1.0), (math.inf, 100.0)]) == pytest.approx(0.1)


def test_stats_read_setup_latency_from_the_cluster_histogram() -> None:
    raw = {"setup|0.005": "3", "setup|0.01": "1", "setup|+Inf": "0", "setup|x": "9", "calls|": "2"}
    totals = totals_from_hash(raw, default_price_table())
    assert totals.setup_histogram()[:5] == [
        (0.001, 0),
        (0.002, 0),
        (0.005, 3),
        (0.01, 4),
        (0.02, 4),
    ]
    setup = setup_document(totals)
    assert setup["calls"] == 4
    # Two of four calls: two thirds into the (0.002, 0.005] bucket that holds three.
    assert setup["p50"] == pytest.approx(0.004)
    assert setup["p99"] == pytest.approx(0.0098)
    assert setup_document(totals_from_hash({}, default_price_table())) == {
        "p50": None,
        "p99": None,
        "calls": 0,
    }
