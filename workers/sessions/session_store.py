"""What a session worker writes about its call, every write fenced by the call's lease.

``SessionStore`` turns the session's outputs into Redis writes on the call's own keys
(``shared.keys``) and runs them through ``Leases.fenced``, so a worker that lost its
lease changes nothing (``Stale``). Writes of one batch of effects go in one script: a
transcript line, the cost so far and a command result cost one round trip together.

The snapshot (``load_snapshot``/``snapshot_op``) is the session core's ``snapshot()``
plus the command-stream cursor, as one JSON string::

    {"version": 1, "runner": id, "token": n, "saved_at": unix s,
     "command_cursor": "<stream id>", "core": {...}}

The tool ledger (``keys.call_tools``) maps a tool-call id to JSON with its ``state``:

- ``{"state": "requested", "name", "arguments", "runner"}``: a function call a worker
  heard and could not see through (it stopped without the lease: ``request_tool``),
  written without the lease, only where the id has no entry at all; whoever holds the
  call then handles it as if it had heard it (the holder of the moment is woken
  through its command list, a later one finds it when it loads the call);
- ``{"state": "running", "runner", "token", "name"}``: claimed before the tool runs,
  only where the id has no entry or a ``requested`` one, so a tool-call id runs at most
  once, also across failovers (a claim repeated by the same lease grant, whose answer
  was lost, finds its own entry and is still its own);
- ``{"state": "done", "name", "ok", "output"}``: the tool's outcome, not yet known to
  have reached the model;
- ``{"state": "answered", "name", "ok", "output"}``: the ``function_call_output`` for
  the id is being sent (written just before the send), so this worker never sends it
  twice; a send that certainly did not happen takes it back (``unanswer_tool``);
- ``{"state": "delivered", ...}``: the API echoed the output item; nobody sends it again.

A runner killed just after a send may lose the frame with its socket, so an output
``answered`` but never ``delivered`` is sent again by the runner taking the call over
(``answer_tool(again=True)``), with the same item id, which the API accepts once.
Nothing overwrites ``delivered``, and ``answered`` gives way only to ``delivered``, to
such a resend, or to its own take-back. The command claims
(``keys.call_command_claims``) note each command a worker starts applying, before its
effects (``command_claim_op``). A transcript line also counts its turn in the record
(``transcript_op``), so counts and transcript agree whatever the snapshot says.

The call's Refer or Hangup is claimed (``claim_control``, ``keys.call_control``) in
the fenced write just before its REST request, set only if no claim exists yet::

    {"action": "refer" | "hangup", "reason": end reason, "detail", "target_uri",
     "command_id", "token": n, "at": unix s}

so the request goes out at most once per call, and a runner taking the call over ends
it as the claim says instead of deciding the end again from an older snapshot.

``load`` reads what a runner taking a call on needs, in one round trip: the snapshot,
the command outcomes and claims, the tool ledger and the control claim.
``requested_tools`` reads the ``requested`` entries of many calls at once, for a
runner woken by ``request_tool``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio

from shared import keys
from shared.command_rules import parse_result
from shared.models import CallState, EndReason, encode_value
from shared.outage import through_outage
from shared.pricing import Cost
from workers.sessions.effects import ClaimControl
from workers.sessions.lease import Lease, Leases, Op, Transition
from workers.sessions.tools import FunctionCall, LedgerEntry, LedgerState

logger = logging.getLogger(__name__)

SNAPSHOT_VERSION = 1
LIVE_STATES = (CallState.ACCEPTING, CallState.ACTIVE, CallState.TRANSFERRING)

# KEYS: lease, ledger. ARGV: lease value, tool-call id, ttl, new entry ('' deletes it),
# expected entry, states that keep the entry (comma separated). Without an expected
# entry the new one is written unless the entry's state is one of those; with one, only
# if the entry is exactly that. Reply: {0} stale, or {1, written, the entry before}.
_LEDGER = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {0} end
local old = redis.call('HGET', KEYS[2], ARGV[2])
if ARGV[5] ~= '' then
  if old ~= ARGV[5] then return {1, 0, old or ''} end
elseif old then
  local ok, entry = pcall(cjson.decode, old)
  if ok and type(entry) == 'table' and type(entry['state']) == 'string' then
    if string.find(',' .. ARGV[6] .. ',', ',' .. entry['state'] .. ',', 1, true) then
      return {1, 0, old}
    end
  end
end
if ARGV[4] == '' then
  redis.call('HDEL', KEYS[2], ARGV[2])
else
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[4])
end
redis.call('EXPIRE', KEYS[2], ARGV[3])
return {1, 1, old or ''}
"""
# KEYS: lease, ledger. ARGV: lease value, tool-call id, ttl, the running entry. The entry
# is written where the id has none, a 'requested' one, or this very one (a repeat).
# Reply: {0} stale, or {1, claimed, the entry found}.
_CLAIM = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {0} end
local old = redis.call('HGET', KEYS[2], ARGV[2])
if old and old ~= ARGV[4] then
  local ok, entry = pcall(cjson.decode, old)
  if not (ok and type(entry) == 'table' and entry['state'] == 'requested') then
    return {1, 0, old}
  end
