"""The call-state store: call records in Redis, changed only by atomic Lua scripts.

Two faces over the same scripts (``shared.call_scripts``): ``CallStore`` (sync, for
Celery workers and the command line) and ``AsyncCallStore`` (ingress, session
runners). They only carry a ``ScriptCall`` to Redis and parse the reply.

The live-call index is a global key: the creating script adds to it, and a face removes
a call after its move to a terminal state (outside the per-call script, so a crash in
between leaves a stale entry). ``list_calls`` therefore reads it as a hint, checks each
record and drops entries whose call is terminal or gone.

Scripts run with EVALSHA; after a Redis restart (NOSCRIPT) a face loads the script and
retries once, so the common path is one round trip per operation. The async face sends
the scripts of concurrent callers in one pipeline per loop turn
(``shared.command_batch``). Redis connection failures and timeouts surface as
``StoreUnavailable`` (retryable).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, cast

import redis
import redis.asyncio
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared import call_scripts, keys
from shared.call_scripts import (
    ChangeResult,
    Claim,
    ClaimOutcome,
    CreateResult,
    QueuedMessage,
    ScriptCall,
)
from shared.command_batch import CommandBatch
from shared.errors import RetryableError
from shared.models import TERMINAL_STATES, CallRecord, CallState

__all__ = [
    "AsyncCallStore",
    "CallStore",
    "ChangeResult",
    "Claim",
    "ClaimOutcome",
    "CreateResult",
    "QueuedMessage",
    "StoreUnavailable",
]


class StoreUnavailable(RetryableError):
    """Redis could not be reached or did not answer in time."""


@contextmanager
def _classified() -> Iterator[None]:
    # The driver's message names host and port at most, never the URL's password.
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError) as err:
        raise StoreUnavailable(f"redis unavailable: {type(err).__name__}: {err}") from err


class CallStore:
    """Synchronous face of the store, for Celery workers and the command line."""

    def __init__(self, client: redis.Redis, *, clock: Callable[[], float] = time.time) -> None:
        self._redis = client
        self._clock = clock

    def _run(self, call: ScriptCall) -> Any:
        """Run one script; the reply."""
        with _classified():
            try:
                return self._redis.execute_command(*call.command())  # type: ignore[no-untyped-call]
            except NoScriptError:
                self._redis.script_load(call.script)
                return self._redis.execute_command(*call.command())  # type: ignore[no-untyped-call]

    def create_incoming(
        self, record: CallRecord | Mapping[str, str], *, enqueue: QueuedMessage | None = None
    ) -> CreateResult:
        """Create the call unless its webhook or call id was seen; enqueue on creation."""
        call = call_scripts.create_incoming(record, enqueue)
        return CreateResult(call_scripts.text(self._run(call)))

    def get(self, call_id: str) -> CallRecord | None:
        """The call record, or None if there is no such call."""
        with _classified():
            raw = cast("dict[Any, Any]", self._redis.hgetall(keys.call_record(call_id)))
        return CallRecord.from_hash(raw) if raw else None

    def get_many(self, call_ids: Iterable[str]) -> list[CallRecord]:
        """The records of those of ``call_ids`` that exist, in order, in one round trip."""
        ids = list(call_ids)
        if not ids:
            return []
        with _classified():
            pipe = self._redis.pipeline(transaction=False)
            for call_id in ids:
                pipe.hgetall(keys.call_record(call_id))
            raws = cast("list[dict[Any, Any]]", pipe.execute())
        return [CallRecord.from_hash(raw) for raw in raws if raw]

    def transition(
        self,
        call_id: str,
        from_states: CallState | Iterable[CallState],
        to_state: CallState,
        fields: Mapping[str, object] | None = None,
    ) -> ChangeResult:
        """Move the call to ``to_state`` and write ``fields`` if it is in ``from_states``."""
        call = call_scripts.transition(call_id, from_states, to_state, fields, self._clock())
        result = call_scripts.change_result(self._run(call))
        if result.applied and to_state in TERMINAL_STATES:
            with _classified():
                self._redis.zrem(keys.LIVE_CALLS, call_id)
        return result

    def update(
        self, call_id: str, fields: Mapping[str, object], *, only_in: Iterable[CallState] = ()
    ) -> ChangeResult:
        """Write ``fields`` if the call exists (and is in one of ``only_in``, if given)."""
        call = call_scripts.change(call_id, only_in, fields, self._clock())
        return call_scripts.change_result(self._run(call))

    def claim(
        self, call_id: str, claim_field: str, token: str, fields: Mapping[str, object]
    ) -> Claim:
        """Move an incoming call to accepting held by ``token``, or find that ``token`` holds it.

        ``token`` is written as ``claim_field``; ``fields`` are written whenever the token
        holds the call, which then comes back as it is now. One round trip.
        """
        call = call_scripts.claim(call_id, claim_field, token, fields, self._clock())
        return call_scripts.claim_result(self._run(call))

    def update_and_push(
        self,
        call_id: str,
        fields: Mapping[str, object],
        *,
        only_in: Iterable[CallState] = (),
        queue: str,
    ) -> ChangeResult:
        """``update``, then LPUSH the call id onto ``queue`` whatever it did; one round trip.

        Not atomic (the list may live apart from the call's keys), but ordered: whoever
        pops the id finds the fields written. The script goes as EVAL, so a script
        cache emptied by a Redis restart cannot leave the push ahead of the update.
        """
        call = call_scripts.change(call_id, only_in, fields, self._clock())
        with _classified():
            pipe = self._redis.pipeline(transaction=False)
            pipe.execute_command(  # type: ignore[no-untyped-call]
                "EVAL", call.script, len(call.keys), *call.keys, *call.argv
            )
            pipe.lpush(queue, call_id)
            change, _ = pipe.execute()
        return call_scripts.change_result(change)

    def list_calls(
        self, states: Iterable[CallState] | None = None, *, limit: int = 1000
    ) -> list[CallRecord]:
        """Live (non-terminal) calls, oldest first, optionally only those in ``states``."""
        wanted = frozenset(states if states is not None else CallState)
        with _classified():
            ids = cast("list[Any]", self._redis.zrange(keys.LIVE_CALLS, 0, limit - 1))
            pipe = self._redis.pipeline(transaction=False)
            for call_id in ids:
                pipe.hgetall(keys.call_record(call_scripts.text(call_id)))
            found, stale = call_scripts.live_records(ids, pipe.execute() if ids else [], wanted)
            if stale:
                self._redis.zrem(keys.LIVE_CALLS, *stale)
        return found


class AsyncCallStore:
    """Asynchronous face of the store, for the ingress and the session runners."""

    def __init__(
        self, client: redis.asyncio.Redis, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._redis = client
        self._clock = clock
        self._batch = CommandBatch(client)

    async def _run(self, call: ScriptCall) -> Any:
        """Run one script, batched with other callers' commands; the reply."""
        with _classified():
            [reply] = await self._batch.execute([call.command()])
            if isinstance(reply, NoScriptError):
                await self._redis.script_load(call.script)
                [reply] = await self._batch.execute([call.command()])
            if isinstance(reply, Exception):
                raise reply
            return reply

    async def create_incoming(
        self, record: CallRecord | Mapping[str, str], *, enqueue: QueuedMessage | None = None
    ) -> CreateResult:
        """Create the call unless its webhook or call id was seen; enqueue on creation."""
        call = call_scripts.create_incoming(record, enqueue)
        return CreateResult(call_scripts.text(await self._run(call)))

    async def get(self, call_id: str) -> CallRecord | None:
        """The call record, or None if there is no such call."""
        with _classified():
            raw: dict[Any, Any] = await self._redis.hgetall(keys.call_record(call_id))  # type: ignore[misc]
        return CallRecord.from_hash(raw) if raw else None

    async def transition(
        self,
        call_id: str,
        from_states: CallState | Iterable[CallState],
        to_state: CallState,
        fields: Mapping[str, object] | None = None,
    ) -> ChangeResult:
        """Move the call to ``to_state`` and write ``fields`` if it is in ``from_states``."""
        call = call_scripts.transition(call_id, from_states, to_state, fields, self._clock())
        result = call_scripts.change_result(await self._run(call))
        if result.applied and to_state in TERMINAL_STATES:
            with _classified():
                await self._redis.zrem(keys.LIVE_CALLS, call_id)
        return result

    async def update(
        self, call_id: str, fields: Mapping[str, object], *, only_in: Iterable[CallState] = ()
    ) -> ChangeResult:
        """Write ``fields`` if the call exists (and is in one of ``only_in``, if given)."""
        call = call_scripts.change(call_id, only_in, fields, self._clock())
        return call_scripts.change_result(await self._run(call))

    async def list_calls(
        self, states: Iterable[CallState] | None = None, *, limit: int = 1000
    ) -> list[CallRecord]:
        """Live (non-terminal) calls, oldest first, optionally only those in ``states``."""
        wanted = frozenset(states if states is not None else CallState)
        with _classified():
            ids = await self._redis.zrange(keys.LIVE_CALLS, 0, limit - 1)
            pipe = self._redis.pipeline(transaction=False)
            for call_id in ids:
                pipe.hgetall(keys.call_record(call_scripts.text(call_id)))
            raws = await pipe.execute() if ids else []
            found, stale = call_scripts.live_records(ids, raws, wanted)
            if stale:
                await self._redis.zrem(keys.LIVE_CALLS, *stale)
        return found
