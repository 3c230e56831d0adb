"""Reconciliation: the emulator's ground truth against what Switchboard recorded.

After a run (with or without faults), ``reconcile`` checks every placed call:

- accounted for: the call record exists and is terminal, with an end reason; the
  emulator's call is over too (ended, rejected or missed);
- the two sides agree: a call the API accepted is not recorded as failed or rejected,
  a call recorded as accepted was accepted by the API (unless the record says its
  accept is unconfirmed, an ambiguous 404, and it ended ``caller_gone``), a rejected
  call has the same SIP code on both sides;
- accepted cleanly: the emulator found no defect in an accepted call (an accept or
  ``session.update`` that overrides the SIP audio format, see ``emulator.calls``);
- decided once: at most one successful accept and one successful reject per call
  (the REST answers are counted by ``RestRecorder``; repeats the API refused with 404
  because the call was decided already are counted too, as ``repeat_decisions``);
- tools once: at most one tool output per tool-call id; and given the ids the tools
  ran for (``tool_runs``, from ``tests.support.chaos_tools``' log), every tool call of
  a logging tool ran at most once, and every one answered with a tool's result (not an
  error output) really ran;
- tools answered: every function call the model made got an output, unless the call
  ended before one could matter (``unanswered_tool_calls``), or the runner that took it
  died with it before it could note it anywhere (``tool_calls_lost_with_a_runner``:
  counted, not a problem; the next runner cannot know the model made it);
- one sideband at a time: no overlapping attachments;
- money: each call's ``cost_usd`` is the price table applied to the usage the
  emulator billed, or else the price of exactly the ``response.done`` usages it sent
  on a socket (at most one lost per dropped socket);
- the whole cluster (given ``cluster_calls``, every call this Redis has seen): its cost
  total is the sum over all those calls, and no tool ran for a tool call none of them made;
- nothing held: no admission slot, live-index entry or pending hand-over left.

The result is a ``Reconciliation`` with counts (for soak figures) and a list of
problems; ``assert_clean`` fails with all of them at once.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson
import redis

from shared import keys
from shared.accounting import Accounting
from shared.models import CallRecord, EndReason
from shared.pricing import (
    PriceTable,
    TokenCounts,
    cost_of,
    cost_of_tokens,
    default_price_table,
)
from tests.support.chaos_stack import RestRecorder
from tests.support.chaos_tools import LOGGED_TOOLS
from tests.support.emulator import EmulatorHandle
from workers.actions import ACCEPT_UNCONFIRMED

EMULATOR_OVER = frozenset({"ended", "rejected", "missed"})
SEEN: list[Reconciliation] = []
"""Every reconciliation of this process, in order (the chaos run's figures come from it)."""
DEFAULT_MODEL = "gpt-realtime"
ANSWER_WITHIN_S = 10.0
"""How long a tool call's output may take and still be on time: the tool's timeout (3 s
at most in the test policies) plus a failover (a lease's expiry, a sweep and an attach:
about 5 s), with a margin."""
CALL_CONTROL_TOOLS = frozenset({"transfer_call", "end_call"})
LOST_WITH_A_RUNNER_S = 1.0
"""How soon after a function call the socket that took it must have gone without a close
frame (its runner's process died) for the call to count as lost with that runner: a
live runner reads the event, claims its tool or saves a snapshot with it, within
milliseconds, a loaded one well within this."""
NO_CLOSE_FRAME = frozenset({1005, 1006})
"""Close codes the emulator records for a client that went without sending one."""


@dataclass
class Reconciliation:
    """Figures and problems of one reconciliation."""

    placed: int = 0
    accounted: int = 0
    lost: list[str] = field(default_factory=list)
    doubled_accepts: list[str] = field(default_factory=list)
    doubled_tools: list[str] = field(default_factory=list)
    doubled_tool_runs: list[str] = field(default_factory=list)
    """Tool-call ids a tool ran for more than once."""
    unrun_results: list[str] = field(default_factory=list)
    """Tool-call ids answered with a tool's result although the tool never ran for them."""
    unanswered_tools: list[str] = field(default_factory=list)
    """Tool-call ids the model never got an output for, although the call went on."""
    tools_lost_with_a_runner: list[str] = field(default_factory=list)
    """Unanswered tool-call ids whose function call died with the runner that took it."""
    overlapping: list[str] = field(default_factory=list)
    leaked_slots: list[str] = field(default_factory=list)
    defective: list[str] = field(default_factory=list)
    """Accepted calls in which the emulator recorded a defect."""
    cost_mismatches: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    end_reasons: Counter[str] = field(default_factory=Counter)
    record_states: Counter[str] = field(default_factory=Counter)
    emulator_states: Counter[str] = field(default_factory=Counter)
    accept_statuses: Counter[int] = field(default_factory=Counter)
    repeat_decisions: int = 0
    unconfirmed_accepts: int = 0
    """Calls taken as accepted on an ambiguous 404 that the API turned out not to have."""
    """Accepts and rejects of an already decided call (each refused, changing nothing)."""
    tool_calls: int = 0
    tool_outputs: int = 0
    tool_runs: int | None = None
    cost_usd: Decimal = Decimal(0)
    usage_unseen_usd: Decimal = Decimal(0)
    """Billed for responses that ended while no sideband was attached to hear them."""

    def problem(self, text: str) -> None:
        self.problems.append(text)

    def as_json(self) -> dict[str, Any]:
        return {
            "calls_placed": self.placed,
            "calls_accounted_for": self.accounted,
            "lost": len(self.lost),
            "doubled_accepts": len(self.doubled_accepts),
            "doubled_tool_calls": len(self.doubled_tools),
            "doubled_tool_runs": len(self.doubled_tool_runs),
            "tool_results_without_a_run": len(self.unrun_results),
            "unanswered_tool_calls": len(self.unanswered_tools),
            "tool_calls_lost_with_a_runner": len(self.tools_lost_with_a_runner),
            "overlapping_attachments": len(self.overlapping),
            "leaked_admission_slots": len(self.leaked_slots),
            "defective_calls": len(self.defective),
            "cost_mismatches": len(self.cost_mismatches),
            "problems": self.problems[:50],
            "end_reasons": dict(self.end_reasons),
            "record_states": dict(self.record_states),
            "emulator_states": dict(self.emulator_states),
            "accept_statuses": {str(k): v for k, v in sorted(self.accept_statuses.items())},
            "repeat_decisions": self.repeat_decisions,
            "unconfirmed_accepts_found_gone": self.unconfirmed_accepts,
            "tool_calls": self.tool_calls,
            "tool_outputs": self.tool_outputs,
            "tool_runs": self.tool_runs,
            "cost_usd": str(self.cost_usd),
            "usage_unseen_while_detached_usd": str(self.usage_unseen_usd),
        }

    def assert_clean(self) -> None:
        assert self.placed > 0, "nothing was placed"
        assert not self.problems, f"{len(self.problems)} reconciliation problems:\n" + "\n".join(
            self.problems[:40]
        )


def _issued_tool_calls(truth: dict[str, Any]) -> dict[str, str]:
    """The tool calls the model made in this call: tool name by tool-call id."""
    return {
        str(event.get("call_id")): str(event.get("name"))
        for event in truth.get("events_sent", [])
        if event.get("type") == "response.function_call_arguments.done"
    }


def is_tool_result(output: str) -> bool:
    """True for an output a tool's return value made (a JSON object without ``error``).

    Error outputs (``{"error": ...}``) and plain-text notes (a tool that could not be run,
    or whose outcome a failover lost) are not results: they need no run behind them.
    """
    try:
        parsed = orjson.loads(output)
    except orjson.JSONDecodeError:
        return False
    return isinstance(parsed, dict) and "error" not in parsed


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _record(rdb: redis.Redis, call_id: str) -> CallRecord | None:
    raw = rdb.hgetall(keys.call_record(call_id))
    return CallRecord.from_hash(raw) if raw else None  # type: ignore[arg-type]


def call_settled(emu: EmulatorHandle, rdb: redis.Redis, call_id: str) -> bool:
    """True once both sides consider the call over."""
    truth = emu.call(call_id, events=False)
    if truth["state"] not in EMULATOR_OVER:
        return False
    record = _record(rdb, call_id)
    return record is not None and record.terminal


def wait_settled(
    emu: EmulatorHandle, rdb: redis.Redis, call_ids: Iterable[str], timeout_s: float
) -> list[str]:
    """Poll until every call is over on both sides; returns those that are not (on timeout)."""
    waiting = list(call_ids)
    deadline = time.monotonic() + timeout_s
    while waiting and time.monotonic() < deadline:
        waiting = [call_id for call_id in waiting if not _settled_quietly(emu, rdb, call_id)]
        if waiting:
            time.sleep(0.2)
    return waiting


def _settled_quietly(emu: EmulatorHandle, rdb: redis.Redis, call_id: str) -> bool:
    try:
        return call_settled(emu, rdb, call_id)
    except redis.RedisError:
        return False


def wait_slots_free(rdb: redis.Redis, timeout_s: float) -> None:
    """Poll until no admission slot is held (the runners release them as calls end)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and rdb.zcard(keys.ADMISSION_ACTIVE):
        time.sleep(0.1)


def reconcile(
    emu: EmulatorHandle,
    rdb: redis.Redis,
    call_ids: Iterable[str],
    *,
    recorder: RestRecorder | None = None,
    tool_runs: Iterable[str] | None = None,
    logged_tools: Collection[str] = LOGGED_TOOLS,
    cluster_calls: Collection[str] | None = None,
    table: PriceTable | None = None,
) -> Reconciliation:
    """Check ``call_ids`` (see the module docstring).

    ``tool_runs``: the tool-call id of every run of the tools named in ``logged_tools``
    (an id once per run), for as long as this Redis has served calls.
    ``cluster_calls``: every call this Redis has seen, ``call_ids`` among them (the others
    already reconciled and over), so the cluster totals, the admission sets and the live
    index must match them exactly.
    """
    table = table or default_price_table()
    result = Reconciliation()
    runs = Counter(tool_runs) if tool_runs is not None else None
    if runs is not None:
        result.tool_runs = 0
    issued: set[str] = set()
    checked = list(call_ids)
    for call_id in checked:
        result.placed += 1
        issued |= _check_call(result, emu, rdb, call_id, recorder, table, runs, logged_tools)
    held = [*rdb.hkeys(keys.ADMISSION_HOLDERS), *rdb.zrange(keys.ADMISSION_ACTIVE, 0, -1)]
    result.leaked_slots = sorted({_text(member) for member in held})
    if result.leaked_slots:
        result.problem(f"admission slots still held: {result.leaked_slots[:10]}")
    if cluster_calls is not None:
        earlier = [call_id for call_id in cluster_calls if call_id not in set(checked)]
        _check_cluster(result, emu, rdb, table, earlier)
        if runs is not None:
            for call_id in earlier:
                issued |= set(_issued_tool_calls(emu.call(call_id)))
            foreign = sorted(set(runs) - issued)
            if foreign:
                result.problem(f"tools ran for tool calls no call made: {foreign[:10]}")
    SEEN.append(result)
    return result


def _check_call(
    result: Reconciliation,
    emu: EmulatorHandle,
    rdb: redis.Redis,
    call_id: str,
    recorder: RestRecorder | None,
    table: PriceTable,
    runs: Counter[str] | None,
    logged_tools: Collection[str],
) -> set[str]:
    """Check one call; returns the ids of the tool calls the model made in it."""
    truth = emu.call(call_id)
    issued = _issued_tool_calls(truth)
    record = _record(rdb, call_id)
    result.emulator_states[truth["state"]] += 1
    result.repeat_decisions += len(truth["repeat_decisions"])
    if truth["state"] not in EMULATOR_OVER:
        result.problem(f"{call_id}: still {truth['state']} at the emulator")
    if record is None:
        result.lost.append(call_id)
        result.problem(f"{call_id}: no call record (emulator: {truth['state']})")
        return set(issued)
    result.record_states[record.state.value] += 1
    if record.terminal and record.end_reason:
        result.accounted += 1
        result.end_reasons[record.end_reason] += 1
    else:
        result.lost.append(call_id)
        result.problem(
            f"{call_id}: recorded {record.state.value} with end reason {record.end_reason!r}"
            f" (emulator: {truth['state']}, ended_by {truth['ended_by']})"
        )
    accepted_by_api = truth["accept"] is not None
    if accepted_by_api and record.state.value in ("failed", "rejected"):
        result.problem(f"{call_id}: accepted by the API but recorded {record.state.value}")
    if record.accepted_at is not None and not accepted_by_api:
        # Taken as accepted on an ambiguous 404 (workers.actions): fine if it says so and
        # the runner's attach then found the call gone.
        unconfirmed = (record.model_extra or {}).get(ACCEPT_UNCONFIRMED) == "1"
        if unconfirmed and record.end_reason == EndReason.CALLER_GONE:
            result.unconfirmed_accepts += 1
        else:
            result.problem(f"{call_id}: recorded as accepted but the API never accepted it")
    if accepted_by_api and truth["defects"]:
        result.defective.append(call_id)
        result.problem(f"{call_id}: defects at the emulator: {truth['defects']}")
    if truth["state"] == "rejected" and (
        record.state.value != "rejected" or record.reject_code != truth["reject_status"]
    ):
        result.problem(
            f"{call_id}: rejected {truth['reject_status']} by the API, recorded "
            f"{record.state.value} {record.reject_code}"
        )
    if recorder is not None:
        accepts = recorder.statuses(call_id, "accept")
        result.accept_statuses.update(accepts)
        if accepts.count(200) > 1 or recorder.statuses(call_id, "reject").count(200) > 1:
            result.doubled_accepts.append(call_id)
            result.problem(f"{call_id}: decided more than once: accept answers {accepts}")
        if accepted_by_api and accepts.count(200) != 1:
            result.problem(f"{call_id}: accepted, but accept answers were {accepts}")
    outputs = Counter(str(out.get("call_id")) for out in truth["tool_outputs"])
    result.tool_outputs += sum(outputs.values())
    result.tool_calls += len(issued)
    doubled = sorted(tool_id for tool_id, n in outputs.items() if n > 1)
    if doubled:
        result.doubled_tools.append(call_id)
        result.problem(f"{call_id}: tool calls answered more than once: {doubled}")
    result.tools_lost_with_a_runner += tool_calls_lost_with_a_runner(truth)
    unanswered = unanswered_tool_calls(truth)
    if unanswered:
        result.unanswered_tools += unanswered
        result.problem(f"{call_id}: tool calls never answered: {unanswered}")
    if runs is not None:
        _check_tool_runs(result, call_id, truth, issued, runs, logged_tools)
    if truth["overlapping_attachments"]:
        result.overlapping.append(call_id)
        result.problem(f"{call_id}: overlapping sideband attachments {truth['attachments']}")
    model = (truth["accept"] or {}).get("model") or DEFAULT_MODEL
    billed = cost_of_tokens(TokenCounts.from_dict(truth["usage"]), model, table).total_usd
    result.cost_usd += record.cost_usd
    if record.cost_usd == billed:
        return set(issued)
    # Responses that finished while no sideband was attached (after a drop, or after
    # our side closed it at the end of the call), or whose response.done was the event
    # a dropped socket never carried, were never reported to us: they are billed but
    # cannot be counted. Everything that was reported must be, at its exact price.
    drops = _dropped_attachments(truth)
    reported = _reported_usage(truth)
    counted = set(rdb.hkeys(keys.call_counted(call_id))) & set(reported)
    seen = sum((cost_of(reported[rid], model, table).total_usd for rid in counted), Decimal(0))
    missed = len(reported) - len(counted)
    result.usage_unseen_usd += billed - record.cost_usd
    if record.cost_usd != seen or missed > drops:
        result.cost_mismatches.append(call_id)
        result.problem(
            f"{call_id}: cost_usd {record.cost_usd} but the reported usage costs {billed}"
            f" ({len(reported)} responses reported, {len(counted)} counted, {drops} drops)"
        )
    return set(issued)


def unanswered_tool_calls(truth: dict[str, Any]) -> list[str]:
    """The ids of the tool calls the model made in a call (its emulator ground truth,
    events included) and never got an output for, although the call went on.

    Not flagged: a function call no socket took (the emulator dropped the sideband
    instead of sending it, so no runner could know of it); one whose call ended within
    ``ANSWER_WITHIN_S`` (its answer was not due yet: the caller gave up while the tool
    ran or while a failover was under way); a ``transfer_call`` or ``end_call`` whose
    call ended by our Refer or Hangup (accepted, they get no output: the call ends by
    them, and the model needs none); one lost with the runner that took it
    (``tool_calls_lost_with_a_runner``).
    """
    lost = set(tool_calls_lost_with_a_runner(truth))
    return [tool_id for tool_id in _overdue_tool_calls(truth) if tool_id not in lost]


def tool_calls_lost_with_a_runner(truth: dict[str, Any]) -> list[str]:
    """The overdue tool calls (see ``unanswered_tool_calls``) that died with the runner
    that took them: every socket the function call went to closed without a close frame
    (the runner's process died; the emulator did not close it, nor did the runner),
    before the call ended and within ``LOST_WITH_A_RUNNER_S`` of the event. The runner
    died with the event unread in its socket, or before it could claim the tool or save
    a snapshot with it: the runner taking the call over cannot know of it (the API
    repeats no event)."""
    sent = {str(call["call_id"]): call for call in truth.get("function_calls", [])}
    spans = truth.get("attachments", [])
    ended_at = truth.get("ended_at")
    over_at = float(ended_at) if ended_at is not None else float("inf")
    found = []
    for tool_id in _overdue_tool_calls(truth):
        call = sent.get(tool_id)
        if call is None:
            continue
        took_it = [spans[n] for n in call.get("attachments", []) if n < len(spans)]
        at = float(call["at"])
        if took_it and all(
            span.get("closed_by") == "client"
            and span.get("close_code") in NO_CLOSE_FRAME
            and span["closed_at"] is not None
            and span["closed_at"] < over_at - 0.001
            and span["closed_at"] - at <= LOST_WITH_A_RUNNER_S
            for span in took_it
        ):
            found.append(tool_id)
    return found


def _overdue_tool_calls(truth: dict[str, Any]) -> list[str]:
    """Tool calls a socket took, never answered, whose answer was due while the call
    went on (every exception of ``unanswered_tool_calls`` but the last)."""
    issued = _issued_tool_calls(truth)
    answered = {str(out.get("call_id")) for out in truth["tool_outputs"]}
    sent = {str(call["call_id"]): call for call in truth.get("function_calls", [])}
    ended_at = truth.get("ended_at")
    over_at = float(ended_at) if ended_at is not None else time.time()
    found = []
    for tool_id, name in sorted(issued.items()):
        call = sent.get(tool_id)
        if tool_id in answered or (call is not None and not call["delivered"]):
            continue
        if call is not None and over_at - float(call["at"]) <= ANSWER_WITHIN_S:
            continue
        if name in CALL_CONTROL_TOOLS and truth["ended_by"] in ("refer", "hangup"):
            continue
        found.append(tool_id)
    return found


def _check_tool_runs(
    result: Reconciliation,
    call_id: str,
    truth: dict[str, Any],
    issued: dict[str, str],
    runs: Counter[str],
    logged_tools: Collection[str],
) -> None:
    """Each tool call of a logging tool ran at most once, and ran if it got a result."""
    answered = {str(out.get("call_id")): str(out.get("output")) for out in truth["tool_outputs"]}
    results = {
        str(out.get("call_id"))
        for out in truth["tool_outputs"]
        if is_tool_result(str(out.get("output")))
    }
    for tool_id, name in sorted(issued.items()):
        if name not in logged_tools:
            continue
        ran = runs.get(tool_id, 0)
        assert result.tool_runs is not None
        result.tool_runs += ran
        if ran > 1:
            result.doubled_tool_runs.append(tool_id)
            result.problem(f"{call_id}: {name} ran {ran} times for tool call {tool_id}")
        if ran == 0 and tool_id in results:
            result.unrun_results.append(tool_id)
            result.problem(
                f"{call_id}: tool call {tool_id} answered {answered[tool_id][:80]!r}"
                f" but {name} never ran for it"
            )


def _dropped_attachments(truth: dict[str, Any]) -> int:
    """Sidebands lost before the call ended (a drop, or a runner that died holding it).

    A socket closed at the end of the call closes at or after ``ended_at``; one that was
    lost closes earlier, including the last one when no runner re-attached in time.
    """
    ended_at = truth.get("ended_at")
    if ended_at is None:
        return len(truth["attachments"])
    return sum(
        1
        for span in truth["attachments"]
        if span["closed_at"] is not None and span["closed_at"] < float(ended_at) - 0.001
    )


def _reported_usage(truth: dict[str, Any]) -> dict[str, Any]:
    """Usage of each ``response.done`` the emulator sent on a sideband, by response id."""
    return {
        str(event["response"]["id"]): event["response"]["usage"]
        for event in truth.get("events_sent", [])
        if event.get("type") == "response.done" and event.get("response", {}).get("usage")
    }


def _check_cluster(
    result: Reconciliation,
    emu: EmulatorHandle,
    rdb: redis.Redis,
    table: PriceTable,
    earlier: list[str],
) -> None:
    """The cluster totals against the checked calls plus the ``earlier`` ones."""
    before = Decimal(0)
    for call_id in earlier:
        record = _record(rdb, call_id)
        if record is None:
            if emu.call(call_id, events=False)["accept"] is not None:
                result.problem(f"{call_id}: placed earlier and accepted, but has no record")
            continue
        before += record.cost_usd
    totals = Accounting(rdb, table).cluster_totals()
    expected = result.cost_usd + before
    if totals.cost.total_usd != expected:
        result.problem(
            f"cluster cost {totals.cost.total_usd} != {expected} (the sum over"
            f" {result.placed} calls checked and {len(earlier)} earlier ones)"
        )
    live = rdb.zcard(keys.LIVE_CALLS)
    if live:
        result.problem(f"{live} calls left in the live index")
    pending = rdb.llen(keys.PENDING_CALLS)
    if pending:
        result.problem(f"{pending} call ids left on the pending list")