end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return {1, 1, old or ''}
"""

# KEYS: ledger, lease (no fence: the lease may be anyone's). ARGV: tool-call id, entry,
# ttl. Reply: {written (only where the id had no entry), the lease value or ''}.
_REQUEST = """
local written = redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return {written, redis.call('GET', KEYS[2]) or ''}
"""
_SENT = "answered,delivered"
"""Ledger states of an id whose output went out: nothing but ``delivered`` follows."""


@dataclass(frozen=True, slots=True)
class ToolClaim:
    """The ledger's answer for one tool-call id: run it, or what an earlier claim left."""

    run: bool
    entry: LedgerEntry | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    """A ``function_call_output`` marked as sent: ``sent`` false if it already was; what
    the entry was before, to take the mark back if the send certainly failed."""

    sent: bool
    entry: str
    before: str


@dataclass(frozen=True, slots=True)
class StoredSession:
    """What Redis holds about a call for the runner taking it on (``SessionStore.load``)."""

    snapshot: dict[str, Any] | None = None
    command_results: dict[str, tuple[bool, str]] = field(default_factory=dict)
    command_claims: frozenset[str] = frozenset()
    tools: dict[str, LedgerEntry] = field(default_factory=dict)
    control: ClaimControl | None = None


class SessionStore:
    """Fenced writes and plain reads of one runner's calls."""

    def __init__(self, client: redis.asyncio.Redis, leases: Leases) -> None:
        self._redis = client
        self.leases = leases
        self._ledger = leases.script(_LEDGER)
        self._claim = leases.script(_CLAIM)
        self._request = client.register_script(_REQUEST)

    # Reads ---------------------------------------------------------------------------

    async def load_snapshot(self, call_id: str) -> dict[str, Any] | None:
        raw = await self._redis.get(keys.call_snapshot(call_id))
        return _snapshot_from(raw)

    async def load(self, call_id: str) -> StoredSession:
        """The snapshot, command outcomes and claims, and tool ledger of a call."""
        pipe = self._redis.pipeline(transaction=True)  # the call's keys: one slot
        pipe.get(keys.call_snapshot(call_id))
        pipe.hgetall(keys.call_command_results(call_id))
        pipe.hkeys(keys.call_command_claims(call_id))
        pipe.hgetall(keys.call_tools(call_id))
        pipe.get(keys.call_control(call_id))
        snapshot, results, claims, tools, control = await pipe.execute()
        outcomes: dict[str, tuple[bool, str]] = {}
        for command_id, raw in results.items():
            try:
                result = parse_result(_text(command_id), raw)
            except (ValueError, KeyError, TypeError):
                continue  # not ours to judge: the command is still known to be decided
            outcomes[result.command_id] = (result.ok, result.detail)
        return StoredSession(
            snapshot=_snapshot_from(snapshot),
            command_results=outcomes,
            command_claims=frozenset(_text(command_id) for command_id in claims),
            tools={_text(tool_call_id): _entry_from(raw) for tool_call_id, raw in tools.items()},
            control=_control_from(call_id, control) if control is not None else None,
        )

    async def requested_tools(self, call_ids: Iterable[str]) -> dict[str, list[FunctionCall]]:
        """The function calls left ``requested`` in each call's ledger (calls with none
        are left out), in one pipelined round trip (each call's keys are its own slot)."""
        wanted = list(call_ids)
        if not wanted:
            return {}
        pipe = self._redis.pipeline(transaction=False)
        for call_id in wanted:
            pipe.hgetall(keys.call_tools(call_id))
        found: dict[str, list[FunctionCall]] = {}
        for call_id, ledger in zip(wanted, await pipe.execute(), strict=True):
            calls = [
                FunctionCall(_text(tool_call_id), entry.name, entry.arguments or "")
                for tool_call_id, raw in sorted(ledger.items())
                if (entry := _entry_from(raw)).state == "requested"
            ]
            if calls:
                found[call_id] = calls
        return found

    async def tool_entry(self, call_id: str, tool_call_id: str) -> LedgerEntry | None:
        """What the ledger holds for one tool-call id, if anything."""
        raw = await self._redis.hget(keys.call_tools(call_id), tool_call_id)  # type: ignore[misc]
        return _entry_from(raw) if raw is not None else None

    # Write operations, to combine into one fenced batch -----------------------------

    @staticmethod
    def transcript_op(call_id: str, role: str, text: str, at: float) -> list[Op]:
        """One transcript line, and the record's count of the role's turns with it (so
        the two always agree, whatever happens to the snapshot)."""
        key = keys.call_transcript(call_id)
        maxlen = keys.TRANSCRIPT_MAXLEN
        return [
            ("XADD", key, "MAXLEN", "~", maxlen, "*", "role", role, "text", text, "at", at),
            ("EXPIRE", key, keys.CALL_TTL_S),
            ("HINCRBY", keys.call_record(call_id), f"{role}_turns", 1),
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
    def command_claim_op(call_id: str, command_id: str, token: int) -> list[Op]:
        key = keys.call_command_claims(call_id)
        return [("HSET", key, command_id, token), ("EXPIRE", key, keys.CALL_TTL_S)]

    @staticmethod
    def control_json(claim: ClaimControl, token: int, at: float) -> str:
        """The stored form of a control claim (``claim_control``)."""
        body = {
            "action": claim.action,
            "reason": claim.reason.value,
            "detail": claim.detail,
            "target_uri": claim.target_uri,
            "command_id": claim.command_id,
            "token": token,
            "at": at,
        }
        return orjson.dumps(body).decode()

    async def claim_control(self, lease: Lease, ops: Iterable[Op], claim: str) -> bool:
        """Run ``ops`` and set the call's control claim (``control_json``) in one fenced
        script; true if the claim is this one: set now, or by an earlier try of this very
        claim whose answer was lost. Raises ``Stale``."""
        key = keys.call_control(lease.call_id)
        replies = await self.leases.fenced(
            lease, [*ops, ("SET", key, claim, "NX", "EX", keys.CALL_TTL_S), ("GET", key)]
        )
        return replies[-1] is not None and _text(replies[-1]) == claim

    async def write(self, lease: Lease, ops: Iterable[Op], *, check: bool = False) -> None:
        """Run ``ops`` in one fenced script; raises ``Stale``. ``check``: even with none."""
        batch = list(ops)
        if batch or check:
            await self.leases.fenced(lease, batch)

    async def save_snapshot(
        self,
        lease: Lease,
        core: Mapping[str, Any],
        cursor: str,
        now_s: float,
        *,
        outage_s: float,
        on_retry: Callable[[Exception], None] | None = None,
    ) -> None:
        """Save the worker's snapshot (fenced; raises ``Stale``), retried through a Redis
        outage of up to ``outage_s`` seconds: the same fenced write is safe to repeat, and
        giving up would fail the session."""
        ops = self.snapshot_op(lease, core, cursor, now_s)
        await through_outage(lambda: self.write(lease, ops), deadline_s=outage_s, on_retry=on_retry)

    # Writes with an answer ----------------------------------------------------------

    async def claim_tool(self, lease: Lease, tool_call_id: str, name: str) -> ToolClaim:
        """Claim a tool-call id for running, or learn what an earlier claim left. Safe to
        repeat: a repeat by the same grant (its first answer lost) claims it still."""
        key = keys.call_tools(lease.call_id)
        running = _entry_json(
            "running", name, None, None, runner=lease.runner_id, token=str(lease.token)
        )
        replies = await self._claim.run(lease, [key], [tool_call_id, keys.CALL_TTL_S, running])
        if int(replies[0]):
            return ToolClaim(run=True)
        return ToolClaim(run=False, entry=_entry_from(replies[1]))

    async def request_tool(
        self, call_id: str, call: FunctionCall, runner_id: str
    ) -> tuple[bool, Lease | None]:
        """Leave a function call ``runner_id`` heard to whoever holds the call (no lease
        needed): written only where the id has no entry at all. Returns whether it was
        written, and who held the call's lease as it was (``None``: nobody), who may
        have loaded the call before and must be told."""
        entry = _entry_json(
            "requested", call.name, None, None, arguments=call.arguments, runner=runner_id
        )
        script_keys = [keys.call_tools(call_id), keys.call_lease(call_id)]
        written, holder = await self._request(
            keys=script_keys, args=[call.call_id, entry, keys.CALL_TTL_S]
        )
        lease = Lease.parse(call_id, _text(holder)) if holder else None
        return bool(int(written)), lease

    async def record_tool(
        self, lease: Lease, tool_call_id: str, name: str, ok: bool, output: str
    ) -> bool:
        """Record a tool's outcome (``done``); false if its output was already answered."""
        entry = _entry_json("done", name, ok, output)
        written, _ = await self._ledger_write(lease, tool_call_id, entry, "", _SENT)
        return written

    async def answer_tool(
        self,
        lease: Lease,
        tool_call_id: str,
        name: str,
        ok: bool | None,
        output: str,
        *,
        again: bool = False,
    ) -> Answer:
        """Mark the id ``answered`` just before its output is sent (see ``Answer``);
        ``again``: a resend after a takeover, refused only once ``delivered``."""
        entry = _entry_json("answered", name, ok, output)
        keep = "delivered" if again else _SENT
        written, before = await self._ledger_write(lease, tool_call_id, entry, "", keep)
        return Answer(written, entry, before)

    async def unanswer_tool(self, lease: Lease, tool_call_id: str, answer: Answer) -> bool:
        """Take an ``answer_tool`` mark back: its send certainly did not happen."""
        written, _ = await self._ledger_write(lease, tool_call_id, answer.before, answer.entry, "")
        return written

    @staticmethod
    def tool_delivered_op(
        call_id: str, tool_call_id: str, name: str, ok: bool | None, output: str | None
    ) -> list[Op]:
        entry = _entry_json("delivered", name, ok, output)
        return [("HSET", keys.call_tools(call_id), tool_call_id, entry)]

    async def _ledger_write(
        self, lease: Lease, tool_call_id: str, entry: str, expected: str, keep: str
    ) -> tuple[bool, str]:
        key = keys.call_tools(lease.call_id)
        replies = await self._ledger.run(
            lease, [key], [tool_call_id, keys.CALL_TTL_S, entry, expected, keep]
        )
        return bool(int(replies[0])), _text(replies[1]) if len(replies) > 1 else ""

    async def activate(self, lease: Lease, now_s: float) -> Transition:
        """``accepting -> active`` on the first attach (fenced); a no-op if already past.
        The turn counts start at zero then (each transcript line adds its turn)."""
        fields = {
            "owner": lease.runner_id,
            "attached_at": now_s,
            "caller_turns": 0,
            "agent_turns": 0,
        }
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


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def _snapshot_from(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    data = orjson.loads(raw)
    return data if isinstance(data, dict) else None


def _control_from(call_id: str, raw: Any) -> ClaimControl:
    """A stored control claim; one that cannot be read still means a Refer or Hangup may
    have gone out: the call ends with ``error`` rather than risk a second one."""
    try:
        data = orjson.loads(raw)
        action = data["action"]
        if action not in ("refer", "hangup"):
            raise ValueError(f"unknown action {action!r}")
        fields = [data.get(name) for name in ("detail", "target_uri", "command_id")]
        detail, target_uri, command_id = (f if isinstance(f, str) else None for f in fields)
        return ClaimControl(action, EndReason(data["reason"]), detail, target_uri, command_id)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        logger.error("call %s: unreadable control claim: %s", call_id, exc)
        return ClaimControl("hangup", EndReason.ERROR, "unreadable control claim")


def _entry_json(
    state: LedgerState, name: str, ok: bool | None, output: str | None, **extra: str
) -> str:
    entry: dict[str, Any] = {"state": state, "name": name, **extra}
    if ok is not None:
        entry["ok"] = ok
    if output is not None:
        entry["output"] = output
    return orjson.dumps(entry).decode()


def _entry_from(raw: Any) -> LedgerEntry:
    """A ledger entry; anything unreadable counts as a tool that may be running."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    state = data.get("state")
    name = data.get("name")
    name = name if isinstance(name, str) else ""
    if state == "requested":
        arguments = data.get("arguments")
        return LedgerEntry(state, name, arguments=arguments if isinstance(arguments, str) else "")
    if state not in ("done", "answered", "delivered"):
        return LedgerEntry("running", name)
    ok = data.get("ok")
    output = data.get("output")
    return LedgerEntry(
        state,
        name,
        ok if isinstance(ok, bool) else None,
        output if isinstance(output, str) else None,
    )
