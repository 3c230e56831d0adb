"""Admission control: cluster-wide and per-profile caps on concurrent calls, in Redis.

A slot is a call id in two sorted sets (cluster and profile, score = admitted at) plus
an entry in a holders hash (call id -> profile), all under the ``{admission}`` hash
tag (``shared.keys``) so one Lua script checks the caps and takes the slot atomically
across every worker. Sets of call ids rather than counters make taking and releasing
idempotent (a retried task cannot take two slots, a double release cannot free
someone else's) and make leaks visible: ``holders()`` lists every slot with its age.

Whatever ends a call releases its slot with ``release(call_id)``: the control worker
on reject or failure, the session runner when the call ends. ``AsyncAdmission`` is the
same for asyncio processes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, cast

import redis
import redis.asyncio

from shared import keys
from workers.policy import Load

# KEYS: active, holders, profile set. ARGV: call id, profile, now, cluster cap, profile cap
# (caps: -1 for none). Reply: {granted, why, active, profile active}.
_ACQUIRE = """
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then
  return {1, 'held', redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[3])}
end
local active = redis.call('ZCARD', KEYS[1])
local mine = redis.call('ZCARD', KEYS[3])
local cap, pcap = tonumber(ARGV[4]), tonumber(ARGV[5])
if cap >= 0 and active >= cap then return {0, 'cluster_full', active, mine} end
if pcap >= 0 and mine >= pcap then return {0, 'profile_full', active, mine} end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return {1, 'taken', active + 1, mine + 1}
"""

# KEYS: active, holders, profile set. ARGV: call id, profile. Reply: 1 if a slot was freed.
_RELEASE = """
local held = redis.call('HGET', KEYS[2], ARGV[1])
local freed = redis.call('ZREM', KEYS[1], ARGV[1])
if held == ARGV[2] then
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
  freed = 1
end
return freed
"""


@dataclass(frozen=True)
class Grant:
    """The answer of ``acquire``: whether the call holds a slot now, and the counts."""

    granted: bool
    why: str
    """``taken``, ``held`` (it already had one), ``cluster_full`` or ``profile_full``."""
    active: int
    profile_active: int


@dataclass(frozen=True)
class Holder:
    """One held slot: which call, which profile, since when (unix s)."""

    call_id: str
    profile: str
    admitted_at: float


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def _grant(raw: list[Any]) -> Grant:
    return Grant(bool(int(raw[0])), _text(raw[1]), int(raw[2]), int(raw[3]))


def _acquire_args(
    call_id: str, profile: str, now_s: float, max_calls: int | None, profile_cap: int | None
) -> tuple[list[str], list[str | float | int]]:
    keys.call_record(call_id)  # refuses ids that would break the key scheme
    return (
        [keys.ADMISSION_ACTIVE, keys.ADMISSION_HOLDERS, keys.admission_profile(profile)],
        [
            call_id,
            profile,
            now_s,
            -1 if max_calls is None else max_calls,
            -1 if profile_cap is None else profile_cap,
        ],
    )


class Admission:
    """Synchronous admission control for Celery workers."""

    def __init__(self, client: redis.Redis, *, clock: Callable[[], float] = time.time) -> None:
        self._redis = client
        self._clock = clock
        self._acquire = client.register_script(_ACQUIRE)
        self._release = client.register_script(_RELEASE)

    def acquire(
        self, call_id: str, profile: str, *, max_calls: int | None, profile_cap: int | None
    ) -> Grant:
        """Take a slot for ``call_id`` if both caps allow; idempotent per call id."""
        script_keys, args = _acquire_args(call_id, profile, self._clock(), max_calls, profile_cap)
        return _grant(self._acquire(keys=script_keys, args=args))

    def release(self, call_id: str) -> bool:
        """Give the call's slot back; True if it held one. Safe to call any number of times."""
        profile = cast("bytes | str | None", self._redis.hget(keys.ADMISSION_HOLDERS, call_id))
        if profile is None:
            return bool(self._redis.zrem(keys.ADMISSION_ACTIVE, call_id))
        name = _text(profile)
        script_keys = [keys.ADMISSION_ACTIVE, keys.ADMISSION_HOLDERS, keys.admission_profile(name)]
        return bool(self._release(keys=script_keys, args=[call_id, name]))

    def load(self, profiles: Iterable[str]) -> Load:
        """Slots held now: cluster-wide and for each of ``profiles`` (one round trip)."""
        names = list(profiles)
        pipe = self._redis.pipeline(transaction=False)
        pipe.zcard(keys.ADMISSION_ACTIVE)
        for name in names:
            pipe.zcard(keys.admission_profile(name))
        counts = [int(n) for n in pipe.execute()]
        return Load(active=counts[0], per_profile=dict(zip(names, counts[1:], strict=True)))

    def holders(self) -> list[Holder]:
        """Every held slot, oldest first: a slot much older than any call is a leak."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.zrange(keys.ADMISSION_ACTIVE, 0, -1, withscores=True)
        pipe.hgetall(keys.ADMISSION_HOLDERS)
        members, profiles = pipe.execute()
        named = {_text(k): _text(v) for k, v in profiles.items()}
        return [
            Holder(_text(member), named.get(_text(member), ""), float(score))
            for member, score in members
        ]


class AsyncAdmission:
    """Asynchronous admission control for session runners (release) and other asyncio code."""

    def __init__(
        self, client: redis.asyncio.Redis, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._redis = client
        self._clock = clock
        self._acquire = client.register_script(_ACQUIRE)
        self._release = client.register_script(_RELEASE)

    async def acquire(
        self, call_id: str, profile: str, *, max_calls: int | None, profile_cap: int | None
    ) -> Grant:
        """Take a slot for ``call_id`` if both caps allow; idempotent per call id."""
        script_keys, args = _acquire_args(call_id, profile, self._clock(), max_calls, profile_cap)
        return _grant(await self._acquire(keys=script_keys, args=args))

    async def release(self, call_id: str) -> bool:
        """Give the call's slot back; True if it held one. Safe to call any number of times."""
        profile = await self._redis.hget(keys.ADMISSION_HOLDERS, call_id)  # type: ignore[misc]
        if profile is None:
            return bool(await self._redis.zrem(keys.ADMISSION_ACTIVE, call_id))
        name = _text(profile)
        script_keys = [keys.ADMISSION_ACTIVE, keys.ADMISSION_HOLDERS, keys.admission_profile(name)]
        return bool(await self._release(keys=script_keys, args=[call_id, name]))
