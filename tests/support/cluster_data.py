"""Cluster state written straight into Redis, for tests of the operator surfaces.

Calls go through the real store (``CallStore``), runners through the same hash and
zset a runner's heartbeat writes, so the admin API and the command line read exactly
what a live cluster would show them.
"""

from __future__ import annotations

import time
from typing import Any

import redis

from shared import keys
from shared.models import CallRecord, CallState
from shared.store import CallStore

LIVE_PATH = (CallState.ACCEPTING, CallState.ACTIVE)


def make_call(
    client: redis.Redis,
    call_id: str,
    state: CallState = CallState.ACTIVE,
    *,
    profile: str = "support",
    **fields: Any,
) -> CallRecord:
    """A call moved through the real state machine to ``state``; returns its record."""
    store = CallStore(client)
    now = time.time()
    record = CallRecord.model_validate(
        {"id": call_id, "webhook_id": f"wh_{call_id}", "from": "+14155550100"}
        | {"to": "+18005550100", "created_at": now - 5.0}
    )
    store.create_incoming(record)
    path = {
        CallState.INCOMING: (),
        CallState.ACCEPTING: (CallState.ACCEPTING,),
        CallState.ACTIVE: LIVE_PATH,
        CallState.ENDED: (*LIVE_PATH, CallState.ENDED),
        CallState.REJECTED: (CallState.REJECTED,),
    }[state]
    current = CallState.INCOMING
    for step in path:
        extra: dict[str, Any] = {}
        if step is CallState.ACTIVE:
            extra = {"profile": profile, "accepted_at": now - 4.0, "owner": "runner-a"}
        if step in (CallState.ENDED, CallState.REJECTED):
            extra = {"ended_at": now, "end_reason": "caller_hangup"}
        assert store.transition(call_id, current, step, extra).applied
        current = step
    if fields:
        store.update(call_id, fields)
    found = store.get(call_id)
    assert found is not None
    return found


def register_runner(
    client: redis.Redis, runner_id: str, *, capacity: int = 100, load: int = 0, age_s: float = 0.0
) -> None:
    """A runner entry as its heartbeat writes it, last beat ``age_s`` ago."""
    beat = time.time() - age_s
    client.hset(
        keys.runner(runner_id),
        mapping={
            "host": "test-host",
            "pid": 4242,
            "capacity": capacity,
            "load": load,
            "draining": 0,
            "started_at": beat - 60.0,
            "heartbeat_at": beat,
        },
    )
    client.expire(keys.runner(runner_id), keys.RUNNER_TTL_S)
    client.zadd(keys.RUNNERS, {runner_id: beat})
