"""The cluster view on the ingress's ``/metrics``: cluster-wide state read from Redis.

Every scrape reads one ``ClusterSnapshot`` with the async client, in two pipelined round
trips plus the runner registry, so the event loop is never blocked on Redis; the
snapshot is then rendered (``cluster_families``) with the names of ``shared.metrics``:

- ``switchboard_calls_active{profile, state}``: live calls from the live-call index and
  their records (zero rows for every known profile and live state, so panels and
  alerts see 0 rather than no data);
- ``switchboard_calls_total{outcome, reason}``, ``switchboard_cost_usd_total``,
  ``switchboard_tokens_total`` and ``switchboard_responses_total`` (by profile, model
  and component): the counters ``shared.accounting`` keeps in Redis. They live in
  Redis, so they survive restarts and count each response once however many processes
  wrote it; USD is priced from the integer token counts with the current price table,
  so a change of the table re-prices every past token: a raised price makes the spend
  counter jump, a lowered one makes it fall, which Prometheus reads as a reset (the
  ``rate`` over that moment counts the whole total again, and may trip the cost-burn
  alert); the metric's help text warns of it;
- ``switchboard_admission_slots_used{profile}``, ``switchboard_queue_length{queue}``
  (the Celery queues and ``pending_calls``, the accepted calls no runner took yet),
  ``switchboard_runners{state}`` and the runner pool's capacity and load;
- ``switchboard_redis_up``: 0 when Redis did not answer in time (nothing else is
  reported then), and ``switchboard_cluster_scrape_duration_seconds``.

Every ingress replica reports the same cluster numbers: queries aggregate them with
``max without (instance)`` before summing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio
from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from redis.exceptions import RedisError

from shared import keys, metrics
from shared.models import LIVE_STATES
from shared.pricing import PriceTable
from shared.queues import ALL_QUEUES
from shared.runner_registry import RunnerEntry, RunnerRegistry
from shared.usage_totals import COMPONENTS, totals_from_hash

log = logging.getLogger("switchboard.metrics")

READ_TIMEOUT_S = 2.0
"""A scrape gives up on Redis after this and reports ``switchboard_redis_up 0``."""
MAX_LIVE_CALLS = 100_000
"""Live calls read per scrape at most (two small fields each)."""
RUNNER_DEAD_AFTER_S = 5.0
"""A runner whose heartbeat (about every second) is this old counts as dead."""
KOMBU_PRIORITY_SEP = "\x06\x16"
KOMBU_PRIORITY_STEPS = (3, 6, 9)
"""kombu keeps messages of priority > 0 in extra lists: ``<queue>\\x06\\x16<step>``."""
PENDING_QUEUE = "pending_calls"
_STATES = sorted(state.value for state in LIVE_STATES)


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


@dataclass(frozen=True)
class ClusterSnapshot:
    """What one scrape read from Redis (raw enough to be rendered by a pure function)."""

    now_s: float
    live: Mapping[tuple[str, str], int] = field(default_factory=dict)
    """(profile, state) -> live calls; profile ``""`` until routing chose one."""
    stats: Mapping[Any, Any] = field(default_factory=dict)
    profile_stats: Mapping[str, Mapping[Any, Any]] = field(default_factory=dict)
    slots: Mapping[str, int] = field(default_factory=dict)
    queues: Mapping[str, int] = field(default_factory=dict)
    runners: Sequence[RunnerEntry] = ()


async def read_cluster(client: redis.asyncio.Redis, now_s: float) -> ClusterSnapshot:
    """Read the snapshot (raises ``RedisError``/``OSError`` when Redis fails)."""
    pipe = client.pipeline(transaction=False)
    pipe.zrange(keys.LIVE_CALLS, 0, MAX_LIVE_CALLS - 1)
    pipe.hgetall(keys.STATS)
    pipe.smembers(keys.STATS_PROFILES)
    pipe.hvals(keys.ADMISSION_HOLDERS)
    pipe.llen(keys.PENDING_CALLS)
    for queue in ALL_QUEUES:
        pipe.llen(queue)
        for step in KOMBU_PRIORITY_STEPS:
            pipe.llen(f"{queue}{KOMBU_PRIORITY_SEP}{step}")
    first, runners = await asyncio.gather(
        pipe.execute(), RunnerRegistry(client, "metrics").entries()
    )
    ids, stats, profile_set, holders, pending, *lengths = first
    profiles = sorted(_text(p) for p in profile_set)
    per_queue = 1 + len(KOMBU_PRIORITY_STEPS)
    queues = {
        queue: sum(lengths[i * per_queue : (i + 1) * per_queue])
        for i, queue in enumerate(ALL_QUEUES)
    }
    queues[PENDING_QUEUE] = int(pending)

    pipe = client.pipeline(transaction=False)
    for call_id in ids:
        pipe.hmget(keys.call_record(_text(call_id)), ["state", "profile"])
    for profile in profiles:
        pipe.hgetall(keys.stats_profile(profile))
    replies = await pipe.execute() if ids or profiles else []
    live: Tally[tuple[str, str]] = Tally()
    for state, profile in replies[: len(ids)]:
        # The index is a hint: entries whose record is gone or terminal are skipped.
        if state is not None and _text(state) in _STATES:
            live[(_text(profile) if profile is not None else "", _text(state))] += 1
    return ClusterSnapshot(
        now_s=now_s,
        live=live,
        stats=stats,
        profile_stats=dict(zip(profiles, replies[len(ids) :], strict=True)),
        slots=Tally(_text(p) for p in holders),
        queues=queues,
        runners=runners,
    )


def _gauge(spec: metrics.MetricSpec) -> GaugeMetricFamily:
    return GaugeMetricFamily(spec.name, spec.help, labels=spec.labels)


def _counter(spec: metrics.MetricSpec) -> CounterMetricFamily:
    return CounterMetricFamily(spec.name, spec.help, labels=spec.labels)


def cluster_families(snapshot: ClusterSnapshot, table: PriceTable) -> list[Metric]:
    """The snapshot as metric families (pure)."""
    known = sorted({*snapshot.profile_stats, *snapshot.slots, *(p for p, _ in snapshot.live)})
    active = _gauge(metrics.CALLS_ACTIVE)
    for profile in sorted({"", *known}):
        for state in _STATES:
            active.add_metric([profile, state], snapshot.live.get((profile, state), 0))

    calls = _counter(metrics.CALLS)
    for (outcome, reason), n in sorted(totals_from_hash(snapshot.stats, table).outcomes.items()):
        calls.add_metric([outcome, reason], n)

    cost, tokens, responses = (
        _counter(metrics.COST),
        _counter(metrics.TOKENS),
        _counter(metrics.RESPONSES),
    )
    for profile, raw in sorted(snapshot.profile_stats.items()):
        totals = totals_from_hash(raw, table)
        for model, counts in sorted(totals.tokens_by_model.items()):
            for name in COMPONENTS:
                n = getattr(counts, name)
                if n:
                    tokens.add_metric([profile, model, name.removesuffix("_tokens")], n)
        for model, model_cost in sorted(totals.cost_by_model.items()):
            for component, usd in model_cost.components_usd().items():
                if usd:
                    cost.add_metric([profile, model, component], float(usd))
        for model, n in sorted(totals.responses_by_model.items()):
            responses.add_metric([profile, model], n)
        if totals.unpriced_models:
            log.warning("profile %s: models without prices: %s", profile, totals.unpriced_models)

    slots = _gauge(metrics.ADMISSION_SLOTS)
    for profile in known:
        slots.add_metric([profile], snapshot.slots.get(profile, 0))
    queues = _gauge(metrics.QUEUE_LENGTH)
    for queue, n in sorted(snapshot.queues.items()):
        queues.add_metric([queue], n)
    return [active, calls, cost, tokens, responses, slots, queues, *_runner_families(snapshot)]


def _runner_families(snapshot: ClusterSnapshot) -> list[Metric]:
    states = {"alive": 0, "draining": 0, "dead": 0}
    capacity = load = 0
    for entry in snapshot.runners:
        if not entry.alive(snapshot.now_s, RUNNER_DEAD_AFTER_S):
            states["dead"] += 1
            continue
        load += entry.load
        if entry.draining:
            states["draining"] += 1
        else:
            states["alive"] += 1
            capacity += entry.capacity
    runners = _gauge(metrics.RUNNERS)
    for state, n in states.items():
        runners.add_metric([state], n)
    pool_capacity = _gauge(metrics.RUNNER_POOL_CAPACITY)
    pool_capacity.add_metric([], capacity)
    pool_calls = _gauge(metrics.RUNNER_POOL_CALLS)
    pool_calls.add_metric([], load)
    return [runners, pool_capacity, pool_calls]


class _Families:
    """A one-shot collector over already built families, for ``generate_latest``."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self._families


class ClusterView:
    """Reads and renders the cluster view for one ingress app."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        price_table: Callable[[], PriceTable],
        *,
        clock: Callable[[], float] = time.time,
        timeout_s: float = READ_TIMEOUT_S,
    ) -> None:
        self._redis = client
        self._prices = price_table
        self._clock = clock
        self._timeout_s = timeout_s

    async def families(self) -> list[Metric]:
        """The cluster families, or only ``switchboard_redis_up 0`` if Redis failed."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout_s):
                snapshot = await read_cluster(self._redis, self._clock())
            found = cluster_families(snapshot, self._prices())
            up = 1
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("cluster view not read: %s: %s", type(exc).__name__, exc)
            found, up = [], 0
        redis_up = _gauge(metrics.REDIS_UP)
        redis_up.add_metric([], up)
        took = _gauge(metrics.CLUSTER_SCRAPE)
        took.add_metric([], time.perf_counter() - started)
        return [*found, redis_up, took]

    async def render(self) -> bytes:
        """The cluster view in the Prometheus text format."""
        return generate_latest(_Families(await self.families()))
