"""Call leases with fencing: at most one session worker acts on a call at any moment.

A lease is the string key ``shared.keys.call_lease`` holding ``"<token>:<runner id>"``
with a TTL; ``token`` comes from ``INCR`` on the call's fence key, so every grant of the
lease has a larger token than any before it. The holder renews it well within the TTL;
a runner that dies stops renewing and the lease expires, freeing the call.

Every write a session worker makes about its call goes through ``fenced``: one Lua
script that first checks the lease still holds this very grant, and only then runs the
writes. A stale worker (its lease expired and was granted again) therefore changes
nothing; it learns so from the reply (``Stale``) and stops. All keys of one script are
the call's own keys (one hash slot, see ``shared.keys``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio
from redis.commands.core import AsyncScript

from shared import keys
from shared.models import CallState, check_transition, encode_fields

# KEYS: lease, fence. ARGV: runner id, ttl ms, fence ttl s. Reply: the lease value or false.
_ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local token = redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[3])
local value = token .. ':' .. ARGV[1]
redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
return value
"""

# KEYS: lease. ARGV: value, ttl ms. Reply: 1 if renewed.
_RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

# KEYS: lease. ARGV: value. Reply: 1 if released.
_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""

# KEYS: lease, then the keys the operations name by index. ARGV: value, operations as a
# JSON list of [command, key index, args...]. Reply: {1, reply of each} or {0} if stale.
_FENCED = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {0} end
local replies = {1}
for _, op in ipairs(cjson.decode(ARGV[2])) do
  local args = {}
  for i = 3, #op do args[#args + 1] = op[i] end
  local reply = redis.call(op[1], KEYS[op[2]], unpack(args))
  if type(reply) == 'table' and reply.ok then reply = reply.ok end
  replies[#replies + 1] = reply
end
return replies
"""

# KEYS: lease, record. ARGV: value, record ttl, n, n allowed states, field pairs.
# Reply: {0} if stale, else {1, applied, state now ('' when there is no such call)}.
_TRANSITION = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {0} end
local state = redis.call('HGET', KEYS[2], 'state')
if not state then return {1, 0, ''} end
local n = tonumber(ARGV[3])
local allowed = false
for i = 4, 3 + n do
  if ARGV[i] == state then allowed = true end
end
if not allowed then return {1, 0, state} end
redis.call('HSET', KEYS[2], unpack(ARGV, 4 + n))
redis.call('EXPIRE', KEYS[2], ARGV[2])
return {1, 1, redis.call('HGET', KEYS[2], 'state')}
"""

Op = tuple[str | int | float, ...]
"""One fenced write: a Redis command, the call key it acts on, then its other arguments."""


class Stale(Exception):
    """The lease is no longer this grant: another worker owns the call now."""


@dataclass(frozen=True, slots=True)
class Lease:
    """One grant of a call's lease to one runner; ``token`` orders grants."""

    call_id: str
    runner_id: str
    token: int

    @property
    def value(self) -> str:
        return f"{self.token}:{self.runner_id}"

    @classmethod
    def parse(cls, call_id: str, value: str) -> Lease:
        token, _, runner_id = value.partition(":")
        return cls(call_id, runner_id, int(token))


@dataclass(frozen=True, slots=True)
class Transition:
    """The answer of a fenced state change."""

    applied: bool
    state: CallState | None


def _arg(value: str | int | float) -> str:
    # Lua would print a float such as a timestamp in %.14g: pass exact text instead.
    return value if isinstance(value, str) else repr(value)


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


class FencedScript:
    """A script that checks the lease itself before it writes (``Leases.script``)."""

    def __init__(self, script: AsyncScript) -> None:
        self._script = script

    async def run(
        self, lease: Lease, script_keys: Sequence[str], args: Sequence[str | int | float]
    ) -> list[Any]:
        """Its replies after the leading 1; raises ``Stale``. ``script_keys`` are the call's
        own keys (the lease is put first)."""
        for key in script_keys:
            if keys.hash_slot_tag(key) != lease.call_id:
                raise ValueError(f"{key} is not a key of call {lease.call_id}")
        reply = await self._script(
            keys=[keys.call_lease(lease.call_id), *script_keys],
            args=[lease.value, *map(_arg, args)],
        )
        if not int(reply[0]):
            raise Stale(f"lease of {lease.call_id} (token {lease.token}) is gone")
        return list(reply[1:])


class Leases:
    """Grants, renews and releases call leases, and runs fenced writes, for one runner."""

    def __init__(self, client: redis.asyncio.Redis, runner_id: str, ttl_s: float) -> None:
        self._redis = client
        self.runner_id = runner_id
        self.ttl_ms = int(ttl_s * 1000)
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._fenced = client.register_script(_FENCED)
        self._transition = client.register_script(_TRANSITION)

    async def acquire(self, call_id: str) -> Lease | None:
        """A new grant of the call's lease, or ``None`` while someone else holds it."""
        script_keys = [keys.call_lease(call_id), keys.call_fence(call_id)]
        value = await self._acquire(
            keys=script_keys, args=[self.runner_id, self.ttl_ms, keys.CALL_TTL_S]
        )
        return Lease.parse(call_id, _text(value)) if value else None

    async def holder(self, call_id: str) -> Lease | None:
        """Who holds the call's lease now, if anyone."""
        value = await self._redis.get(keys.call_lease(call_id))
        return Lease.parse(call_id, _text(value)) if value else None

    async def renew(self, leases: Sequence[Lease]) -> list[bool]:
        """Renew many leases in one round trip; false where a lease is no longer ours."""
        if not leases:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for lease in leases:
            await self._renew(
                keys=[keys.call_lease(lease.call_id)], args=[lease.value, self.ttl_ms], client=pipe
            )
        replies = await pipe.execute()
        return [bool(int(reply)) for reply in replies]

    async def release(self, lease: Lease) -> bool:
        """Give the call up at once (a hand-over); false if the lease was not ours."""
        reply = await self._release(keys=[keys.call_lease(lease.call_id)], args=[lease.value])
        return bool(int(reply))

    async def fenced(self, lease: Lease, ops: Iterable[Op]) -> list[Any]:
        """Run ``ops`` atomically if ``lease`` still holds; their replies. Raises ``Stale``."""
        script_keys = [keys.call_lease(lease.call_id)]
        encoded: list[list[str | int]] = []
        for command, key, *args in ops:
            key = str(key)
            if keys.hash_slot_tag(key) != lease.call_id:
                raise ValueError(f"{key} is not a key of call {lease.call_id}")
            if key not in script_keys:
                script_keys.append(key)
            encoded.append([str(command), script_keys.index(key) + 1, *map(_arg, args)])
        reply = await self._fenced(keys=script_keys, args=[lease.value, orjson.dumps(encoded)])
        if not int(reply[0]):
            raise Stale(f"lease of {lease.call_id} (token {lease.token}) is gone")
        return list(reply[1:])

    def script(self, text: str) -> FencedScript:
        """A Lua script of the caller's own, run with ``FencedScript.run``: its KEYS[1] is
        the lease and ARGV[1] the lease value; it must answer ``{0}`` when ``GET
        KEYS[1]`` is not ARGV[1] (stale) and ``{1, ...}`` after doing its work."""
        return FencedScript(self._redis.register_script(text))

    async def transition(
        self,
        lease: Lease,
        from_states: Iterable[CallState],
        to_state: CallState,
        fields: Mapping[str, object],
        now_s: float,
    ) -> Transition:
        """Compare-and-set the call's state, fenced by ``lease``. Raises ``Stale``."""
        sources = sorted(set(from_states))
        check_transition(frozenset(sources), to_state)
        args: list[str | int | float] = [lease.value, keys.CALL_TTL_S, len(sources)]
        args += [state.value for state in sources]
        for name, value in encode_fields({**fields, "updated_at": now_s}).items():
            args += (name, value)
        args += ("state", to_state.value)
        script_keys = [keys.call_lease(lease.call_id), keys.call_record(lease.call_id)]
        reply = await self._transition(keys=script_keys, args=args)
        if not int(reply[0]):
            raise Stale(f"lease of {lease.call_id} (token {lease.token}) is gone")
        state = _text(reply[2])
        return Transition(bool(int(reply[1])), CallState(state) if state else None)
