"""One accrual of usage, worked out before Redis sees it, and the scripts that apply it.

``plan_accrual`` validates and prices one response's usage and lays out the Redis work
``shared.accounting`` carries out; ``ACCRUE`` is the call-slot script (the once-per-
response guard, the call's counters, the record's ``usage`` and exact ``cost_usd``),
``MARK`` the once-per-call guard of outcome counters. Pure: talks to nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

from shared import keys
from shared.errors import CallNotFound
from shared.pricing import Cost, PriceTable, cost_of_tokens, token_counts
from shared.usage_totals import check_label, outcome_field, token_fields

# KEYS: record, counted, usage. ARGV: ttl, response id, cost (plain decimal string),
# record usage increments as JSON, pending takeover age (s), the cluster counters as JSON
# (kept in the pending mark, ``pending:<time>:<json>``, so whoever finishes step 2 for a
# dead writer knows them), then (field, count) pairs for the usage hash. Reply: {status,
# cost_usd of the call}; status -1 no call, 0 counted
# before, 1 new, 2 a stale pending mark taken over (the cluster counters are due).
ACCRUE = """
local function dec_add(a, b)
  local ai, af = string.match(a, '^(%d+)%.?(%d*)$')
  local bi, bf = string.match(b, '^(%d+)%.?(%d*)$')
  if not ai or not bi then return redis.error_reply('cost is not a plain decimal') end
  local n = math.max(#af, #bf)
  local x = ai .. af .. string.rep('0', n - #af)
  local y = bi .. bf .. string.rep('0', n - #bf)
  local m = math.max(#x, #y)
  x = string.rep('0', m - #x) .. x
  y = string.rep('0', m - #y) .. y
  local out, carry = {}, 0
  for i = m, 1, -1 do
    local s = string.byte(x, i) + string.byte(y, i) - 96 + carry
    out[i] = s % 10
    carry = math.floor(s / 10)
  end
  local digits = table.concat(out)
  if carry > 0 then digits = carry .. digits end
  local int = string.sub(digits, 1, #digits - n)
  local frac = string.gsub(string.sub(digits, #digits - n + 1), '0+$', '')
  int = string.gsub(int, '^0+', '')
  if int == '' then int = '0' end
  if frac == '' then return int end
  return int .. '.' .. frac
end
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, ''} end
local now = tonumber(redis.call('TIME')[1])
local seen = redis.call('HGET', KEYS[2], ARGV[2])
if seen then
  local status = 0
  local since = tonumber(string.match(seen, '^pending:(%d+):'))
  -- Only a pending mark older than any live writer's gap between the steps is taken over.
  if since and now - since >= tonumber(ARGV[5]) then
    redis.call('HSET', KEYS[2], ARGV[2], 'pending:' .. now .. ':' .. ARGV[6])
    status = 2
  end
  return {status, redis.call('HGET', KEYS[1], 'cost_usd') or '0'}
end
-- Everything that can fail comes before the first write: scripts do not roll back.
local cost = dec_add(redis.call('HGET', KEYS[1], 'cost_usd') or '0', ARGV[3])
if type(cost) == 'table' then return cost end
local usage = cjson.decode(redis.call('HGET', KEYS[1], 'usage') or '{}')
if type(usage) ~= 'table' then usage = {} end
for name, count in pairs(cjson.decode(ARGV[4])) do
  usage[name] = (tonumber(usage[name]) or 0) + count
end
for i = 7, #ARGV, 2 do redis.call('HINCRBY', KEYS[3], ARGV[i], ARGV[i + 1]) end
redis.call('HSET', KEYS[1], 'usage', cjson.encode(usage), 'cost_usd', cost)
redis.call('HSET', KEYS[2], ARGV[2], 'pending:' .. now .. ':' .. ARGV[6])
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[1]) end
return {1, cost}
"""

# KEYS: counted. ARGV: ttl, marker. Reply: 1 if the marker is new.
MARK = """
local new = redis.call('HSETNX', KEYS[1], ARGV[2], '1')
redis.call('EXPIRE', KEYS[1], ARGV[1])
return new
"""

# KEYS: counted. ARGV: takeover age (s). Takes over every pending mark at least that old
# (re-marked now, so a second taker within the age leaves them alone) and returns
# [youngest mark left pending (its time; -1: none), Redis time (s, us), then response id,
# cluster counters JSON, ...] for step 2.
TAKE_PENDING = """
local time = redis.call('TIME')
local now = tonumber(time[1])
local taken = {-1, time[1], time[2]}
local marks = redis.call('HGETALL', KEYS[1])
for i = 1, #marks, 2 do
  local since, counters = string.match(marks[i + 1], '^pending:(%d+):(.*)$')
  if since and now - tonumber(since) >= tonumber(ARGV[1]) then
    redis.call('HSET', KEYS[1], marks[i], 'pending:' .. now .. ':' .. counters)
    table.insert(taken, marks[i])
    table.insert(taken, counters)
  elseif since and tonumber(since) > taken[1] then
    taken[1] = tonumber(since)
  end
end
return taken
"""


@dataclass(frozen=True, slots=True)
class PendingStep:
    """Step 2 of an accrual a dead writer left undone: the cluster counters it owes."""

    response_id: str
    profile: str | None
    stats_keys: tuple[str, ...]
    counters: tuple[tuple[str, int], ...]


def pending_steps(reply: list[Any]) -> list[PendingStep]:
    """``TAKE_PENDING``'s reply as the steps to finish (a mark that does not parse is
    skipped: it cannot be finished, and it is never taken again by a live accrual)."""
    steps = []
    for raw_id, raw_counters in zip(reply[::2], reply[1::2], strict=True):
        try:
            data = orjson.loads(raw_counters)
            profile = data["profile"]
            counters = tuple((str(name), int(count)) for name, count in data["counters"])
            stats = [keys.STATS]
            if profile is not None:
                stats.append(keys.stats_profile(check_label(profile, "profile")))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
        steps.append(PendingStep(_text(raw_id), profile, tuple(stats), counters))
    return steps


@dataclass(frozen=True, slots=True)
class TakenPending:
    """What one ``TAKE_PENDING`` took over, and when the marks it left come due."""

    steps: list[PendingStep]
    due_in_s: float | None
    """Seconds until every mark it left pending (too young to take over) can be taken
    over; None when it left none."""


def taken_pending(reply: list[Any], takeover_s: int) -> TakenPending:
    """``TAKE_PENDING``'s reply, for a takeover age of ``takeover_s``."""
    youngest, seconds, micros = int(reply[0]), int(reply[1]), int(reply[2])
    now_s = seconds + micros / 1e6
    due_in_s = None if youngest < 0 else max(0.0, youngest + takeover_s - now_s)
    return TakenPending(pending_steps(reply[3:]), due_in_s)


MAX_RESPONSE_ID_LEN = 256
PENDING_TAKEOVER_S = keys.LEASE_TTL_S
"""A response still pending after this was left by a dead process: a replay finishes it.

The steps are one round trip apart in a live process; a replay by another runner comes
no sooner than a lease expiry after the first runner stopped."""


@dataclass(frozen=True, slots=True)
class Accrual:
    """What one ``accrue`` did: whether it counted, the response's cost, the call's total."""

    counted: bool
    """False when the response id had been counted before (nothing added this time)."""
    cost: Cost
    call_cost_usd: Decimal


@dataclass(frozen=True, slots=True)
class AccrualPlan:
    """One accrual's Redis work, computed (and validated) before anything is written."""

    call_id: str
    response_id: str
    cost: Cost
    script_keys: tuple[str, str, str]
    script_args: tuple[Any, ...]
    stats_keys: tuple[str, ...]
    counters: tuple[tuple[str, int], ...]


def plan_accrual(
    call_id: str,
    profile: str | None,
    model: str,
    response_id: str,
    usage: Mapping[str, Any],
    table: PriceTable,
    pending_takeover_s: int = PENDING_TAKEOVER_S,
) -> AccrualPlan:
    """``pending_takeover_s``: how old a pending mark must be to be taken over; 0 when the
    caller may itself have left it (a retry after a lost reply or a failed step 2)."""
    if not isinstance(response_id, str) or not 0 < len(response_id) <= MAX_RESPONSE_ID_LEN:
        raise ValueError(f"response id must be a non-empty string, got {response_id!r}")
    check_label(model, "model")
    stats = [keys.STATS]
    if profile is not None:
        stats.append(keys.stats_profile(check_label(profile, "profile")))
    tokens = token_counts(usage)
    cost = cost_of_tokens(tokens, model, table)
    counters = tuple(token_fields(model, tokens))
    script_args: tuple[Any, ...] = (
        keys.CALL_TTL_S,
        response_id,
        format(cost.total_usd, "f"),
        orjson.dumps(tokens.as_dict()),
        pending_takeover_s,
        orjson.dumps({"profile": profile, "counters": counters}),
        *(part for pair in counters for part in pair),
    )
    script_keys = (keys.call_record(call_id), keys.call_counted(call_id), keys.call_usage(call_id))
    return AccrualPlan(call_id, response_id, cost, script_keys, script_args, tuple(stats), counters)


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def accrual_result(plan: AccrualPlan, reply: list[Any]) -> tuple[Accrual, bool]:
    """The result, and whether the cluster counters still need this response."""
    status, total = int(reply[0]), _text(reply[1])
    if status == -1:
        raise CallNotFound(
            f"no such call {plan.call_id!r}: usage of {plan.response_id} not counted"
        )
    return Accrual(status == 1, plan.cost, Decimal(total)), status in (1, 2)


def outcome_counter(
    outcome: str, profile: str | None, reason: str | None
) -> tuple[str, list[str], str]:
    """The counter, the hashes it lives in, and the once-per-call marker of an outcome."""
    name = outcome_field(outcome, reason)
    stats = [keys.STATS]
    if profile is not None:
        stats.append(keys.stats_profile(check_label(profile, "profile")))
    return name, stats, f"outcome|{outcome}"
