"""Re-queue the calls nobody holds: those of dead runners and those this runner lost.

Every runner sweeps about once a second. For each runner that stopped beating (and
for itself, minus the calls it is hosting or taking on now) it looks at the calls in
the runner's call set and inbox: a call that has ended is dropped from the set; a call
whose lease another runner holds is dropped too; a call with no lease at all (its
holder died and the lease expired) is removed and pushed to the front of
``keys.PENDING_CALLS`` for whichever runner has room. The lease, not this sweep, is
what keeps a call single-owned: a call queued twice is simply refused by its lease the
second time. A dead runner with nothing left is forgotten.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from typing import Any

import redis.asyncio

from shared import keys
from shared.models import CallState
from shared.runner_registry import RunnerRegistry
from workers.sessions.lease import Lease

logger = logging.getLogger(__name__)

_TERMINAL = {CallState.ENDED.value, CallState.REJECTED.value, CallState.FAILED.value}
SCAN_COUNT = 500
"""Members of a runner's call set looked at per round trip."""


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


class Sweeper:
    """Finds calls without a holder and queues them again (see the module docstring)."""

    def __init__(
        self, client: redis.asyncio.Redis, registry: RunnerRegistry, dead_after_s: float
    ) -> None:
        self._redis = client
        self._registry = registry
        self.dead_after_s = dead_after_s

    async def sweep(self, busy: Collection[str]) -> int:
        """One pass; ``busy`` are this runner's calls in hand. Returns calls re-queued."""
        now_s = time.time()
        me = self._registry.runner_id
        requeued = 0
        for entry in await self._registry.entries():
            mine = entry.runner_id == me
            if not mine and entry.alive(now_s, self.dead_after_s):
                continue
            requeued += await self._sweep_runner(entry.runner_id, busy if mine else (), mine)
        return requeued

    async def _sweep_runner(self, runner_id: str, busy: Collection[str], mine: bool) -> int:
        held, inbox = keys.runner_calls(runner_id), keys.runner_inbox(runner_id)
        requeued = seen = 0
        # A runner's own inbox is its puller's business; a dead runner's is ours.
        if not mine:
            queued = {_text(q) for q in await self._redis.lrange(inbox, 0, -1)}  # type: ignore[misc]
            seen += len(queued)
            requeued += await self._requeue(runner_id, [c for c in queued if c not in busy])
        # The call set in pages: a runner holding thousands of calls does not hold the
        # event loop (or Redis) for one reply of thousands.
        cursor = 0
        while True:
            cursor, members = await self._redis.sscan(held, cursor, count=SCAN_COUNT)
            seen += len(members)
            found = {_text(m) for m in members}
            requeued += await self._requeue(runner_id, [c for c in found if c not in busy])
            if not cursor:
                break
        if not mine and not seen:
            await self._registry.forget(runner_id)
            logger.info("runner %s is gone and holds nothing: forgotten", runner_id)
        return requeued

    async def _requeue(self, runner_id: str, candidates: list[str]) -> int:
        """Re-queue those of ``candidates`` (calls of ``runner_id``) that nobody holds."""
        if not candidates:
            return 0
        held, inbox = keys.runner_calls(runner_id), keys.runner_inbox(runner_id)
        candidates.sort()
        pipe = self._redis.pipeline(transaction=False)
        for call_id in candidates:
            pipe.get(keys.call_lease(call_id))
            pipe.hget(keys.call_record(call_id), "state")
        replies = await pipe.execute()
        requeued = 0
        for index, call_id in enumerate(candidates):
            lease, state = replies[2 * index], replies[2 * index + 1]
            holder = Lease.parse(call_id, _text(lease)).runner_id if lease else None
            if holder == runner_id:
                continue  # not expired yet: the holder may still be alive
            pipe = self._redis.pipeline(transaction=False)
            pipe.srem(held, call_id)
            pipe.lrem(inbox, 0, call_id)
            removed = sum(int(n) for n in await pipe.execute())
            live = state is not None and _text(state) not in _TERMINAL
            if removed and live and holder is None:
                # The front of the queue: this call has a caller waiting on dead air.
                await self._redis.rpush(keys.PENDING_CALLS, call_id)  # type: ignore[misc]
                requeued += 1
                logger.info("call %s of runner %s re-queued", call_id, runner_id)
        return requeued
