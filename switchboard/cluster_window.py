"""A sliding window over cluster readings: the rates and quantiles the live view shows.

Counters in Redis only ever grow (outcomes, cost), so a rate is the difference between
the newest reading and the oldest one still inside the window, over the time between
them. Setup latencies are remembered per call (a call is seen many times while live);
turn latency comes from the runners' Prometheus histograms, summed over runners, with
the quantile interpolated inside its bucket as Prometheus's ``histogram_quantile``
does. Pure: no I/O, the clock is the readings' own ``at``.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

WINDOW_S = 60.0
LATENCIES_KEPT = 5_000


@dataclass(frozen=True)
class Reading:
    """The growing counters of one moment."""

    at: float
    outcomes: Mapping[str, int]
    """Outcome (``ended``, ``rejected``...) -> calls so far."""
    cost_usd: Decimal


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """The ``q`` quantile of a cumulative histogram given as (upper bound, count) pairs."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    total = ordered[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound  # beyond the last finite bucket: its bound is all we know
            share = (rank - lower_count) / (count - lower_count) if count > lower_count else 1.0
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, count
    return lower_bound


class ClusterWindow:
    """Readings of the last ``window_s`` seconds, plus every setup latency seen."""

    def __init__(self, window_s: float = WINDOW_S) -> None:
        self.window_s = window_s
        self._readings: deque[Reading] = deque()
        self._setup_s: OrderedDict[str, float] = OrderedDict()
        self.started_at: float | None = None

    def add(self, reading: Reading, setup_latencies_s: Mapping[str, float]) -> None:
        """Add one reading and the setup latencies of the calls live at that moment."""
        if self.started_at is None:
            self.started_at = reading.at
        self._readings.append(reading)
        # Keep one reading older than the window, so the rate spans the whole window.
        while len(self._readings) > 2 and self._readings[1].at <= reading.at - self.window_s:
            self._readings.popleft()
        for call_id, latency in setup_latencies_s.items():
            if call_id not in self._setup_s:
                self._setup_s[call_id] = latency
                if len(self._setup_s) > LATENCIES_KEPT:
                    self._setup_s.popitem(last=False)

    def _span(self) -> tuple[Reading, Reading, float] | None:
        if len(self._readings) < 2:
            return None
        first, last = self._readings[0], self._readings[-1]
        elapsed = last.at - first.at
        return (first, last, elapsed) if elapsed > 0 else None

    def per_minute(self) -> dict[str, float]:
        """Calls per minute by outcome over the window (outcomes seen so far)."""
        span = self._span()
        if span is None:
            return {}
        first, last, elapsed = span
        return {
            outcome: max(0, count - first.outcomes.get(outcome, 0)) * 60.0 / elapsed
            for outcome, count in sorted(last.outcomes.items())
        }

    def burn_usd_per_hour(self) -> float | None:
        """USD per hour over the window."""
        span = self._span()
        if span is None:
            return None
        first, last, elapsed = span
        return float(last.cost_usd - first.cost_usd) * 3600.0 / elapsed

    def setup_latencies_s(self) -> list[float]:
        return list(self._setup_s.values())

    def uptime_s(self) -> float:
        if self.started_at is None or not self._readings:
            return 0.0
        return self._readings[-1].at - self.started_at
