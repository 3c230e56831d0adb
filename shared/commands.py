"""The command path: operators queue commands for live calls, runners apply and answer them.

``enqueue_command`` validates a command (``shared.command_rules``), then a Lua script
on the call's keys checks again that the call exists and is not over and XADDs it to the
call's command stream, so a command never lands on an ended call. The script also
answers who holds the call's lease at that moment, and the enqueuer pushes the call id
onto that runner's command list (``keys.runner_commands``): the runner blocks on that
one list and reads only the streams named there (``read_many``: one pipelined round
trip, one ``XREAD`` per stream, so it works on Redis Cluster), from each call's cursor.
A runner that takes a call on reads its stream once itself, so a command queued while
nobody held the call is not missed either. The returned command id is how the
issuer follows it: the runner applies each command at most once and answers with
``record_result``; ``wait_result`` blocks until that answer or a timeout.

Outcomes live in the call's ``command_results`` hash, first answer wins; recording one
also pushes onto a per-command ``done`` list that waiters block on with BLMOVE from the
list onto itself, so every waiter wakes and the element stays for the next.

Errors: ``CallNotFound`` (no such call), ``CallEnded`` (the call is over) and
``InvalidCommand`` (bad kind or args), all ``InvalidRequest``; nothing is queued.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, cast

import orjson
import redis
import redis.asyncio

from shared import keys
from shared.command_rules import (
    CommandResult,
    InvalidCommand,
    QueuedCommand,
    encode_args,
    parse_entry,
    parse_result,
    validate_command,
)
from shared.errors import CallEnded, CallNotFound
from shared.models import TERMINAL_STATES
from shared.policy import Policy

__all__ = [
    "AsyncCommandQueue",
    "CallEnded",
    "CallNotFound",
    "CommandQueue",
    "CommandResult",
    "InvalidCommand",
    "QueuedCommand",
]

# KEYS: record, stream, lease. ARGV: maxlen, ttl, terminal states joined by ',', field
# pairs. Reply: {1, entry id, lease value or ''} or {0, state} with state '' when there is
# no such call.
ENQUEUE = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {0, ''} end
if string.find(',' .. ARGV[3] .. ',', ',' .. state .. ',', 1, true) then return {0, state} end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', unpack(ARGV, 4))
redis.call('EXPIRE', KEYS[2], ARGV[2])
return {1, id, redis.call('GET', KEYS[3]) or ''}
"""

# KEYS: results hash, done list. ARGV: ttl, done ttl, command id, outcome JSON.
RECORD = """
local new = redis.call('HSETNX', KEYS[1], ARGV[3], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[1])
if new == 1 then
  redis.call('RPUSH', KEYS[2], '1')
  redis.call('EXPIRE', KEYS[2], ARGV[2])
end
return new
"""

_TERMINAL = ",".join(sorted(state.value for state in TERMINAL_STATES))
MIN_BLOCK_S = 0.01

PolicyLike = Policy | Callable[[], Policy] | None


