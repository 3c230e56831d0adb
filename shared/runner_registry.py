"""The runner registry: who runs, with what capacity and load, alive or draining.

Each runner beats every second or so: its hash ``keys.runner(id)`` (host, pid,
capacity, load, draining, started and last beat) with a TTL, its score in the
``keys.RUNNERS`` zset (the time of the beat), and the TTLs of its call set and inbox.
A runner whose last beat is older than ``dead_after_s`` is dead for the others: its
calls are swept (by the runners' sweeper) and, once empty, it is forgotten.

``request_drain`` (for ``switchboard runners drain ID`` and the admin API) sets the
``drain_requested`` field that the runner reads back with every beat; ``list_runners``
is the registry as operators see it. Both are synchronous, for the command line.

A runner id is 1 to 128 letters, digits or ``_.@+-`` (``valid_runner_id``): it is
part of the runner's key names, so one with a ``:`` could name another runner's call
set or command list, and braces would move a key's hash tag.
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio

from shared import keys

DRAIN_FIELD = "drain_requested"
RUNNER_ID_PATTERN = r"^[A-Za-z0-9_.@+-]{1,128}$"
"""What a runner id may be (also published in the admin API's OpenAPI document)."""
RUNNER_ID_RULE = "runner ids are 1-128 letters, digits or _.@+-"
_RUNNER_ID = re.compile(RUNNER_ID_PATTERN)


def valid_runner_id(runner_id: object) -> bool:
    """Whether ``runner_id`` can name a runner (see the module docstring)."""
    return isinstance(runner_id, str) and _RUNNER_ID.fullmatch(runner_id) is not None


@dataclass(frozen=True, slots=True)
class RunnerEntry:
    """One runner as the registry knows it."""

    runner_id: str
    heartbeat_at: float
    host: str = ""
    pid: int = 0
    capacity: int = 0
    load: int = 0
    draining: bool = False
    started_at: float = 0.0

    def alive(self, now_s: float, dead_after_s: float) -> bool:
        return self.heartbeat_at >= now_s - dead_after_s

    @property
    def spare(self) -> int:
        return 0 if self.draining else max(0, self.capacity - self.load)


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _entries(
    scored: Sequence[tuple[Any, float]], hashes: Sequence[Mapping[Any, Any]]
) -> list[RunnerEntry]:
    found = []
    for (member, score), raw in zip(scored, hashes, strict=True):
        fields = {_text(k): _text(v) for k, v in raw.items()}
        found.append(
            RunnerEntry(
                runner_id=_text(member),
                heartbeat_at=float(score),
                host=fields.get("host", ""),
                pid=int(fields.get("pid", 0)),
                capacity=int(fields.get("capacity", 0)),
                load=int(fields.get("load", 0)),
                draining=fields.get("draining") == "1" or DRAIN_FIELD in fields,
                started_at=float(fields.get("started_at", 0.0)),
            )
        )
    return found


class RunnerRegistry:
    """One runner's side of the registry (asyncio)."""

    def __init__(self, client: redis.asyncio.Redis, runner_id: str) -> None:
        if not valid_runner_id(runner_id):
            raise ValueError(f"invalid runner id {runner_id!r}: {RUNNER_ID_RULE}")
        self._redis = client
        self.runner_id = runner_id
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.started_at = time.time()
        self._announced = False

    async def beat(self, capacity: int, load: int, draining: bool) -> bool:
        """Announce this runner; whether an operator asked it to drain."""
        now_s = time.time()
        me = keys.runner(self.runner_id)
        fields = {
            "host": self.host,
            "pid": self.pid,
            "capacity": capacity,
            "load": load,
            "draining": int(draining),
            "started_at": self.started_at,
            "heartbeat_at": now_s,
        }
        pipe = self._redis.pipeline(transaction=False)
        if not self._announced:
            # A drain asked of an earlier runner with this id is not meant for this one.
            pipe.hdel(me, DRAIN_FIELD)
        pipe.hset(me, mapping=fields)
        pipe.expire(me, keys.RUNNER_TTL_S)
        pipe.zadd(keys.RUNNERS, {self.runner_id: now_s})
        pipe.expire(keys.runner_calls(self.runner_id), keys.RUNNER_TTL_S)
        pipe.expire(keys.runner_inbox(self.runner_id), keys.RUNNER_TTL_S)
        pipe.expire(keys.runner_commands(self.runner_id), keys.RUNNER_TTL_S)
        pipe.hexists(me, DRAIN_FIELD)
        replies = await pipe.execute()
        self._announced = True
        return bool(replies[-1])

    async def entries(self) -> list[RunnerEntry]:
        """Every registered runner, alive or not."""
        scored = await self._redis.zrange(keys.RUNNERS, 0, -1, withscores=True)
        pipe = self._redis.pipeline(transaction=False)
        for member, _ in scored:
            pipe.hgetall(keys.runner(_text(member)))
        return _entries(scored, await pipe.execute() if scored else [])

    async def forget(self, runner_id: str) -> None:
        """Remove a runner and its keys from the registry (it left, or died and was swept)."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.zrem(keys.RUNNERS, runner_id)
        pipe.delete(keys.runner(runner_id), keys.runner_calls(runner_id))
        pipe.delete(keys.runner_inbox(runner_id), keys.runner_commands(runner_id))
        await pipe.execute()


def request_drain(client: redis.Redis, runner_id: str) -> bool:
    """Ask a runner to hand its calls over and stop; false if no such runner is registered.

    An id no runner can have (``valid_runner_id``) is never registered.
    """
    if not valid_runner_id(runner_id):
        return False
    key = keys.runner(runner_id)
    if not client.exists(key):
        return False
    client.hset(key, DRAIN_FIELD, repr(time.time()))
    return True


def list_runners(client: redis.Redis) -> list[RunnerEntry]:
    """Every registered runner with its last beat, capacity, load and draining flag."""
    scored: list[tuple[Any, float]] = client.zrange(keys.RUNNERS, 0, -1, withscores=True)  # type: ignore[assignment]
    pipe = client.pipeline(transaction=False)
    for member, _ in scored:
        pipe.hgetall(keys.runner(_text(member)))
    return _entries(scored, pipe.execute() if scored else [])
