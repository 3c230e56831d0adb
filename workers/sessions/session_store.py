"""What a session worker writes about its call, every write fenced by the call's lease.

``SessionStore`` turns the session's outputs into Redis writes on the call's own keys
(``shared.keys``) and runs them through ``Leases.fenced``, so a worker that lost its
lease changes nothing (``Stale``). Writes of one batch of effects go in one script: a
transcript line, the cost so far and a command result cost one round trip together.

The snapshot (``load_snapshot``/``snapshot_op``) is the session core's ``snapshot()``
plus the command-stream cursor, as one JSON string::

    {"version": 1, "runner": id, "token": n, "saved_at": unix s,
     "command_cursor": "<stream id>", "core": {...}}

The tool ledger (``keys.call_tools``) maps a tool-call id to ``{"state": "running",
"runner"}`` while a tool runs and to ``{"state": "done", "ok", "output"}`` after: it is
claimed with ``HSETNX`` before a tool runs, so a tool-call id runs at most once, also
across failovers.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio

from shared import keys
from shared.models import CallState, EndReason, encode_value
from shared.pricing import Cost
from workers.sessions.lease import Lease, Leases, Op, Transition

SNAPSHOT_VERSION = 1
LIVE_STATES = (CallState.ACCEPTING, CallState.ACTIVE, CallState.TRANSFERRING)


@dataclass(frozen=True, slots=True)
class ToolClaim:
    """The ledger's answer for one tool-call id: run it, or what an earlier run left."""

    run: bool
    ok: bool | None = None
    output: str | None = None


class SessionStore:
    """Fenced writes and plain reads of one runner's calls."""

    def __init__(self, client: redis.asyncio.Redis, leases: Leases) -> None:
        self._redis = client
        self.leases = leases

    # Reads ---------------------------------------------------------------------------

    async def load_snapshot(self, call_id: str) -> dict[str, Any] | None:
        raw = await self._redis.get(keys.call_snapshot(call_id))
        if raw is None:
            return None
        data = orjson.loads(raw)
        return data if isinstance(data, dict) else None

    async def tool_outcome(self, call_id: str, tool_call_id: str) -> ToolClaim | None:
        """A finished tool call's recorded outcome, if the ledger has one."""
        raw = await self._redis.hget(keys.call_tools(call_id), tool_call_id)  # type: ignore[misc]
        return _claim_from(raw) if raw is not None else None

    # Write operations, to combine into one fenced batch -----------------------------

    @staticmethod
    def transcript_op(call_id: str, role: str, text: str, at: float) -> list[Op]:
        key = keys.call_transcript(call_id)
        maxlen = keys.TRANSCRIPT_MAXLEN
        return [
            ("XADD", key, "MAXLEN", "~", maxlen, "*", "role", role, "text", text, "at", at),
            ("EXPIRE", key, keys.CALL_TTL_S),
        ]

    @staticmethod
    def event_op(call_id: str, event: str, at: float, fields: Mapping[str, object]) -> list[Op]:
        key = keys.call_events(call_id)
        pairs: list[str | int | float] = ["type", event, "at", at]
        for name, value in fields.items():
            if value is not None:
                pairs += (name, encode_value(value))
        return [
            ("XADD", key, "MAXLEN", "~", keys.EVENTS_MAXLEN, "*", *pairs),
            ("EXPIRE", key, keys.CALL_TTL_S),
        ]

    @staticmethod
    def record_op(call_id: str, fields: Mapping[str, object]) -> list[Op]:
        pairs: list[str | int | float] = []
        for name, value in {**fields, "updated_at": time.time()}.items():
            if value is not None:
                pairs += (name, encode_value(value))
        return [("HSET", keys.call_record(call_id), *pairs)]

    @staticmethod
    def cost_fields(cost: Cost) -> dict[str, object]:
        # The exact decimal as text: the record reconciles to the last digit with the API.
        return {"cost_usd": str(cost.total_usd), "usage": cost.tokens.as_dict()}

    @staticmethod
    def snapshot_op(lease: Lease, core: Mapping[str, Any], cursor: str, now_s: float) -> list[Op]:
        body = {
            "version": SNAPSHOT_VERSION,
            "runner": lease.runner_id,
            "token": lease.token,
            "saved_at": now_s,
            "command_cursor": cursor,
            "core": core,
        }
        key = keys.call_snapshot(lease.call_id)
        return [("SET", key, orjson.dumps(body).decode(), "EX", keys.CALL_TTL_S)]

    @staticmethod
    def tool_done_op(call_id: str, tool_call_id: str, ok: bool, output: str) -> list[Op]:
        value = orjson.dumps({"state": "done", "ok": ok, "output": output}).decode()
        return [("HSET", keys.call_tools(call_id), tool_call_id, value)]

    async def write(self, lease: Lease, ops: Iterable[Op], *, check: bool = False) -> None:
        """Run ``ops`` in one fenced script; raises ``Stale``. ``check``: even with none."""
        batch = list(ops)
        if batch or check:
            await self.leases.fenced(lease, batch)

    # Writes with an answer ----------------------------------------------------------

    async def claim_tool(self, lease: Lease, tool_call_id: str) -> ToolClaim:
        """Claim a tool-call id for running, or learn what an earlier claim left."""
        key = keys.call_tools(lease.call_id)
        running = orjson.dumps({"state": "running", "runner": lease.runner_id}).decode()
        replies = await self.leases.fenced(
            lease,
            [
                ("HSETNX", key, tool_call_id, running),
                ("HGET", key, tool_call_id),
                ("EXPIRE", key, keys.CALL_TTL_S),
            ],
        )
        if int(replies[0]):
            return ToolClaim(run=True)
        return _claim_from(replies[1])

    async def activate(self, lease: Lease, now_s: float) -> Transition:
        """``accepting -> active`` on the first attach (fenced); a no-op if already past."""
        fields = {"owner": lease.runner_id, "attached_at": now_s}
        return await self.leases.transition(
            lease, [CallState.ACCEPTING], CallState.ACTIVE, fields, now_s
        )

    async def finish(
        self, lease: Lease, reason: EndReason, fields: Mapping[str, object], now_s: float
    ) -> Transition:
        """The final record: state ``ended`` with the reason and the call's totals."""
        change = await self.leases.transition(
            lease, LIVE_STATES, CallState.ENDED, {**fields, "end_reason": reason}, now_s
        )
        if change.applied:
            await self._redis.zrem(keys.LIVE_CALLS, lease.call_id)
        return change


def _claim_from(raw: Any) -> ToolClaim:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = {}
    if isinstance(data, dict) and data.get("state") == "done":
        return ToolClaim(run=False, ok=bool(data.get("ok")), output=str(data.get("output", "")))
    return ToolClaim(run=False)
