"""Usage reported while Redis is away is counted once Redis is back (within the
deadline), and given up with the error after it; nothing is counted twice."""

from __future__ import annotations

import asyncio
import signal
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
import redis.asyncio

from shared import keys
from shared.accounting import AsyncAccounting
from shared.pricing import cost_of, default_price_table
from shared.store import CallStore
from tests.component.test_accounting import new_call, usage
from tests.support.redis_server import start_redis

TABLE = default_price_table()
USAGE = usage(text_in=900, audio_in=400, cached_text=500, text_out=30, audio_out=700)


def record_cost(url: str, call_id: str) -> Decimal:
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        record = CallStore(client).get(call_id)
    finally:
        client.close()
    assert record is not None
    return record.cost_usd


async def test_usage_offered_while_redis_is_down_is_counted_when_it_returns(
    tmp_path: Path,
) -> None:
    server, url = start_redis(tmp_path, appendonly=True)
    port = urlsplit(url).port
    client = redis.asyncio.Redis.from_url(url)
    try:
        setup = redis.Redis.from_url(url)
        new_call(setup, "rtc_away")
        setup.close()
        assert server.stop(signal.SIGTERM) == 0  # AOF written: the call survives

        retried = asyncio.Event()
        books = AsyncAccounting(client, TABLE)
        accrual = asyncio.create_task(
            books.accrue_retrying(
                "rtc_away",
                "support",
                "gpt-realtime",
                "resp_1",
                USAGE,
                deadline_s=30.0,
                on_retry=lambda exc: retried.set(),
            )
        )
        await retried.wait()
        assert not accrual.done()
        server, _ = await asyncio.to_thread(start_redis, tmp_path, True, port)
        counted = await accrual

        expected = cost_of(USAGE, "gpt-realtime", TABLE).total_usd
        assert counted.counted
        assert counted.call_cost_usd == expected
        assert record_cost(url, "rtc_away") == expected
        again = await books.accrue("rtc_away", "support", "gpt-realtime", "resp_1", USAGE)
        assert not again.counted
        assert record_cost(url, "rtc_away") == expected
    finally:
        await client.aclose()
        server.stop(signal.SIGKILL)


async def test_usage_is_given_up_with_the_error_after_the_deadline(tmp_path: Path) -> None:
    server, url = start_redis(tmp_path)
    server.stop(signal.SIGKILL)
    client = redis.asyncio.Redis.from_url(url)
    errors: list[Exception] = []
    try:
        books = AsyncAccounting(client, TABLE)
        with pytest.raises(redis.ConnectionError):
            await books.accrue_retrying(
                "rtc_gone",
                "support",
                "gpt-realtime",
                "resp_1",
                USAGE,
                deadline_s=0.3,
                on_retry=errors.append,
            )
        assert errors
        assert all(isinstance(error, redis.ConnectionError) for error in errors)
    finally:
        await client.aclose()


class LosesStepTwoOnce(redis.asyncio.Redis):
    """A client whose first pipeline fails to execute, as when Redis dies between an
    accrual's two steps (step 1 done, the cluster counters not)."""

    lost = 0

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction, shard_hint)
        if not self.lost:
            self.lost += 1

            async def lost(*args: Any, **kwargs: Any) -> Any:
                raise redis.ConnectionError("Connection closed by server.")

            pipe.execute = lost  # type: ignore[method-assign]
        return pipe


async def test_a_retry_after_step_one_finishes_the_cluster_counters_once(
    redis_url: str,
) -> None:
    setup = redis.Redis.from_url(redis_url)
    new_call(setup, "rtc_half")
    setup.close()
    client = LosesStepTwoOnce.from_url(redis_url)
    retried: list[Exception] = []
    try:
        books = AsyncAccounting(client, TABLE)
        await books.accrue_retrying(
            "rtc_half", "support", "gpt-realtime", "resp_1", USAGE,
            deadline_s=10.0, on_retry=retried.append,
        )  # fmt: skip
        assert len(retried) == 1
        expected = cost_of(USAGE, "gpt-realtime", TABLE).total_usd
        assert (await books.cluster_totals()).cost_usd == expected
        assert (await books.cluster_totals()).responses == 1
        assert record_cost(redis_url, "rtc_half") == expected
        assert await client.hget(keys.call_counted("rtc_half"), "resp_1") == b"done"
    finally:
        await client.aclose()
