"""A session runner's own Prometheus metrics, registered on an injected registry.

Per-call observations (``workers.sessions.effects.Observe``) become
``switchboard_turn_latency_seconds``, ``switchboard_tool_latency_seconds``,
``switchboard_command_latency_seconds`` and the counters
``switchboard_tool_timeouts_total``, ``switchboard_usage_rejected_total`` and
``switchboard_realtime_server_errors_total``. The runner adds its load, capacity and
draining flag, drains, calls by end reason with their duration and cost, sideband
events by type, attaches by kind (first, reattach after a drop, takeover after a
failover or hand-over), hand-overs, lost leases, REST attempts and the event loop's
lag. Names, labels and buckets come from ``shared.metrics``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from shared import metrics
from workers.sessions.effects import ObserveKind

ATTACH_KINDS = ("first", "reattach", "takeover")
MAX_EVENT_TYPES = 200
"""Distinct event-type labels kept at most; later unknown types count as ``other``."""
MAX_EVENT_TYPE_CHARS = 64


class RunnerMetrics:
    """Everything one runner process reports."""

    def __init__(self, registry: CollectorRegistry, runner_id: str) -> None:
        self.capacity = metrics.gauge(metrics.RUNNER_CAPACITY, registry).labels(runner_id)
        self.calls = metrics.gauge(metrics.RUNNER_CALLS, registry).labels(runner_id)
        self._draining = metrics.gauge(metrics.RUNNER_DRAINING, registry).labels(runner_id)
        self._draining.set(0)
        self.drains = metrics.counter(metrics.RUNNER_DRAINS, registry)
        self.loop_lag_s = metrics.histogram(metrics.RUNNER_LOOP_LAG, registry)
        self._events = metrics.counter(metrics.SESSION_EVENTS, registry)
        self._event_children: dict[str, Counter] = {}
        self._ended = metrics.counter(metrics.SESSION_ENDED, registry)
        self._attaches = metrics.counter(metrics.SESSION_ATTACHES, registry)
        # Every kind exists from the start: a failover panel shows 0, not "no data".
        for kind in ATTACH_KINDS:
            self._attaches.labels(kind)
        self.handovers = metrics.counter(metrics.SESSION_HANDOVERS, registry)
        self.leases_lost = metrics.counter(metrics.SESSION_LEASES_LOST, registry)
        self.call_duration_s = metrics.histogram(metrics.CALL_DURATION, registry)
        self.call_cost_usd = metrics.histogram(metrics.CALL_COST, registry)
        self.rest_duration_s = metrics.histogram(metrics.REST_DURATION, registry)
        self._latency = {
            "turn_latency_s": metrics.histogram(metrics.TURN_LATENCY, registry),
            "tool_latency_s": metrics.histogram(metrics.TOOL_LATENCY, registry),
            "command_latency_s": metrics.histogram(metrics.COMMAND_LATENCY, registry),
        }
        self._counts = {
            "tool_timeouts": metrics.counter(metrics.TOOL_TIMEOUTS, registry),
            "usage_rejected": metrics.counter(metrics.USAGE_REJECTED, registry),
            "server_errors": metrics.counter(metrics.SERVER_ERRORS, registry),
        }

    def observe(self, kind: ObserveKind, value: float) -> None:
        histogram = self._latency.get(kind)
        if histogram is not None:
            histogram.observe(value)
        else:
            self._counts[kind].inc(value)

    def attached(self, kind: str) -> None:
        self._attaches.labels(kind).inc()

    def ended(self, reason: str) -> None:
        self._ended.labels(reason).inc()

    def event(self, event_type: object) -> None:
        """Count one sideband server event by its type (bounded label set)."""
        key = event_type if isinstance(event_type, str) else "other"
        child = self._event_children.get(key)
        if child is None:
            if len(self._event_children) >= MAX_EVENT_TYPES or len(key) > MAX_EVENT_TYPE_CHARS:
                key = "other"
            child = self._event_children.get(key) or self._events.labels(key)
            self._event_children[key] = child
        child.inc()

    def drain_started(self) -> None:
        self.drains.inc()
        self._draining.set(1)

    def observe_rest(self, endpoint: str, status: str, seconds: float) -> None:
        """One REST attempt (the ``shared.realtime_client`` observer)."""
        self.rest_duration_s.labels(endpoint, status).observe(seconds)
