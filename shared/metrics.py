"""Every Prometheus metric Switchboard exports: names, labels, help and buckets, in one place.

Each metric is a ``MetricSpec``; processes build their instruments from the specs with
``counter``, ``gauge`` and ``histogram``, always against a registry they are given (the
ingress app's, a runner's, a Celery worker process's), never the global one. The
cluster view (``ingress.cluster_view``) renders the ``CLUSTER`` specs from Redis at
scrape time with the same names. Dashboards and alert rules (``deploy/``) use only
names listed in ``CATALOGUE``; a test holds them to it.

Who exports what:

- ingress: ``WEBHOOKS``, ``WEBHOOK_DURATION``, ``ADMIN_REQUESTS``, ``ADMIN_DURATION``,
  and the cluster view;
- Celery workers (multiprocess mode under the prefork pool): ``TASKS``,
  ``TASK_DURATION``, ``REST_DURATION``, ``CALL_SETUP``;
- session runners: the ``RUNNER_*`` and ``SESSION_*`` specs, the per-call latencies,
  ``CALL_DURATION``, ``CALL_COST`` and ``REST_DURATION``.

Buckets follow what each one measures: call setup is milliseconds (the target is
p99 <= 20 ms), turns take up to seconds, calls up to an hour, and a call costs cents.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from shared.usage_totals import SETUP_BOUNDS_S

Kind = Literal["counter", "gauge", "histogram"]

# Buckets, in the unit of the metric they serve.
WEBHOOK_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
ADMIN_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
SETUP_BUCKETS_S = SETUP_BOUNDS_S
"""Webhook in -> accept sent; the same edges as the cluster's own setup histogram
(``shared.usage_totals``); the SLO bound (0.02) is a bucket edge."""
REST_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
TASK_BUCKETS_S = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
TURN_BUCKETS_S = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
TOOL_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
COMMAND_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LOOP_LAG_BUCKETS_S = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)
"""Finer around the runner's target (p99 <= 10 ms, a bucket edge): a p99 read as a bucket
bound lands within a few milliseconds of the truth there."""
CALL_DURATION_BUCKETS_S = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)
CALL_COST_BUCKETS_USD = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)


@dataclass(frozen=True)
class MetricSpec:
    """One metric: ``name`` as prometheus_client takes it (counters without ``_total``)."""

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()

    @property
    def series(self) -> tuple[str, ...]:
        """The names its samples carry in the exposition, as queries use them."""
        if self.kind == "counter":
            return (self.name + "_total",)
        if self.kind == "histogram":
            return tuple(self.name + suffix for suffix in ("_bucket", "_sum", "_count"))
        return (self.name,)


def counter(spec: MetricSpec, registry: CollectorRegistry) -> Counter:
    """A counter for ``spec`` on ``registry``."""
    assert spec.kind == "counter", spec
    return Counter(spec.name, spec.help, spec.labels, registry=registry)


def gauge(spec: MetricSpec, registry: CollectorRegistry) -> Gauge:
    """A gauge for ``spec`` on ``registry`` (a process's own value: ``livesum`` if shared)."""
    assert spec.kind == "gauge", spec
    return Gauge(spec.name, spec.help, spec.labels, registry=registry, multiprocess_mode="livesum")


def histogram(spec: MetricSpec, registry: CollectorRegistry) -> Histogram:
    """A histogram for ``spec`` on ``registry`` with the spec's buckets."""
    assert spec.kind == "histogram", spec
    return Histogram(spec.name, spec.help, spec.labels, registry=registry, buckets=spec.buckets)


# Ingress -----------------------------------------------------------------------------

WEBHOOKS = MetricSpec(
    "switchboard_webhooks",
    "counter",
    "Webhook deliveries received, by result and reason.",
    ("result", "reason"),
)
WEBHOOK_DURATION = MetricSpec(
    "switchboard_webhook_duration_seconds",
    "histogram",
    "Time spent handling one webhook delivery.",
    buckets=WEBHOOK_BUCKETS_S,
)
ADMIN_REQUESTS = MetricSpec(
    "switchboard_admin_requests",
    "counter",
    "Admin API requests, by route template, method and HTTP status.",
    ("route", "method", "status"),
)
ADMIN_DURATION = MetricSpec(
    "switchboard_admin_request_duration_seconds",
    "histogram",
    "Time to answer one admin API request.",
    ("route", "method"),
    ADMIN_BUCKETS_S,
)

# Celery workers ------------------------------------------------------------------------

TASKS = MetricSpec(
    "switchboard_tasks",
    "counter",
    "Celery task runs by task and final state (success, retry, failure).",
    ("task", "state"),
)
TASK_DURATION = MetricSpec(
    "switchboard_task_duration_seconds",
    "histogram",
    "Run time of one Celery task attempt.",
    ("task",),
    TASK_BUCKETS_S,
)
REST_DURATION = MetricSpec(
    "switchboard_rest_request_duration_seconds",
    "histogram",
    "Realtime REST attempts by endpoint and HTTP status (or transport error class).",
    ("endpoint", "status"),
    REST_BUCKETS_S,
)
CALL_SETUP = MetricSpec(
    "switchboard_call_setup_latency_seconds",
    "histogram",
    "Webhook received -> accept request sent, for accepted calls.",
    buckets=SETUP_BUCKETS_S,
)

# Session runners -----------------------------------------------------------------------

RUNNER_CAPACITY = MetricSpec(
    "switchboard_runner_capacity_calls",
    "gauge",
    "Calls this runner may hold at once.",
    ("runner",),
)
RUNNER_CALLS = MetricSpec(
    "switchboard_runner_calls", "gauge", "Calls this runner holds now.", ("runner",)
)
RUNNER_DRAINING = MetricSpec(
    "switchboard_runner_draining", "gauge", "1 while this runner drains, else 0.", ("runner",)
)
RUNNER_DRAINS = MetricSpec(
    "switchboard_runner_drains", "counter", "Drains this runner started (SIGTERM or operator)."
)
RUNNER_LOOP_LAG = MetricSpec(
    "switchboard_runner_event_loop_lag_seconds",
    "histogram",
    "How late the runner's event loop runs a timer it armed.",
    buckets=LOOP_LAG_BUCKETS_S,
)
SESSION_EVENTS = MetricSpec(
    "switchboard_session_events",
    "counter",
    "Sideband server events received, by type.",
    ("type",),
)
SESSION_ATTACHES = MetricSpec(
    "switchboard_session_attaches",
    "counter",
    "Sideband attaches by kind: first, reattach (reconnect after a drop), takeover (failover"
    " or hand-over from another runner).",
    ("kind",),
)
SESSION_HANDOVERS = MetricSpec(
    "switchboard_session_handovers",
    "counter",
    "Calls handed over to another runner while draining.",
)
SESSION_LEASES_LOST = MetricSpec(
    "switchboard_session_leases_lost",
    "counter",
    "Calls dropped because their lease was lost (another worker owns them).",
)
SESSION_ENDED = MetricSpec(
    "switchboard_session_calls_ended",
    "counter",
    "Calls that ended on this runner, by reason.",
    ("reason",),
)
TURN_LATENCY = MetricSpec(
    "switchboard_turn_latency_seconds",
    "histogram",
    "Caller stopped speaking -> first agent output.",
    buckets=TURN_BUCKETS_S,
)
TOOL_LATENCY = MetricSpec(
    "switchboard_tool_latency_seconds",
    "histogram",
    "Tool call received -> its result fed back to the model.",
    buckets=TOOL_BUCKETS_S,
)
COMMAND_LATENCY = MetricSpec(
    "switchboard_command_latency_seconds",
    "histogram",
    "Operator command issued -> carried out on the call.",
    buckets=COMMAND_BUCKETS_S,
)
TOOL_TIMEOUTS = MetricSpec("switchboard_tool_timeouts", "counter", "Tool calls that timed out.")
USAGE_REJECTED = MetricSpec(
    "switchboard_usage_rejected", "counter", "response.done usage that could not be priced."
)
SERVER_ERRORS = MetricSpec(
    "switchboard_realtime_server_errors", "counter", "error events received on sidebands."
)
CALL_DURATION = MetricSpec(
    "switchboard_call_duration_seconds",
    "histogram",
    "Duration of calls that ended on this runner, accept to end.",
    buckets=CALL_DURATION_BUCKETS_S,
)
CALL_COST = MetricSpec(
    "switchboard_call_cost_usd",
    "histogram",
    "Cost of calls that ended on this runner.",
    buckets=CALL_COST_BUCKETS_USD,
)

# The cluster view: read from Redis by the ingress at scrape time -----------------------

CALLS_ACTIVE = MetricSpec(
    "switchboard_calls_active",
    "gauge",
    "Live calls in the cluster by profile and state.",
    ("profile", "state"),
)
CALLS = MetricSpec(
    "switchboard_calls",
    "counter",
    "Call outcomes in the cluster (accepted, rejected, failed, ended) by reason.",
    ("outcome", "reason"),
)
COST = MetricSpec(
    "switchboard_cost_usd",
    "counter",
    "Spend in the cluster by profile, model and billing component, priced when read from"
    " the token counts with the current price table: a price change re-prices past tokens"
    " (a lower price reads as a counter reset).",
    ("profile", "model", "component"),
)
TOKENS = MetricSpec(
    "switchboard_tokens",
    "counter",
    "Tokens the API reported, by profile, model and component.",
    ("profile", "model", "component"),
)
RESPONSES = MetricSpec(
    "switchboard_responses",
    "counter",
    "Model responses counted, by profile and model.",
    ("profile", "model"),
)
ADMISSION_SLOTS = MetricSpec(
    "switchboard_admission_slots_used",
    "gauge",
    "Admission slots held, by profile.",
    ("profile",),
)
QUEUE_LENGTH = MetricSpec(
    "switchboard_queue_length",
    "gauge",
    "Messages waiting: Celery queues, and pending_calls (accepted calls awaiting a runner).",
    ("queue",),
)
RUNNERS = MetricSpec(
    "switchboard_runners",
    "gauge",
    "Registered runners by state: alive (taking calls), draining, dead (no heartbeat).",
    ("state",),
)
RUNNER_POOL_CAPACITY = MetricSpec(
    "switchboard_runner_pool_capacity_calls",
    "gauge",
    "Capacity of the runners taking calls (alive, not draining).",
)
RUNNER_POOL_CALLS = MetricSpec(
    "switchboard_runner_pool_calls", "gauge", "Calls held by live runners, draining included."
)
REDIS_UP = MetricSpec(
    "switchboard_redis_up", "gauge", "1 if the cluster view could be read from Redis, else 0."
)
CLUSTER_SCRAPE = MetricSpec(
    "switchboard_cluster_scrape_duration_seconds",
    "gauge",
    "Time taken to read the cluster view from Redis.",
)

INGRESS = (WEBHOOKS, WEBHOOK_DURATION, ADMIN_REQUESTS, ADMIN_DURATION)
WORKER = (TASKS, TASK_DURATION, REST_DURATION, CALL_SETUP)
RUNNER = (
    RUNNER_CAPACITY,
    RUNNER_CALLS,
    RUNNER_DRAINING,
    RUNNER_DRAINS,
    RUNNER_LOOP_LAG,
    SESSION_EVENTS,
    SESSION_ATTACHES,
    SESSION_HANDOVERS,
    SESSION_LEASES_LOST,
    SESSION_ENDED,
    TURN_LATENCY,
    TOOL_LATENCY,
    COMMAND_LATENCY,
    TOOL_TIMEOUTS,
    USAGE_REJECTED,
    SERVER_ERRORS,
    CALL_DURATION,
    CALL_COST,
    REST_DURATION,
)
CLUSTER = (
    CALLS_ACTIVE,
    CALLS,
    COST,
    TOKENS,
    RESPONSES,
    ADMISSION_SLOTS,
    QUEUE_LENGTH,
    RUNNERS,
    RUNNER_POOL_CAPACITY,
    RUNNER_POOL_CALLS,
    REDIS_UP,
    CLUSTER_SCRAPE,
)
CATALOGUE: dict[str, MetricSpec] = {
    spec.name: spec for group in (INGRESS, WORKER, RUNNER, CLUSTER) for spec in group
}
"""Every metric by name."""


def series_names() -> frozenset[str]:
    """Every sample name any Switchboard process exports."""
    return frozenset(name for spec in CATALOGUE.values() for name in spec.series)
