"""The command path on a real Redis: validation, the call's stream, outcomes and waiting."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio
from redis.crc import key_slot

from shared import keys
from shared.commands import (
    AsyncCommandQueue,
    CallEnded,
    CallNotFound,
    CommandQueue,
    CommandResult,
    InvalidCommand,
)
from shared.models import CallRecord, CallState
from shared.policy_file import demo_policy
from shared.store import CallStore
from tests.support.redis_server import start_redis
from workers.sessions.commands import Command, DoSay, DoTransfer, parse_command
from workers.sessions.plan import SessionPlan

POLICY = demo_policy()


def new_call(client: redis.Redis, call_id: str, state: CallState = CallState.ACTIVE) -> None:
    store = CallStore(client)
    record = CallRecord.model_validate(
        {"id": call_id, "webhook_id": f"wh_{call_id}", "from": "+1415", "to": "+1800"}
        | {"created_at": 1000.0, "profile": "support"}
    )
    store.create_incoming(record)
    path = {
        CallState.ACCEPTING: [CallState.ACCEPTING],
        CallState.ACTIVE: [CallState.ACCEPTING, CallState.ACTIVE],
        CallState.ENDED: [CallState.ACCEPTING, CallState.ACTIVE, CallState.ENDED],
        CallState.REJECTED: [CallState.REJECTED],
    }[state]
    current = CallState.INCOMING
    for step in path:
        assert store.transition(call_id, current, step).applied
        current = step


@pytest.fixture
def queue(redis_client: redis.Redis) -> CommandQueue:
    return CommandQueue(redis_client, POLICY)


@pytest.fixture
async def async_client(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


def test_a_valid_command_lands_on_the_calls_stream(
    queue: CommandQueue, redis_client: redis.Redis
) -> None:
    new_call(redis_client, "rtc_1")
    before = time.time()
    command_id = queue.enqueue_command("rtc_1", "transfer", {"target": "sip:bob@pbx.example.com"})
    entries = redis_client.xrange(keys.call_commands("rtc_1"))
    assert len(entries) == 1
    fields = entries[0][1]
    assert fields["command_id"] == command_id
    assert fields["kind"] == "transfer"
    assert fields["args"] == '{"target":"sip:bob@pbx.example.com"}'
    assert before <= float(fields["issued_at"]) <= time.time()
    assert redis_client.ttl(keys.call_commands("rtc_1")) > 0


@pytest.mark.parametrize(
    ("kind", "args", "message"),
    [
        ("dance", {}, "unknown command kind"),
        ("transfer", {}, "transfer needs a target"),
        ("transfer", {"target": "bob"}, "unknown transfer target"),
        ("transfer", {"target": "http://x"}, "unknown transfer target"),
        # A named target the support profile is not allowed to use.
        ("transfer", {"target": "billing"}, "unknown transfer target"),
        ("say", {}, "text must be non-empty"),
        ("say", {"text": "   "}, "text must be non-empty"),
        ("say", {"text": "x" * 5000}, "longer than"),
        ("update", {"session": "fast"}, "session object"),
        ("update", {}, "session object"),
        ("hangup", {"goodbye": 3}, "goodbye must be non-empty"),
        ("say", "hello", "args must be an object"),
    ],
)
def test_invalid_commands_are_refused_and_queue_nothing(
    queue: CommandQueue, redis_client: redis.Redis, kind: str, args: Any, message: str
) -> None:
    new_call(redis_client, "rtc_1")
    with pytest.raises(InvalidCommand, match=message):
        queue.enqueue_command("rtc_1", kind, args)
    assert redis_client.exists(keys.call_commands("rtc_1")) == 0


def test_unknown_and_finished_calls_take_no_commands(
    queue: CommandQueue, redis_client: redis.Redis
) -> None:
    new_call(redis_client, "rtc_over", CallState.ENDED)
    new_call(redis_client, "rtc_no", CallState.REJECTED)
    with pytest.raises(CallNotFound):
        queue.enqueue_command("rtc_missing", "hangup", {})
    with pytest.raises(CallNotFound):
        queue.enqueue_command("rtc_{bad}", "hangup", {})
    with pytest.raises(CallEnded, match="ended"):
        queue.enqueue_command("rtc_over", "say", {"text": "hi"})
    with pytest.raises(CallEnded, match="rejected"):
        queue.enqueue_command("rtc_no", "hangup", {})
    assert redis_client.keys("*commands*") == []


def test_the_script_refuses_a_call_that_ended_after_the_first_look(
    redis_client: redis.Redis,
) -> None:
    """The state is checked again inside the script that queues the command."""
    new_call(redis_client, "rtc_race")

    class EndsInBetween(CommandQueue):
        def __init__(self) -> None:
            super().__init__(redis_client, POLICY, clock=self.end_then_now)

        def end_then_now(self) -> float:
            CallStore(redis_client).transition("rtc_race", CallState.ACTIVE, CallState.ENDED)
            return time.time()

    with pytest.raises(CallEnded):
        EndsInBetween().enqueue_command("rtc_race", "hangup", {})
    assert redis_client.exists(keys.call_commands("rtc_race")) == 0


async def test_the_runner_reads_commands_it_can_parse(
    queue: CommandQueue, redis_client: redis.Redis, async_client: redis.asyncio.Redis
) -> None:
    new_call(redis_client, "rtc_1")
    first = queue.enqueue_command("rtc_1", "transfer", {"target": "human"})
    second = queue.enqueue_command("rtc_1", "say", {"text": " Please hold. "})
    runner = AsyncCommandQueue(async_client)

    read = await runner.read_commands("rtc_1", "0")
    assert [c.command_id for c in read] == [first, second]
    plan = SessionPlan(
        call_id="rtc_1",
        model="gpt-realtime",
        profile="support",
        transfer_targets={"human": "sip:agent@pbx.example.com"},
    )
    actions = [
        parse_command(Command(c.command_id, c.kind, c.args, c.issued_at), plan) for c in read
    ]
    assert actions == [DoTransfer("sip:agent@pbx.example.com", None), DoSay("Please hold.")]
    assert await runner.read_commands("rtc_1", read[-1].entry_id) == []


async def test_one_read_serves_many_calls_each_from_its_own_position(
    queue: CommandQueue, redis_client: redis.Redis, async_client: redis.asyncio.Redis
) -> None:
    for call_id in ("rtc_a", "rtc_b", "rtc_c"):
        new_call(redis_client, call_id)
    queue.enqueue_command("rtc_a", "hangup", {})
    second = queue.enqueue_command("rtc_a", "say", {"text": "hi"})
    only = queue.enqueue_command("rtc_b", "hangup", {})
    runner = AsyncCommandQueue(async_client)
    [first_read, _] = await runner.read_commands("rtc_a", "0")

    found = await runner.read_many({"rtc_a": first_read.entry_id, "rtc_b": "0", "rtc_c": "0"})
    assert {call_id: [c.command_id for c in read] for call_id, read in found.items()} == {
        "rtc_a": [second],
        "rtc_b": [only],
    }
    assert await runner.read_many({}) == {}


@pytest.fixture(scope="module")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    child, url = start_redis(tmp_path_factory.mktemp("cluster"), cluster=True)
    try:
        yield url
    finally:
        child.stop()


async def test_many_calls_commands_are_read_on_redis_cluster(cluster_url: str) -> None:
    """Each call's keys share one slot, different calls' do not: one XREAD over several
    calls' streams is refused by a cluster, one pipelined XREAD per stream is not."""
    client = redis.asyncio.RedisCluster.from_url(cluster_url, decode_responses=True)
    try:
        calls = ["rtc_a", "rtc_b", "rtc_c"]
        assert len({key_slot(keys.call_commands(c).encode()) for c in calls}) == len(calls)
        runner = AsyncCommandQueue(client)
        queued: dict[str, str] = {}
        for call_id in calls:
            await client.hset(keys.call_record(call_id), mapping={"state": "active"})
            queued[call_id] = await runner.enqueue_command(call_id, "hangup", {})

        found = await runner.read_many(dict.fromkeys(calls, "0"))
        assert {call_id: [c.command_id for c in read] for call_id, read in found.items()} == {
            call_id: [command_id] for call_id, command_id in queued.items()
        }
    finally:
        await client.aclose()