def _str(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def _named_targets(policy: PolicyLike, profile: str | None) -> dict[str, str]:
    current = policy() if callable(policy) else policy
    if current is None:
        return {}
    if profile is not None and profile in current.profiles:
        return current.targets_for(current.profiles[profile])
    return dict(current.transfer_targets)


def _record_key(call_id: str) -> str:
    try:
        return keys.call_record(call_id)
    except ValueError:
        raise CallNotFound(f"no such call {call_id!r}") from None


def _check_state(call_id: str, state: str | None) -> None:
    if not state:
        raise CallNotFound(f"no such call {call_id!r}")
    if state in _TERMINAL.split(","):
        raise CallEnded(f"call {call_id} is {state}: it takes no more commands")


def _entry(
    call_id: str, kind: object, args: object, profile: str | None, policy: PolicyLike, now: float
) -> tuple[str, list[Any]]:
    """The command id and the script arguments of a validated command."""
    checked = validate_command(kind, args, _named_targets(policy, profile))
    command_id = f"cmd_{uuid.uuid4().hex}"
    fields = ["command_id", command_id, "kind", kind, "args", encode_args(checked)]
    fields += ["issued_at", repr(now)]
    return command_id, [keys.COMMANDS_MAXLEN, keys.CALL_TTL_S, _TERMINAL, *fields]


def _enqueue_keys(call_id: str) -> list[str]:
    return [keys.call_record(call_id), keys.call_commands(call_id), keys.call_lease(call_id)]


def _queued(call_id: str, reply: list[Any]) -> str | None:
    """Checks the script's reply; the id of the runner holding the call, if any."""
    if int(reply[0]) != 1:
        _check_state(call_id, _str(reply[1]))
    lease = _str(reply[2]) if len(reply) > 2 and reply[2] else ""
    _, _, runner_id = lease.partition(":")
    return runner_id or None


def _outcome_json(ok: bool, detail: str, at: float) -> bytes:
    return orjson.dumps({"ok": bool(ok), "detail": str(detail), "at": at})


def _streams(raw: Any) -> dict[str, list[QueuedCommand]]:
    """XREAD output as commands by call id."""
    found: dict[str, list[QueuedCommand]] = {}
    for stream, entries in raw or []:
        call_id = keys.hash_slot_tag(_str(stream))
        found[call_id] = [parse_entry(entry_id, fields) for entry_id, fields in entries]
    return found


class CommandQueue:
    """Synchronous face, for the command line and the admin API's workers."""

    def __init__(
        self,
        client: redis.Redis,
        policy: PolicyLike = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = client
        self._policy = policy
        self._clock = clock
        self._enqueue = client.register_script(ENQUEUE)
        self._record = client.register_script(RECORD)

    def enqueue_command(
        self, call_id: str, kind: str, args: Mapping[str, Any] | None = None
    ) -> str:
        """Queue a command for a live call; its command id (see the module docstring)."""
        reply = cast("list[Any]", self._redis.hmget(_record_key(call_id), ["state", "profile"]))
        state, profile = reply
        _check_state(call_id, _str(state) if state else None)
        profile_name = _str(profile) if profile else None
        command_id, argv = _entry(call_id, kind, args, profile_name, self._policy, self._clock())
        holder = _queued(call_id, self._enqueue(keys=_enqueue_keys(call_id), args=argv))
        if holder is not None:
            pipe = self._redis.pipeline(transaction=False)
            pipe.rpush(keys.runner_commands(holder), call_id)
            pipe.expire(keys.runner_commands(holder), keys.RUNNER_TTL_S)
            pipe.execute()
        return command_id

    def read_commands(
        self, call_id: str, after_id: str = "0", count: int = 100
    ) -> list[QueuedCommand]:
        """Commands queued after stream position ``after_id`` (``"0"``: from the start)."""
        raw = self._redis.xread({keys.call_commands(call_id): after_id}, count=count)
        return _streams(raw).get(call_id, [])

    def record_result(self, call_id: str, command_id: str, ok: bool, detail: str) -> bool:
        """Record a command's outcome; false if it already had one (that one stays)."""
        outcome = _outcome_json(ok, detail, self._clock())
        result_keys = [
            keys.call_command_results(call_id),
            keys.call_command_done(call_id, command_id),
        ]
        args: list[Any] = [keys.CALL_TTL_S, keys.COMMAND_DONE_TTL_S, command_id, outcome]
        return bool(self._record(keys=result_keys, args=args))

    def result(self, call_id: str, command_id: str) -> CommandResult | None:
        """The command's outcome, if it has one."""
        raw = cast(
            "bytes | str | None", self._redis.hget(keys.call_command_results(call_id), command_id)
        )
        return parse_result(command_id, raw) if raw else None

    def wait_result(self, call_id: str, command_id: str, timeout_s: float) -> CommandResult | None:
        """The command's outcome, waiting up to ``timeout_s``; ``None`` if none came."""
        deadline = time.monotonic() + timeout_s
        done = keys.call_command_done(call_id, command_id)
        while True:
            found = self.result(call_id, command_id)
            remaining = deadline - time.monotonic()
            if found is not None or remaining <= 0:
                return found
            block_s: Any = max(remaining, MIN_BLOCK_S)  # redis-py types it int; Redis takes floats
            if self._redis.blmove(done, done, block_s, "RIGHT", "LEFT"):
                return self.result(call_id, command_id)


class AsyncCommandQueue:
    """Asynchronous face, for session runners and the ingress admin API."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        policy: PolicyLike = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = client
        self._policy = policy
        self._clock = clock
        self._enqueue = client.register_script(ENQUEUE)
        self._record = client.register_script(RECORD)

    async def enqueue_command(
        self, call_id: str, kind: str, args: Mapping[str, Any] | None = None
    ) -> str:
        """Queue a command for a live call; its command id (see the module docstring)."""
        state, profile = await self._redis.hmget(_record_key(call_id), ["state", "profile"])  # type: ignore[misc]
        _check_state(call_id, _str(state) if state else None)
        profile_name = _str(profile) if profile else None
        command_id, argv = _entry(call_id, kind, args, profile_name, self._policy, self._clock())
        reply = await self._enqueue(keys=_enqueue_keys(call_id), args=argv)
        holder = _queued(call_id, reply)
        if holder is not None:
            await self.wake(holder, call_id)
        return command_id

    async def wake(self, runner_id: str, call_id: str) -> None:
        """Tell a runner the call has news for it (``notified``): a command, or a tool
        call another runner left for it in the call's ledger."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.rpush(keys.runner_commands(runner_id), call_id)
        pipe.expire(keys.runner_commands(runner_id), keys.RUNNER_TTL_S)
        await pipe.execute()

    async def read_commands(
        self, call_id: str, after_id: str = "0", count: int = 100, block_ms: int | None = None
    ) -> list[QueuedCommand]:
        """Commands after stream position ``after_id``; ``block_ms`` waits for new ones."""
        raw = await self._redis.xread(
            {keys.call_commands(call_id): after_id}, count=count, block=block_ms
        )
        return _streams(raw).get(call_id, [])

    async def read_many(
        self, positions: Mapping[str, str], count: int = 100
    ) -> dict[str, list[QueuedCommand]]:
        """Commands of many calls (call id -> position), for a runner's loop.

        One ``XREAD`` per call's stream, all in one pipelined round trip (not a
        transaction): the streams of different calls hash to different slots, so one
        multi-stream ``XREAD`` would be refused by Redis Cluster (``CROSSSLOT``).
        """
        if not positions:
            return {}
        pipe = self._redis.pipeline(transaction=False)
        for call_id, after in positions.items():
            stream: dict[Any, Any] = {keys.call_commands(call_id): after}
            pipe.xread(stream, count=count)
        found: dict[str, list[QueuedCommand]] = {}
        for reply in await pipe.execute():
            found.update(_streams(reply))
        return found

    async def notified(self, runner_id: str, block_s: float, count: int = 1000) -> set[str]:
        """Ids of the runner's calls with new commands, waiting up to ``block_s`` for one."""
        # redis-py types each key of BLMPOP as a list; it sends them as given.
        inbox: Any = keys.runner_commands(runner_id)
        found = await self._redis.blmpop(block_s, 1, inbox, direction="LEFT", count=count)  # type: ignore[misc]
        return {_str(call_id) for call_id in found[1]} if found else set()

    async def record_result(self, call_id: str, command_id: str, ok: bool, detail: str) -> bool:
        """Record a command's outcome; false if it already had one (that one stays)."""
        outcome = _outcome_json(ok, detail, self._clock())
        result_keys = [
            keys.call_command_results(call_id),
            keys.call_command_done(call_id, command_id),
        ]
        args: list[Any] = [keys.CALL_TTL_S, keys.COMMAND_DONE_TTL_S, command_id, outcome]
        return bool(await self._record(keys=result_keys, args=args))

    async def result(self, call_id: str, command_id: str) -> CommandResult | None:
        """The command's outcome, if it has one."""
        raw = await self._redis.hget(keys.call_command_results(call_id), command_id)  # type: ignore[misc]
        return parse_result(command_id, raw) if raw else None

    async def wait_result(
        self, call_id: str, command_id: str, timeout_s: float
    ) -> CommandResult | None:
        """The command's outcome, waiting up to ``timeout_s``; ``None`` if none came."""
        deadline = time.monotonic() + timeout_s
        done = keys.call_command_done(call_id, command_id)
        while True:
            found = await self.result(call_id, command_id)
            remaining = deadline - time.monotonic()
            if found is not None or remaining <= 0:
                return found
            block_s: Any = max(remaining, MIN_BLOCK_S)  # redis-py types it int; Redis takes floats
            if await self._redis.blmove(done, done, block_s, "RIGHT", "LEFT"):
                return await self.result(call_id, command_id)
