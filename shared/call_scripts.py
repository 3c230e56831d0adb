"""The Lua scripts that change call records, and how their keys, arguments and replies look.

Both faces of ``shared.store`` (sync and async) run exactly these ``ScriptCall``s, so
the logic exists once. Every state change is a compare-and-set inside one script that
touches only one call's keys (one hash slot, see ``shared.keys``).

``CREATE_INCOMING`` is the one exception: with the call's keys it also adds the call to
the global live index and pushes the routing message onto the broker's queue, so that a
call is recorded, listed and queued all or nothing, in one command. It therefore needs
the broker, the index and the call on one node, as kombu's Redis transport (which does
not run on Redis Cluster) requires anyway.

Pure: builds values, talks to nothing.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from shared import keys
from shared.models import PROTECTED_FIELDS, CallRecord, CallState, check_transition, encode_fields

# KEYS: dedupe marker, record, live index[, queue]. ARGV: dedupe ttl, record ttl, message,
# created_at, fields as one JSON object (argument packing dominates the client's cost).
CREATE_INCOMING = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 'duplicate_webhook' end
if redis.call('EXISTS', KEYS[2]) == 1 then return 'duplicate_call' end
local fields = cjson.decode(ARGV[5])
local pairs_ = {}
for name, value in pairs(fields) do
  pairs_[#pairs_ + 1] = name
  pairs_[#pairs_ + 1] = value
end
redis.call('SET', KEYS[1], '1', 'EX', ARGV[1])
redis.call('HSET', KEYS[2], unpack(pairs_))
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[4], fields['id'])
if #KEYS >= 4 then redis.call('LPUSH', KEYS[4], ARGV[3]) end
return 'created'
"""

# KEYS: record. ARGV: ttl, n, n allowed states (n = 0: any), field pairs.
# Reply: {applied, state now} with state '' when there is no such call.
CHANGE = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {0, ''} end
local n = tonumber(ARGV[2])
local allowed = n == 0
for i = 3, 2 + n do
  if ARGV[i] == state then allowed = true end
end
if not allowed then return {0, state} end
if #ARGV > 2 + n then redis.call('HSET', KEYS[1], unpack(ARGV, 3 + n)) end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return {1, redis.call('HGET', KEYS[1], 'state')}
"""

# KEYS: record. ARGV: ttl, claim field, claim token, field pairs. An incoming call moves to
# accepting with the token in the claim field; one the token already holds stays as it is.
# Either way the pairs are written and the whole record comes back.
# Reply: {'claimed' | 'resumed', record pairs}, {'taken'} or {'missing'}.
CLAIM = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'missing'} end
local outcome = 'resumed'
if state == 'incoming' then
  outcome = 'claimed'
  redis.call('HSET', KEYS[1], 'state', 'accepting', ARGV[2], ARGV[3])
elseif state ~= 'accepting' or redis.call('HGET', KEYS[1], ARGV[2]) ~= ARGV[3] then
  return {'taken'}
end
if #ARGV > 3 then redis.call('HSET', KEYS[1], unpack(ARGV, 4)) end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return {outcome, redis.call('HGETALL', KEYS[1])}
"""

SHA1 = {text: hashlib.sha1(text.encode()).hexdigest() for text in (CREATE_INCOMING, CHANGE, CLAIM)}
"""Script text -> the digest EVALSHA needs; computed here, so no load is needed first."""


class CreateResult(enum.StrEnum):
    """What ``create_incoming`` did."""

    CREATED = "created"
    DUPLICATE_WEBHOOK = "duplicate_webhook"
    DUPLICATE_CALL = "duplicate_call"


@dataclass(frozen=True)
class ChangeResult:
    """Whether a compare-and-set applied, and the call's state now (None: no such call)."""

    applied: bool
    state: CallState | None


class ClaimOutcome(enum.StrEnum):
    """What ``claim`` found."""

    CLAIMED = "claimed"
    """The call was incoming and is now accepting, held by the token."""
    RESUMED = "resumed"
    """The call was accepting and already held by the token."""
    TAKEN = "taken"
    """Another token holds the call, or it is past accepting."""
    MISSING = "missing"


@dataclass(frozen=True)
class Claim:
    """The outcome of ``claim``, and the record when the token holds the call."""

    outcome: ClaimOutcome
    record: CallRecord | None


@dataclass(frozen=True)
class QueuedMessage:
    """A ready broker message to push onto a kombu Redis queue list with the record."""

    queue: str
    body: bytes


@dataclass(frozen=True)
class ScriptCall:
    """One script invocation: the script text, its keys and its arguments."""

    script: str
    keys: Sequence[str]
    argv: Sequence[str | bytes | int | float]

    def command(self) -> tuple[Any, ...]:
        """The EVALSHA command as positional arguments for ``execute_command``."""
        return ("EVALSHA", SHA1[self.script], len(self.keys), *self.keys, *self.argv)


