"""The event-loop lag a runner reported over a window, from two scrapes of its histogram.

The runner samples its loop's lag every ``--lag-sample`` seconds into
``switchboard_runner_event_loop_lag_seconds``; the samples of a window are the
difference of the cumulative buckets scraped at its ends. The p99 is given as the bound
of the bucket it falls in (an upper bound: the true p99 is at most that) and
interpolated inside that bucket as Prometheus does. Since the target is a bucket edge,
"p99 <= target" is decided exactly: it holds when at most 1 % of the samples lie above
the target.
"""

from __future__ import annotations

import math
from typing import Any

from switchboard.cluster_window import histogram_quantile
from tests.observability.exposition import Samples

LAG_METRIC = "switchboard_runner_event_loop_lag_seconds"


def _buckets(before: Samples, after: Samples) -> list[tuple[float, float]]:
    """(upper bound, cumulative count) of the window, sorted by bound."""
    buckets = []
    for (name, labels), value in after.items():
        if name == LAG_METRIC + "_bucket":
            bound = float(dict(labels)["le"])
            buckets.append((bound, value - before.get((name, labels), 0.0)))
    return sorted(buckets)


def lag_window(before: Samples, after: Samples, target_s: float) -> dict[str, Any]:
    """Samples, p99 (bucket bound and interpolated), mean and share above ``target_s``."""
    buckets = _buckets(before, after)
    bounds = [bound for bound, _ in buckets]
    if target_s not in bounds:
        raise ValueError(f"the lag target {target_s} s is not a bucket edge of {bounds}")
    count = buckets[-1][1] if buckets else 0.0
    key: tuple[str, frozenset[tuple[str, str]]] = (LAG_METRIC + "_sum", frozenset())
    total_s = after.get(key, 0.0) - before.get(key, 0.0)
    if count <= 0:
        nan = math.nan
        return {"samples": 0, "p99_bound_ms": nan, "p99_interpolated_ms": nan, "mean_ms": nan,
                "share_over_target": nan}  # fmt: skip
    p99_bound = next(bound for bound, cumulative in buckets if cumulative >= 0.99 * count)
    within = dict(buckets)[target_s]
    p99 = histogram_quantile(0.99, buckets)
    return {
        "samples": int(count),
        "p99_bound_ms": p99_bound * 1000,
        "p99_interpolated_ms": (p99 if p99 is not None else math.nan) * 1000,
        "mean_ms": total_s / count * 1000,
        "share_over_target": (count - within) / count,
    }
