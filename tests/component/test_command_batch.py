"""Coalescing of concurrent callers' commands into one pipeline, on a real Redis."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis
import redis.asyncio
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError

from shared.command_batch import CommandBatch
from shared.models import CallRecord, CallState
from shared.store import AsyncCallStore
from tests.support.ports import free_port


class CountingRedis(redis.asyncio.Redis):
    """A real client that counts the pipelines it hands out."""

    pipelines = 0

    def pipeline(self, *args: Any, **kwargs: Any) -> Any:
        self.pipelines += 1
        return super().pipeline(*args, **kwargs)


async def test_concurrent_callers_share_one_pipeline_and_get_their_own_replies(
    redis_url: str,
) -> None:
    client = CountingRedis.from_url(redis_url, decode_responses=True)
    batch = CommandBatch(client)
    try:
        replies = await asyncio.gather(
            batch.execute([("SET", "a", "1"), ("GET", "a")]),
            batch.execute([("INCR", "n"), ("INCR", "n")]),
            batch.execute([("EVALSHA", "0" * 40, 0)]),
            batch.execute([("LPUSH", "l", "x"), ("LRANGE", "l", 0, -1)]),
        )
        assert client.pipelines == 1
        assert replies[0] == [True, "1"]
        assert replies[1] == [1, 2]
        [missing_script] = replies[2]
        assert isinstance(missing_script, NoScriptError)  # only that caller sees it
        assert replies[3] == [1, ["x"]]
        # A later turn is a new pipeline.
        assert await batch.execute([("GET", "a")]) == ["1"]
        assert client.pipelines == 2
    finally:
        await client.aclose()


async def test_a_dead_connection_fails_every_caller_of_the_turn() -> None:
    client = redis.asyncio.Redis(port=free_port(), socket_connect_timeout=0.5)
    batch = CommandBatch(client)
    results = await asyncio.gather(
        batch.execute([("PING",)]), batch.execute([("PING",)]), return_exceptions=True
    )
    assert all(isinstance(r, RedisConnectionError) for r in results), results
    await client.aclose()


def test_one_batch_serves_successive_event_loops(redis_url: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    batch = CommandBatch(client)

    async def ping() -> list[Any]:
        try:
            return await batch.execute([("PING",)])
        finally:
            await client.connection_pool.disconnect()

    assert asyncio.run(ping()) == [True]
    assert asyncio.run(ping()) == [True]
    asyncio.run(client.aclose())


async def test_the_async_store_reloads_scripts_redis_forgot(
    redis_url: str, redis_client: redis.Redis
) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    store = AsyncCallStore(client)
    record = CallRecord(id="rtc_1", webhook_id="wh_1", created_at=1.0)
    try:
        await store.create_incoming(record)
        redis_client.script_flush()
        results = await asyncio.gather(
            store.transition("rtc_1", CallState.INCOMING, CallState.ACCEPTING),
            store.update("rtc_1", {"owner": "r1"}),
        )
        assert [r.applied for r in results] == [True, True]
        assert redis_client.hget("sb:call:{rtc_1}", "owner") == "r1"
    finally:
        await client.aclose()


@pytest.mark.parametrize("count", [1, 700])
async def test_large_turns_are_split_but_every_reply_arrives(redis_url: str, count: int) -> None:
    client = CountingRedis.from_url(redis_url)
    batch = CommandBatch(client)
    try:
        replies = await asyncio.gather(*(batch.execute([("INCR", "k")]) for _ in range(count)))
        assert sorted(r[0] for r in replies) == list(range(1, count + 1))
        assert client.pipelines == (1 if count == 1 else 2)
    finally:
        await client.aclose()
