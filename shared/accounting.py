"""Cost accounting: each response's usage counted once, per call, per profile, cluster-wide.

``accrue(call_id, profile, model, response_id, usage)`` is the one way usage enters the
books. It runs in two steps:

1. a Lua script on the call's keys (one hash slot) checks the call exists and that the
   response id is not in the call's ``counted`` hash, then marks it ``pending``, adds
   the token counts to the call's usage hash (``shared.usage_totals`` fields), adds
   them to the record's ``usage`` JSON, and adds the response's exact cost to the
   record's ``cost_usd`` as a decimal string (decimal addition done in Lua on digit
   strings, so no float ever touches it);
2. only if step 1 counted the response, the same counters go into ``sb:stats`` and
   ``sb:stats:profile:<profile>`` with HINCRBY, and the response is marked ``done``, in
   one MULTI/EXEC (all or nothing, so a retry after a lost reply cannot add twice).

The cluster hashes live in other slots, so they cannot join the script on Redis
Cluster. A process that dies between the steps leaves the response ``pending`` (the
mark keeps the counters step 2 owes); an ``accrue`` of the same response id at least
``PENDING_TAKEOVER_S`` later (a replay after failover) takes the mark over and finishes
step 2 instead of skipping it, and so does ``finish_pending``, which needs no replay; a
younger mark belongs to a live writer and is left alone. The runner ending a call calls
``finish_pending_when_due``, which also waits for the younger marks to come due: a
runner killed just before the call ended leaves one, and no replay follows an end.
Offering the same response id any number of times, from any number of processes, is
therefore harmless.

USD totals are derived from the integer token counts with the price table when read
(``call_cost``, ``cluster_totals``, ``profile_totals``), so they reconcile exactly with
the tokens the API reported. ``count_outcome`` bumps the call-outcome counters and, for
an accepted call, its bucket of the setup-latency histogram, in the same round trip.

A response's usage is reported once and never again, so the session runner calls
``AsyncAccounting.accrue_retrying``: a Redis that is away for a moment (a restart, a
failover) is retried with backoff until it answers or the deadline passes; since
accrual is idempotent per response id, a retry after a lost reply counts nothing twice.

Bad input (malformed usage, an unpriced model, a bad label) raises ``ValueError``
before anything is written; an unknown call raises ``CallNotFound``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import redis
import redis.asyncio

from shared import keys
from shared.accrual import (
    ACCRUE,
    MARK,
    PENDING_TAKEOVER_S,
    TAKE_PENDING,
    Accrual,
    PendingStep,
    TakenPending,
    accrual_result,
    outcome_counter,
    plan_accrual,
    taken_pending,
)
from shared.errors import CallNotFound
from shared.outage import through_outage
from shared.pricing import PriceTable, default_price_table
from shared.usage_totals import Totals, check_label, setup_field, totals_from_hash

DUE_MARGIN_S = 0.05
"""Waited beyond a pending mark's due time, for Redis's clock to be past it too."""

__all__ = [
    "PENDING_TAKEOVER_S",
    "Accounting",
    "Accrual",
    "AsyncAccounting",
    "CallNotFound",
    "Totals",
]


def _queue_counters(
    pipe: Any,
    stats_keys: Iterable[str],
    counters: Iterable[tuple[str, int]],
    profile: str | None,
) -> None:
    """Queue the stats increments on ``pipe`` (a sync or an async pipeline: queueing is
    synchronous on both) and note the profile so the cluster view can find it."""
    counters = list(counters)
    for key in stats_keys:
        for name, count in counters:
            pipe.hincrby(key, name, count)
    if profile is not None:
        pipe.sadd(keys.STATS_PROFILES, profile)


def _outcome_counters(name: str, setup_s: float | None) -> list[tuple[str, int]]:
    if setup_s is None:
        return [(name, 1)]
    return [(name, 1), (setup_field(max(0.0, setup_s)), 1)]


def _queue_step_two(pipe: Any, call_id: str, step: PendingStep) -> None:
    _queue_counters(pipe, step.stats_keys, step.counters, step.profile)
    pipe.hset(keys.call_counted(call_id), step.response_id, "done")


class Accounting:
    """Synchronous face, for Celery workers and the command line."""

    def __init__(self, client: redis.Redis, table: PriceTable | None = None) -> None:
        self._redis = client
        self.table = table or default_price_table()
        self._accrue = client.register_script(ACCRUE)
        self._mark = client.register_script(MARK)
        self._take_pending = client.register_script(TAKE_PENDING)

    def accrue(
        self,
        call_id: str,
        profile: str | None,
        model: str,
        response_id: str,
        usage: Mapping[str, Any],
    ) -> Accrual:
        """Count one ``response.done`` usage once (see the module docstring)."""
        plan = plan_accrual(call_id, profile, model, response_id, usage, self.table)
        reply = self._accrue(keys=plan.script_keys, args=plan.script_args)
        result, stats_due = accrual_result(plan, reply)
        if stats_due:
            pipe = self._redis.pipeline(transaction=True)
            _queue_counters(pipe, plan.stats_keys, plan.counters, profile)
            pipe.hset(keys.call_counted(call_id), response_id, "done")
            pipe.execute()
        return result

    def finish_pending(self, call_id: str, *, takeover_s: int = PENDING_TAKEOVER_S) -> int:
        """Finish step 2 of every accrual of the call left pending at least ``takeover_s``
        (by a writer that died between the steps); how many it finished."""
        reply = self._take_pending(keys=[keys.call_counted(call_id)], args=[takeover_s])
        steps = taken_pending(reply, takeover_s).steps
        if steps:
            pipe = self._redis.pipeline(transaction=True)
            for step in steps:
                _queue_step_two(pipe, call_id, step)
            pipe.execute()
        return len(steps)

    def count_outcome(
        self,
        outcome: str,
        profile: str | None,
        reason: str | None = None,
        *,
        call_id: str = "",
        setup_s: float | None = None,
    ) -> bool:
        """Bump a call-outcome counter; with ``call_id`` only once per call and outcome.

        ``setup_s`` (the call's setup latency) is counted in the setup histogram with it.
        """
        name, stats, marker = outcome_counter(outcome, profile, reason)
        if call_id and not self._mark(
            keys=[keys.call_counted(call_id)], args=[keys.CALL_TTL_S, marker]
        ):
            return False
        pipe = self._redis.pipeline(transaction=False)
        _queue_counters(pipe, stats, _outcome_counters(name, setup_s), profile)
        pipe.execute()
        return True

    def call_cost(self, call_id: str) -> Totals:
        """The call's tokens by model and their exact cost (empty for an unknown call)."""
        return totals_from_hash(self._redis.hgetall(keys.call_usage(call_id)), self.table)  # type: ignore[arg-type]

    def cluster_totals(self) -> Totals:
        """Tokens, cost and outcomes of the whole cluster."""
        return totals_from_hash(self._redis.hgetall(keys.STATS), self.table)  # type: ignore[arg-type]

    def profile_totals(self, profile: str) -> Totals:
        """Tokens, cost and outcomes of one routing profile."""
        key = keys.stats_profile(check_label(profile, "profile"))
        return totals_from_hash(self._redis.hgetall(key), self.table)  # type: ignore[arg-type]


class AsyncAccounting:
    """Asynchronous face, for session runners and the ingress."""

    def __init__(self, client: redis.asyncio.Redis, table: PriceTable | None = None) -> None:
        self._redis = client
        self.table = table or default_price_table()
        self._accrue = client.register_script(ACCRUE)
        self._mark = client.register_script(MARK)
        self._take_pending = client.register_script(TAKE_PENDING)

    async def accrue(
        self,
        call_id: str,
        profile: str | None,
        model: str,
        response_id: str,
        usage: Mapping[str, Any],
        *,
        pending_takeover_s: int = PENDING_TAKEOVER_S,
    ) -> Accrual:
        """Count one ``response.done`` usage once (see the module docstring)."""
        plan = plan_accrual(
            call_id, profile, model, response_id, usage, self.table, pending_takeover_s
        )
        reply = await self._accrue(keys=plan.script_keys, args=plan.script_args)
        result, stats_due = accrual_result(plan, reply)
        if stats_due:
            pipe = self._redis.pipeline(transaction=True)
            _queue_counters(pipe, plan.stats_keys, plan.counters, profile)
            pipe.hset(keys.call_counted(call_id), response_id, "done")
            await pipe.execute()
        return result

    async def accrue_retrying(
        self,
        call_id: str,
        profile: str | None,
        model: str,
        response_id: str,
        usage: Mapping[str, Any],
        *,
        deadline_s: float,
        on_retry: Callable[[Exception], None] | None = None,
    ) -> Accrual:
        """``accrue``, retried on connection errors for up to ``deadline_s`` seconds
        (``shared.outage``); ``on_retry`` sees each error that is retried.

        A retry takes over the response's pending mark at once: the failed attempt may
        have done step 1 (its reply lost, or step 2 failed), and the response is offered
        by this caller alone, so only this retry can finish it.
        """
        attempts = 0

        async def attempt() -> Accrual:
            nonlocal attempts
            attempts += 1
            takeover_s = PENDING_TAKEOVER_S if attempts == 1 else 0
            return await self.accrue(
                call_id, profile, model, response_id, usage, pending_takeover_s=takeover_s
            )

        return await through_outage(attempt, deadline_s=deadline_s, on_retry=on_retry)

    async def finish_pending(self, call_id: str, *, takeover_s: int = PENDING_TAKEOVER_S) -> int:
        """Finish step 2 of every accrual of the call left pending at least ``takeover_s``
        (by a writer that died between the steps); how many it finished."""
        return len((await self._finish_pending(call_id, takeover_s)).steps)

    async def finish_pending_when_due(
        self, call_id: str, *, takeover_s: int = PENDING_TAKEOVER_S, rounds: int = 3
    ) -> int:
        """``finish_pending``, then, for marks too young to take over, wait until they
        are due and finish what is still pending then (a live writer finishes its own
        within a round trip, so what is left was a dead writer's). For the end of a call,
        after which no replay will come; at most ``rounds`` waits. How many it finished."""
        taken = await self._finish_pending(call_id, takeover_s)
        finished = len(taken.steps)
        for _ in range(rounds):
            if taken.due_in_s is None:
                break
            await asyncio.sleep(taken.due_in_s + DUE_MARGIN_S)
            taken = await self._finish_pending(call_id, takeover_s)
            finished += len(taken.steps)
        return finished

    async def _finish_pending(self, call_id: str, takeover_s: int) -> TakenPending:
        reply = await self._take_pending(keys=[keys.call_counted(call_id)], args=[takeover_s])
        taken = taken_pending(reply, takeover_s)
        if taken.steps:
            pipe = self._redis.pipeline(transaction=True)
            for step in taken.steps:
                _queue_step_two(pipe, call_id, step)
            await pipe.execute()
        return taken

    async def count_outcome(
        self,
        outcome: str,
        profile: str | None,
        reason: str | None = None,
        *,
        call_id: str = "",
        setup_s: float | None = None,
    ) -> bool:
        """Bump a call-outcome counter; with ``call_id`` only once per call and outcome.

        ``setup_s`` (the call's setup latency) is counted in the setup histogram with it.
        """
        name, stats, marker = outcome_counter(outcome, profile, reason)
        if call_id and not await self._mark(
            keys=[keys.call_counted(call_id)], args=[keys.CALL_TTL_S, marker]
        ):
            return False
        pipe = self._redis.pipeline(transaction=False)
        _queue_counters(pipe, stats, _outcome_counters(name, setup_s), profile)
        await pipe.execute()
        return True

    async def call_cost(self, call_id: str) -> Totals:
        """The call's tokens by model and their exact cost (empty for an unknown call)."""
        raw = await self._redis.hgetall(keys.call_usage(call_id))  # type: ignore[misc]
        return totals_from_hash(raw, self.table)

    async def cluster_totals(self) -> Totals:
        """Tokens, cost and outcomes of the whole cluster."""
        raw = await self._redis.hgetall(keys.STATS)  # type: ignore[misc]
        return totals_from_hash(raw, self.table)

    async def profile_totals(self, profile: str) -> Totals:
        """Tokens, cost and outcomes of one routing profile."""
        key = keys.stats_profile(check_label(profile, "profile"))
        raw = await self._redis.hgetall(key)  # type: ignore[misc]
        return totals_from_hash(raw, self.table)
