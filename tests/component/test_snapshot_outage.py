"""A session's snapshot save rides out a Redis restart, and gives up with the error after
its deadline: the snapshot a takeover loads is the last one saved."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
import redis.asyncio

from tests.support.redis_server import start_redis
from workers.sessions.lease import Leases
from workers.sessions.session_store import SessionStore


async def test_a_snapshot_saved_while_redis_restarts_is_there_when_it_is_back(
    tmp_path: Path,
) -> None:
    server, url = start_redis(tmp_path, appendonly=True)
    port = urlsplit(url).port
    client = redis.asyncio.Redis.from_url(url, decode_responses=True)
    try:
        leases = Leases(client, "r1", 60.0)
        store = SessionStore(client, leases)
        lease = await leases.acquire("rtc_restart")
        assert lease is not None
        assert server.stop(signal.SIGTERM) == 0  # AOF written: the lease survives

        retried = asyncio.Event()
        save = asyncio.create_task(
            store.save_snapshot(
                lease, {"turns": 3}, "9-0", 1.0, outage_s=30.0, on_retry=lambda _: retried.set()
            )
        )
        retrying = asyncio.create_task(retried.wait())
        await asyncio.wait({save, retrying}, return_when=asyncio.FIRST_COMPLETED)
        assert not save.done(), "the save gave up instead of waiting for Redis"
        server, _ = await asyncio.to_thread(start_redis, tmp_path, True, port)
        await save

        snapshot = await store.load_snapshot("rtc_restart")
        assert snapshot is not None
        assert (snapshot["core"], snapshot["command_cursor"]) == ({"turns": 3}, "9-0")
        assert (snapshot["runner"], snapshot["token"]) == ("r1", lease.token)
    finally:
        await client.aclose()
        server.stop(signal.SIGKILL)


async def test_a_snapshot_save_gives_up_with_the_error_after_its_deadline(
    tmp_path: Path,
) -> None:
    server, url = start_redis(tmp_path)
    client = redis.asyncio.Redis.from_url(url, decode_responses=True)
    errors: list[Exception] = []
    try:
        leases = Leases(client, "r1", 60.0)
        store = SessionStore(client, leases)
        lease = await leases.acquire("rtc_gone")
        assert lease is not None
        server.stop(signal.SIGKILL)
        with pytest.raises(redis.ConnectionError):
            await store.save_snapshot(
                lease, {"turns": 1}, "1-0", 1.0, outage_s=0.3, on_retry=errors.append
            )
        assert errors
        assert all(isinstance(error, redis.ConnectionError) for error in errors)
    finally:
        await client.aclose()