async def test_a_result_wakes_the_waiter_and_the_first_one_wins(
    queue: CommandQueue, redis_client: redis.Redis, async_client: redis.asyncio.Redis
) -> None:
    new_call(redis_client, "rtc_1")
    command_id = queue.enqueue_command("rtc_1", "say", {"text": "hello"})
    runner = AsyncCommandQueue(async_client)
    got: list[CommandResult | None] = []
    waiter = threading.Thread(target=lambda: got.append(queue.wait_result("rtc_1", command_id, 10)))
    waiter.start()
    async_wait = asyncio.create_task(runner.wait_result("rtc_1", command_id, 10))

    assert await runner.record_result("rtc_1", command_id, True, "said")
    assert not await runner.record_result("rtc_1", command_id, False, "a late duplicate")
    result = await asyncio.wait_for(async_wait, 5)
    await asyncio.to_thread(waiter.join, 5)
    assert result is not None
    assert got
    assert got[0] is not None
    assert (result.ok, result.detail) == (True, "said")
    assert got[0] == result
    assert queue.wait_result("rtc_1", command_id, 0.1) == result


def test_waiting_for_an_unanswered_command_times_out(
    queue: CommandQueue, redis_client: redis.Redis
) -> None:
    new_call(redis_client, "rtc_1")
    command_id = queue.enqueue_command("rtc_1", "hangup", {"goodbye": "Bye now."})
    started = time.monotonic()
    assert queue.wait_result("rtc_1", command_id, 0.3) is None
    assert 0.25 <= time.monotonic() - started < 3
    queue.record_result("rtc_1", command_id, False, "call already over")
    result = queue.wait_result("rtc_1", command_id, 0.3)
    assert result is not None
    assert not result.ok
    assert result.detail == "call already over"


async def test_a_command_wakes_the_runner_holding_the_call(
    queue: CommandQueue, redis_client: redis.Redis, async_client: redis.asyncio.Redis
) -> None:
    new_call(redis_client, "rtc_held")
    new_call(redis_client, "rtc_free")
    redis_client.set(keys.call_lease("rtc_held"), "7:runner-a", px=3000)
    runner = AsyncCommandQueue(async_client)
    waiting = asyncio.create_task(runner.notified("runner-a", block_s=5))
    command_id = await asyncio.to_thread(queue.enqueue_command, "rtc_held", "hangup", {})
    assert await asyncio.wait_for(waiting, 5) == {"rtc_held"}
    found = await runner.read_many({"rtc_held": "0"})
    assert [c.command_id for c in found["rtc_held"]] == [command_id]
    # Nobody holds the other call: its command waits in the stream for whoever takes it.
    await runner.enqueue_command("rtc_free", "hangup", {})
    assert redis_client.keys(keys.runner_commands("*")) == []
    assert await runner.notified("runner-a", block_s=0.05) == set()
