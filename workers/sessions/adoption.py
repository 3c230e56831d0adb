"""Taking a call on: from its record, its lease and its snapshot to a ready session worker.

A runner that got a call's lease builds the call's ``SessionPlan`` from the record's
profile (``workers.sessions.plan_builder``) and its core: restored from the snapshot the
previous worker saved (failover, hand-over, crash), or fresh. The call joins this
runner's call set and its record names this runner as ``owner`` (fenced); the previous
owner's set loses it. Tools the snapshot shows as still running get the outcome the
ledger holds, if the previous worker finished them after its last snapshot. A snapshot
that says the call ended while the record does not gets its ``EndCall`` again; so does
a call whose Refer or Hangup was claimed (the claim's reason), which is not sent again.
"""

from __future__ import annotations

import logging
import time

from shared import keys
from shared.models import CallRecord, CallState
from workers.sessions.effects import EndCall
from workers.sessions.lease import Lease
from workers.sessions.plan_builder import build_plan
from workers.sessions.protocol import SessionProtocol
from workers.sessions.services import SessionServices
from workers.sessions.session_worker import SessionWorker
from workers.sessions.state import SnapshotError

logger = logging.getLogger(__name__)


async def adopt(services: SessionServices, record: CallRecord, lease: Lease) -> SessionWorker:
    """A session worker for ``record``'s call, whose ``lease`` this runner holds."""
    call_id, runner_id = record.id, services.runner_id
    await services.redis.sadd(keys.runner_calls(runner_id), call_id)  # type: ignore[misc]
    stored = await services.store.load(call_id)
    snapshot = stored.snapshot
    core_snapshot = snapshot.get("core") if snapshot is not None else None
    plan = build_plan(record, services.policy(), core_snapshot)
    core = SessionProtocol(plan)
    if isinstance(core_snapshot, dict):
        try:
            core = SessionProtocol.restore(plan, core_snapshot)
        except SnapshotError as exc:
            logger.error("call %s: snapshot not usable, starting afresh: %s", call_id, exc)
    cursor = str(snapshot.get("command_cursor") or "0") if snapshot is not None else "0"
    await services.store.write(lease, services.store.record_op(call_id, {"owner": runner_id}))
    if record.owner and record.owner != runner_id:
        await services.redis.srem(keys.runner_calls(record.owner), call_id)  # type: ignore[misc]
    worker = SessionWorker(
        services,
        lease,
        plan,
        core,
        # Never attached (nobody moved it to active): the greeting is still to come.
        fresh=record.state is CallState.ACCEPTING,
        cursor=cursor,
        activate=record.state is CallState.ACCEPTING,
    )
    worker.effects.resend = {
        tool_call_id for tool_call_id, entry in stored.tools.items() if entry.state == "answered"
    }
    ended = core.state.end_reason
    if ended is not None:
        # The snapshot says the call ended, the record does not: the end was decided but
        # its writes never happened. Carry them out again (the final record is a
        # compare-and-set, the outcome counted once per call).
        logger.warning("call %s ended without its final record; finishing it", call_id)
    taken_over = core.on_taken_over(
        stored.command_results,
        stored.command_claims,
        stored.tools,
        time.time(),
        control=stored.control,
    )
    if ended is not None:
        taken_over.append(EndCall(ended, "finished after a takeover"))
    if taken_over:
        worker.feed(taken_over)
    return worker
