"""The runner registry and the sweep that re-queues calls nobody holds (real Redis)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
import redis
import redis.asyncio

from shared import keys
from shared.runner_registry import RunnerRegistry, list_runners, request_drain
from workers.sessions.lease import Leases
from workers.sessions.sweeper import Sweeper

DEAD_AFTER_S = 3.0


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    connection = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    try:
        yield connection
    finally:
        await connection.aclose()


def _call(redis_client: redis.Redis, call_id: str, state: str) -> None:
    redis_client.hset(keys.call_record(call_id), mapping={"id": call_id, "state": state})


def _runner(redis_client: redis.Redis, runner_id: str, beat_at: float, calls: list[str]) -> None:
    redis_client.zadd(keys.RUNNERS, {runner_id: beat_at})
    redis_client.hset(keys.runner(runner_id), mapping={"capacity": 10, "load": len(calls)})
    if calls:
        redis_client.sadd(keys.runner_calls(runner_id), *calls)


async def test_a_dead_runners_unheld_live_calls_go_back_to_the_front_of_the_queue(
    client: redis.asyncio.Redis, redis_client: redis.Redis
) -> None:
    now = time.time()
    redis_client.lpush(keys.PENDING_CALLS, "rtc_waiting")
    calls = [("rtc_orphan", "active"), ("rtc_over", "ended"), ("rtc_taken", "active")]
    for call_id, state in calls:
        _call(redis_client, call_id, state)
    _call(redis_client, "rtc_in_inbox", "accepting")
    _runner(redis_client, "dead", now - 60, ["rtc_orphan", "rtc_over", "rtc_taken"])
    redis_client.lpush(keys.runner_inbox("dead"), "rtc_in_inbox")
    _call(redis_client, "rtc_alive", "active")
    _runner(redis_client, "alive", now, ["rtc_alive"])
    assert await Leases(client, "other", 3.0).acquire("rtc_taken") is not None

    sweeper = Sweeper(client, RunnerRegistry(client, "me"), DEAD_AFTER_S)
    assert await sweeper.sweep(busy=()) == 2

    pending = redis_client.lrange(keys.PENDING_CALLS, 0, -1)
    assert pending[0] == "rtc_waiting"  # LPUSHed work stays behind re-queued calls
    assert sorted(pending[1:]) == ["rtc_in_inbox", "rtc_orphan"]
    assert redis_client.smembers(keys.runner_calls("dead")) == set()
    assert redis_client.smembers(keys.runner_calls("alive")) == {"rtc_alive"}

    assert await sweeper.sweep(busy=()) == 0  # nothing twice; the dead runner is forgotten
    assert redis_client.zscore(keys.RUNNERS, "dead") is None
    assert redis_client.zscore(keys.RUNNERS, "alive") is not None


async def test_a_dead_runners_lease_is_waited_out_before_its_call_moves(
    client: redis.asyncio.Redis, redis_client: redis.Redis
) -> None:
    _call(redis_client, "rtc_x", "active")
    _runner(redis_client, "dying", time.time() - 60, ["rtc_x"])
    assert await Leases(client, "dying", 3.0).acquire("rtc_x") is not None

    sweeper = Sweeper(client, RunnerRegistry(client, "me"), DEAD_AFTER_S)
    assert await sweeper.sweep(busy=()) == 0
    assert redis_client.smembers(keys.runner_calls("dying")) == {"rtc_x"}


async def test_a_runner_requeues_calls_it_lost_but_not_those_it_hosts(
    client: redis.asyncio.Redis, redis_client: redis.Redis
) -> None:
    for call_id in ("rtc_hosted", "rtc_lost"):
        _call(redis_client, call_id, "active")
    _runner(redis_client, "me", time.time(), ["rtc_hosted", "rtc_lost"])
    redis_client.lpush(keys.runner_inbox("me"), "rtc_being_taken")

    sweeper = Sweeper(client, RunnerRegistry(client, "me"), DEAD_AFTER_S)
    assert await sweeper.sweep(busy={"rtc_hosted"}) == 1
    assert redis_client.lrange(keys.PENDING_CALLS, 0, -1) == ["rtc_lost"]
    assert redis_client.smembers(keys.runner_calls("me")) == {"rtc_hosted"}
    assert redis_client.lrange(keys.runner_inbox("me"), 0, -1) == ["rtc_being_taken"]


async def test_beats_announce_the_runner_and_carry_an_operators_drain_request(
    client: redis.asyncio.Redis, redis_client: redis.Redis
) -> None:
    registry = RunnerRegistry(client, "r1")
    assert not request_drain(redis_client, "r1")  # not registered yet
    assert not await registry.beat(capacity=50, load=3, draining=False)

    [entry] = list_runners(redis_client)
    assert (entry.runner_id, entry.capacity, entry.load, entry.draining) == ("r1", 50, 3, False)
    assert entry.alive(time.time(), DEAD_AFTER_S)
    assert entry.spare == 47
    assert 0 < redis_client.ttl(keys.runner("r1")) <= keys.RUNNER_TTL_S

    assert request_drain(redis_client, "r1")
    assert await registry.beat(capacity=50, load=3, draining=True)
    [entry] = await registry.entries()
    assert entry.draining
    assert entry.spare == 0

    await registry.forget("r1")
    assert list_runners(redis_client) == []


async def test_a_restarted_runner_ignores_a_drain_asked_of_its_predecessor(
    client: redis.asyncio.Redis, redis_client: redis.Redis
) -> None:
    assert not await RunnerRegistry(client, "r1").beat(capacity=5, load=0, draining=False)
    assert request_drain(redis_client, "r1")
    assert not await RunnerRegistry(client, "r1").beat(capacity=5, load=0, draining=False)
