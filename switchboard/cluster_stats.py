"""Cluster totals as ``switchboard stats`` and the live view of ``up --demo`` show them.

One ``read_stats`` is a handful of Redis round trips: the live calls (``CallStore``),
the cluster counters (``shared.accounting``: tokens, responses, call outcomes, the
call-setup histogram; USD is derived with the policy's price table), and the runner
registry.

Call-setup latency (webhook received -> call accepted) in ``stats_document`` is that of
every call the cluster accepted: the control workers count each accepted call in a
histogram in Redis, and p50/p99 are read from it as Prometheus's
``histogram_quantile`` would (linear within a bucket). The live view also keeps the
setup latencies of the live calls it sees (``setup_latencies_s``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from shared.accounting import Accounting
from shared.models import CallRecord
from shared.pricing import PriceTable
from shared.runner_registry import RunnerEntry, list_runners
from shared.store import CallStore
from shared.usage_totals import Totals
from switchboard.cluster_window import histogram_quantile

RUNNER_DEAD_AFTER_S = 5.0
LIVE_CALLS_READ = 10_000


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q`` quantile (0 < q <= 1) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def setup_latency_s(record: CallRecord) -> float | None:
    """Webhook received -> call accepted, for an accepted call."""
    if record.accepted_at is None:
        return None
    return max(0.0, record.accepted_at - record.created_at)


@dataclass(frozen=True)
class ClusterStats:
    """One reading of the cluster."""

    at: float
    live_calls: list[CallRecord]
    totals: Totals
    runners: list[RunnerEntry]
    setup_latencies_s: dict[str, float] = field(default_factory=dict)
    """Call id -> setup latency, for the accepted live calls."""

    @property
    def calls_by_state(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for record in self.live_calls:
            counts[record.state.value] = counts.get(record.state.value, 0) + 1
        return counts

    def alive_runners(self) -> list[RunnerEntry]:
        return [r for r in self.runners if r.alive(self.at, RUNNER_DEAD_AFTER_S)]


def read_stats(client: redis.Redis, prices: PriceTable) -> ClusterStats:
    """Read the cluster once (``client`` may decode responses or not)."""
    live = CallStore(client).list_calls(limit=LIVE_CALLS_READ)
    latencies = {}
    for record in live:
        latency = setup_latency_s(record)
        if latency is not None:
            latencies[record.id] = latency
    totals = Accounting(client, prices).cluster_totals()
    return ClusterStats(time.time(), live, totals, list_runners(client), latencies)


def outcomes_document(totals: Totals) -> dict[str, dict[str, int]]:
    """Outcome -> reason -> calls (reason ``""`` when none was recorded)."""
    nested: dict[str, dict[str, int]] = {}
    for (outcome, reason), count in sorted(totals.outcomes.items()):
        nested.setdefault(outcome, {})[reason] = count
    return nested


def setup_document(totals: Totals) -> dict[str, Any]:
    """p50, p99 and the number of calls of the cluster's setup-latency histogram."""
    buckets = totals.setup_histogram()
    return {
        "p50": histogram_quantile(0.5, buckets),
        "p99": histogram_quantile(0.99, buckets),
        "calls": buckets[-1][1],
    }


def stats_document(stats: ClusterStats) -> dict[str, Any]:
    """The ``switchboard stats --json`` document."""
    totals = stats.totals
    alive = stats.alive_runners()
    return {
        "at": stats.at,
        "active_calls": len(stats.live_calls),
        "calls_by_state": stats.calls_by_state,
        "outcomes": outcomes_document(totals),
        "setup_latency_s": setup_document(totals),
        "cost_usd": float(totals.cost_usd),
        "cost_usd_exact": format(totals.cost_usd, "f"),
        "responses": totals.responses,
        "tokens": totals.tokens.as_dict(),
        "models": totals.to_json()["models"],
        "unpriced_models": list(totals.unpriced_models),
        "runners": {
            "alive": len(alive),
            "capacity": sum(r.capacity for r in alive),
            "load": sum(r.load for r in alive),
        },
    }