def text(raw: bytes | str) -> str:
    """A reply value as text, whatever the client's ``decode_responses``."""
    return raw.decode() if isinstance(raw, bytes) else raw


def create_incoming(
    record: CallRecord | Mapping[str, str], enqueue: QueuedMessage | None
) -> ScriptCall:
    """Create the record unless its webhook or call id was seen; push ``enqueue`` if so.

    ``record`` is a ``CallRecord`` or the hash it would be (``CallRecord.to_hash``), as
    the ingress builds it without a model on its hot path.
    """
    fields = record.to_hash() if isinstance(record, CallRecord) else record
    if fields.get("state") != CallState.INCOMING.value:
        raise ValueError("a new call record must be in state incoming")
    call_id, webhook_id, created_at = (
        fields.get("id"),
        fields.get("webhook_id"),
        fields.get("created_at"),
    )
    if not webhook_id:
        raise ValueError("a new call record needs the webhook id that announced it")
    if not call_id or not created_at:
        raise ValueError("a new call record needs an id and a creation time")
    call_keys = [
        keys.webhook_dedupe(call_id, webhook_id),
        keys.call_record(call_id),
        keys.LIVE_CALLS,
    ]
    message = b""
    if enqueue is not None:
        call_keys.append(enqueue.queue)
        message = enqueue.body
    argv = (
        keys.WEBHOOK_DEDUPE_TTL_S,
        keys.CALL_TTL_S,
        message,
        created_at,
        orjson.dumps(fields),
    )
    return ScriptCall(CREATE_INCOMING, call_keys, argv)


def change(
    call_id: str, only_in: Iterable[CallState], fields: Mapping[str, object], now_s: float
) -> ScriptCall:
    """Write ``fields`` (and ``updated_at``) if the call exists and is in ``only_in``."""
    bad = PROTECTED_FIELDS.intersection(fields)
    if bad:
        raise ValueError(f"fields {sorted(bad)} cannot be written directly")
    allowed = sorted(set(only_in))
    argv: list[str | bytes | int | float] = [keys.CALL_TTL_S, len(allowed)]
    argv += [state.value for state in allowed]
    for name, value in encode_fields({**fields, "updated_at": now_s}).items():
        argv += (name, value)
    return ScriptCall(CHANGE, [keys.call_record(call_id)], argv)


def claim(
    call_id: str, claim_field: str, token: str, fields: Mapping[str, object], now_s: float
) -> ScriptCall:
    """Claim an incoming call for ``token`` (or confirm it holds it), writing ``fields``."""
    bad = PROTECTED_FIELDS.intersection(fields) | ({claim_field} & set(fields))
    if bad or claim_field in PROTECTED_FIELDS:
        raise ValueError(f"fields {sorted(bad | {claim_field})} cannot be written directly")
    argv: list[str | bytes | int | float] = [keys.CALL_TTL_S, claim_field, token]
    for name, value in encode_fields({**fields, "updated_at": now_s}).items():
        argv += (name, value)
    return ScriptCall(CLAIM, [keys.call_record(call_id)], argv)


def claim_result(raw: Sequence[Any]) -> Claim:
    """Parse the reply of ``CLAIM``."""
    outcome = ClaimOutcome(text(raw[0]))
    if len(raw) < 2:
        return Claim(outcome, None)
    flat = raw[1]
    return Claim(outcome, CallRecord.from_hash(dict(zip(flat[::2], flat[1::2], strict=True))))


def transition(
    call_id: str,
    from_states: CallState | Iterable[CallState],
    to_state: CallState,
    fields: Mapping[str, object] | None,
    now_s: float,
) -> ScriptCall:
    """Compare-and-set the state from one of ``from_states`` to ``to_state``."""
    sources = frozenset([from_states] if isinstance(from_states, CallState) else from_states)
    check_transition(sources, to_state)
    call = change(call_id, sources, dict(fields or {}), now_s)
    return ScriptCall(call.script, call.keys, [*call.argv, "state", to_state.value])


def change_result(raw: Sequence[Any]) -> ChangeResult:
    """Parse the reply of ``CHANGE``."""
    state = text(raw[1])
    return ChangeResult(bool(int(raw[0])), CallState(state) if state else None)


def live_records(
    ids: Sequence[bytes | str], raws: Sequence[Mapping[Any, Any]], states: frozenset[CallState]
) -> tuple[list[CallRecord], list[str]]:
    """Records of the live index that are in ``states``, and index entries to drop."""
    found, stale = [], []
    for call_id, raw in zip(ids, raws, strict=True):
        record = CallRecord.from_hash(raw) if raw else None
        if record is None or record.terminal:
            stale.append(text(call_id))
        elif record.state in states:
            found.append(record)
    return found, stale
