"""Call leases and fenced writes on a real Redis: one holder at a time, stale holders inert."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis
import redis.asyncio

from shared import keys
from shared.commands import AsyncCommandQueue
from shared.models import CallState, EndReason
from shared.store import CallStore
from tests.support.control import create_incoming
from tests.support.procs import wait_until
from workers.sessions.effects import ClaimControl
from workers.sessions.lease import Lease, Leases, Stale
from workers.sessions.session_store import SessionStore, StoredSession
from workers.sessions.tools import FunctionCall, LedgerEntry


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    connection = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    try:
        yield connection
    finally:
        await connection.aclose()


async def test_one_holder_at_a_time_and_every_grant_has_a_larger_token(
    client: redis.asyncio.Redis,
) -> None:
    r1, r2 = Leases(client, "r1", 3.0), Leases(client, "r2", 3.0)

    first = await r1.acquire("rtc_a")
    assert first is not None
    assert await r2.acquire("rtc_a") is None
    assert await r1.acquire("rtc_a") is None  # not re-entrant: a second worker is refused too
    assert await r2.holder("rtc_a") == first

    assert await r1.release(first)
    second = await r2.acquire("rtc_a")
    assert second is not None
    assert second.runner_id == "r2"
    assert second.token > first.token
    assert not await r1.release(first)  # a stale grant cannot free someone else's lease
    assert await r2.holder("rtc_a") == second


async def test_a_holder_whose_lease_expired_and_was_granted_again_writes_nothing(
    client: redis.asyncio.Redis, redis_client: redis.Redis
) -> None:
    slow, fast = Leases(client, "slow", 0.2), Leases(client, "fast", 3.0)
    stale = await slow.acquire("rtc_b")
    assert stale is not None
    wait_until(lambda: not redis_client.exists(keys.call_lease("rtc_b")), 5.0, "lease expiry")
    fresh = await fast.acquire("rtc_b")
    assert fresh is not None

    store = SessionStore(client, slow)
    with pytest.raises(Stale):
        await store.write(stale, store.transcript_op("rtc_b", "caller", "hello", 1.0))
    assert await slow.renew([stale]) == [False]
    assert redis_client.xlen(keys.call_transcript("rtc_b")) == 0

    await store.write(fresh, store.transcript_op("rtc_b", "agent", "hi", 2.0))
    [(_, line)] = redis_client.xrange(keys.call_transcript("rtc_b"))
    assert line == {"role": "agent", "text": "hi", "at": "2.0"}


async def test_writes_to_another_calls_keys_are_refused(client: redis.asyncio.Redis) -> None:
    leases = Leases(client, "r1", 3.0)
    lease = await leases.acquire("rtc_c")
    assert lease is not None
    with pytest.raises(ValueError, match="not a key of call"):
        await leases.fenced(lease, [("SET", keys.call_snapshot("rtc_other"), "x")])


async def test_the_first_attach_activates_the_call_once_and_the_end_is_fenced(
    client: redis.asyncio.Redis, redis_client: redis.Redis
) -> None:
    sync_store = CallStore(redis_client)
    create_incoming(sync_store, "rtc_d")
    sync_store.transition("rtc_d", CallState.INCOMING, CallState.ACCEPTING)
    leases = Leases(client, "r1", 3.0)
    store = SessionStore(client, leases)
    lease = await leases.acquire("rtc_d")
    assert lease is not None

    first = await store.activate(lease, 10.0)
    again = await store.activate(lease, 11.0)
    assert (first.applied, first.state) == (True, CallState.ACTIVE)
    assert (again.applied, again.state) == (False, CallState.ACTIVE)
    assert redis_client.hget(keys.call_record("rtc_d"), "owner") == "r1"

    # Every transcript line counts its turn in the record, in the same script.
    for role in ("caller", "agent", "caller"):
        await store.write(lease, store.transcript_op("rtc_d", role, "hi", 10.5))
    turns = redis_client.hmget(keys.call_record("rtc_d"), ["caller_turns", "agent_turns"])
    assert turns == ["2", "1"]
    assert redis_client.xlen(keys.call_transcript("rtc_d")) == 3

    assert await leases.release(lease)
    with pytest.raises(Stale):
        await store.finish(lease, EndReason.CALLER_HANGUP, {"ended_at": 12.0}, 12.0)
    assert redis_client.hget(keys.call_record("rtc_d"), "state") == "active"


async def test_renewal_reports_which_leases_are_still_ours(client: redis.asyncio.Redis) -> None:
    r1, r2 = Leases(client, "r1", 3.0), Leases(client, "r2", 3.0)
    kept = await r1.acquire("rtc_e")
    gone = await r1.acquire("rtc_f")
    assert kept is not None
    assert gone is not None
    assert await r1.release(gone)
    assert await r2.acquire("rtc_f") is not None

    assert await r1.renew([kept, gone]) == [True, False]
    assert await r1.renew([]) == []


async def test_a_tool_call_id_is_claimed_once_and_its_outcome_is_kept(
    client: redis.asyncio.Redis,
) -> None:
    leases = Leases(client, "r1", 3.0)
    store = SessionStore(client, leases)
    lease = await leases.acquire("rtc_g")
    assert lease is not None

    first = await store.claim_tool(lease, "call_1", "lookup")
    assert first.run
    # The same grant again (a claim whose answer was lost, repeated): still its own.
    assert (await store.claim_tool(lease, "call_1", "lookup")).run
    await leases.release(lease)
    later = await leases.acquire("rtc_g")
    assert later is not None
    second = await store.claim_tool(later, "call_1", "lookup")
    assert (second.run, second.entry) == (False, LedgerEntry("running", "lookup"))
    lease = later

    assert await store.record_tool(lease, "call_1", "lookup", True, '{"status":"ok"}')
    third = await store.claim_tool(lease, "call_1", "lookup")
    done = LedgerEntry("done", "lookup", True, '{"status":"ok"}')
    assert (third.run, third.entry) == (False, done)
    assert await store.tool_entry("rtc_g", "call_1") == done


async def test_a_function_call_left_by_a_worker_without_the_lease_is_claimed_by_the_holder(
    client: redis.asyncio.Redis,
) -> None:
    leases, other = Leases(client, "r1", 3.0), Leases(client, "r2", 3.0)
    store = SessionStore(client, leases)
    heard = FunctionCall("call_1", "lookup", '{"order_id": "A12"}')
    # Nobody holds the call: the next holder finds it when it loads the call.
    assert await store.request_tool("rtc_r", heard, "r0") == (True, None)
    requested = LedgerEntry("requested", "lookup", arguments='{"order_id": "A12"}')
    assert await store.tool_entry("rtc_r", "call_1") == requested
    assert (await store.load("rtc_r")).tools == {"call_1": requested}
    lease = await other.acquire("rtc_r")
    assert lease is not None
    # Held: the holder is named, to be woken; a second request changes nothing.
    again = FunctionCall("call_1", "lookup", "{}")
    assert await store.request_tool("rtc_r", again, "r0") == (False, lease)
    late = FunctionCall("call_2", "weather", "")
    assert await store.request_tool("rtc_r", late, "r0") == (True, lease)
    found = await store.requested_tools(["rtc_r", "rtc_none"])
    assert found == {"rtc_r": [heard, late]}

    claim = await SessionStore(client, other).claim_tool(lease, "call_1", "lookup")
    assert claim.run
    assert await store.tool_entry("rtc_r", "call_1") == LedgerEntry("running", "lookup")
    assert await store.requested_tools(["rtc_r"]) == {"rtc_r": [late]}
    # Nothing recorded is ever overwritten by a request.
    assert await store.request_tool("rtc_r", heard, "r0") == (False, lease)
    assert await store.tool_entry("rtc_r", "call_1") == LedgerEntry("running", "lookup")


async def test_a_tool_output_is_marked_answered_once_and_never_overwritten(
    client: redis.asyncio.Redis,
) -> None:
    leases = Leases(client, "r1", 3.0)
    store = SessionStore(client, leases)
    lease = await leases.acquire("rtc_i")
    assert lease is not None
    await store.claim_tool(lease, "call_1", "lookup")

    answer = await store.answer_tool(lease, "call_1", "lookup", True, "shipped")
    assert answer.sent
    assert not (await store.answer_tool(lease, "call_1", "lookup", True, "shipped")).sent
    # The tool's own record, landing after the answer, does not undo it.
    assert not await store.record_tool(lease, "call_1", "lookup", True, "shipped")
    answered = LedgerEntry("answered", "lookup", True, "shipped")
    assert await store.tool_entry("rtc_i", "call_1") == answered

    # A send that certainly failed takes the mark back, to what was there before.
    assert await store.unanswer_tool(lease, "call_1", answer)
    assert await store.tool_entry("rtc_i", "call_1") == LedgerEntry("running", "lookup")
    assert (await store.answer_tool(lease, "call_1", "lookup", True, "shipped")).sent

    # An id answered without a claim (a refused tool) is taken back to nothing.
    refused = await store.answer_tool(lease, "call_2", "weather", False, "{}")
    assert await store.unanswer_tool(lease, "call_2", refused)
    assert await store.tool_entry("rtc_i", "call_2") is None

    # Sent again after a takeover (never echoed), until the API's echo is noted.
    again = await store.answer_tool(lease, "call_1", "lookup", True, "shipped", again=True)
    assert again.sent
    delivered = store.tool_delivered_op("rtc_i", "call_1", "lookup", True, "shipped")
    await store.write(lease, delivered)
    assert not (await store.answer_tool(lease, "call_1", "lookup", True, "x", again=True)).sent
    assert not await store.unanswer_tool(lease, "call_1", again)  # not what it was
    assert (await store.tool_entry("rtc_i", "call_1")) == LedgerEntry(
        "delivered", "lookup", True, "shipped"
    )

    stale = Lease("rtc_i", "r1", lease.token - 1)
    with pytest.raises(Stale):
        await store.answer_tool(stale, "call_3", "lookup", True, "x")
    assert await store.tool_entry("rtc_i", "call_3") is None


async def test_a_takeover_loads_snapshot_command_outcomes_claims_and_ledger_at_once(
    client: redis.asyncio.Redis,
) -> None:
    leases = Leases(client, "r1", 3.0)
    store = SessionStore(client, leases)
    lease = await leases.acquire("rtc_j")
    assert lease is not None
    assert await store.load("rtc_j") == StoredSession()

    queue = AsyncCommandQueue(client)
    await queue.record_result("rtc_j", "cmd_1", True, "will be said")
    await store.write(lease, store.command_claim_op("rtc_j", "cmd_1", lease.token))
    await store.write(lease, store.command_claim_op("rtc_j", "cmd_2", lease.token))
    await store.claim_tool(lease, "call_1", "lookup")
    await store.write(lease, store.snapshot_op(lease, {"x": 1}, "5-0", 1.0))

    stored = await store.load("rtc_j")
    assert stored.snapshot is not None
    assert (stored.snapshot["core"], stored.snapshot["command_cursor"]) == ({"x": 1}, "5-0")
    assert stored.command_results == {"cmd_1": (True, "will be said")}
    assert stored.command_claims == {"cmd_1", "cmd_2"}
    assert stored.tools == {"call_1": LedgerEntry("running", "lookup")}
    assert stored.control is None


async def test_a_call_is_referred_or_hung_up_on_one_claim_only(
    client: redis.asyncio.Redis, redis_client: redis.Redis
) -> None:
    leases = Leases(client, "r1", 3.0)
    store = SessionStore(client, leases)
    lease = await leases.acquire("rtc_k")
    assert lease is not None
    refer = ClaimControl("refer", EndReason.TRANSFERRED, "sip:a@b", "sip:a@b", "cmd_1")
    claim = store.control_json(refer, lease.token, 1.0)
    note = store.event_op("rtc_k", "note", 1.0, {})
    assert await store.claim_control(lease, note, claim)
    assert redis_client.xlen(keys.call_events("rtc_k")) == 1  # in the same script
    assert await store.claim_control(lease, [], claim)  # a retry of the same claim
    hangup = store.control_json(ClaimControl("hangup", EndReason.IDLE), lease.token, 2.0)
    assert not await store.claim_control(lease, [], hangup)
    assert (await store.load("rtc_k")).control == refer

    await leases.release(lease)
    again = await leases.acquire("rtc_k")
    assert again is not None
    assert not await store.claim_control(again, [], store.control_json(refer, again.token, 3.0))
    with pytest.raises(Stale):
        await store.claim_control(lease, [], claim)

    redis_client.set(keys.call_control("rtc_k"), "{not json")
    unreadable = (await store.load("rtc_k")).control
    assert unreadable is not None
    assert (unreadable.action, unreadable.reason) == ("hangup", EndReason.ERROR)


async def test_snapshots_round_trip_with_their_command_cursor(client: redis.asyncio.Redis) -> None:
    leases = Leases(client, "r1", 3.0)
    store = SessionStore(client, leases)
    lease = await leases.acquire("rtc_h")
    assert lease is not None
    assert await store.load_snapshot("rtc_h") is None

    await store.write(lease, store.snapshot_op(lease, {"version": 1}, "17-0", 5.0))
    snapshot = await store.load_snapshot("rtc_h")
    assert snapshot is not None
    assert snapshot["core"] == {"version": 1}
    assert snapshot["command_cursor"] == "17-0"
    assert (snapshot["runner"], snapshot["token"]) == ("r1", lease.token)
