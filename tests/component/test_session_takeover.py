"""Taking a call over from a worker that stopped at the worst moment, and letting go.

Real Redis, the emulator (scripted callers at time scale 0.05) and session workers in
this process (``adopt``, ``SessionWorker.run``, ``CommandReader``), so a test can stop a
worker abruptly (cancelled, its lease left to expire, as a killed runner's would be),
put Redis where such a stop leaves it (a snapshot a batch behind the ledger and the
command outcomes), and check what the next worker does against the emulator's truth.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis
from prometheus_client import CollectorRegistry
from websockets.asyncio.server import ServerConnection, serve

from emulator.usage import ResponseUsage
from shared import keys
from shared.accounting import PENDING_TAKEOVER_S, Accounting
from shared.policy_file import PolicySource
from shared.pricing import cost_of, default_price_table
from shared.realtime_client import AsyncRealtimeClient
from shared.settings import Settings
from shared.store import AsyncCallStore, CallStore
from tests.component.test_accounting import age_mark, half_count
from tests.support.control import create_incoming
from tests.support.emulator import EmulatorHandle, running_emulator
from tests.support.ports import free_port
from tests.support.procs import wait_until_async
from tests.support.runner_stack import (
    RUNNER_POLICY,
    STEADY_LINE,
    SessionStack,
    session_stack,
    write_scenarios,
)
from tests.support.runner_tools import TOOL_LOG_ENV
from workers.sessions.adoption import adopt
from workers.sessions.command_reader import CommandReader
from workers.sessions.protocol import INTERRUPTED
from workers.sessions.services import SessionServices, open_services
from workers.sessions.session_worker import Outcome, SessionWorker
from workers.sessions.tools import UNKNOWN_OUTCOME

LEASE_TTL_S = 60.0
"""Nobody renews leases here: they must outlive each test."""


@pytest.fixture(scope="module")
def emu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorHandle]:
    scenarios = write_scenarios(tmp_path_factory.mktemp("scenarios"))
    with running_emulator(time_scale=0.05, scenario_dirs=[scenarios]) as handle:
        yield handle


@pytest.fixture
def stack(
    redis_server: str, emu: EmulatorHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[SessionStack]:
    with session_stack(redis_server, emu, tmp_path) as running:
        monkeypatch.setenv(TOOL_LOG_ENV, str(running.tool_log))  # tools run in this process
        yield running


class Host:
    """The session workers of one in-process runner, fed by its command reader."""

    def __init__(self, services: SessionServices) -> None:
        self.services = services
        self.workers: dict[str, SessionWorker] = {}
        self.runs: dict[str, asyncio.Task[Outcome]] = {}
        self.reader = CommandReader(
            services.commands, services.store, services.runner_id, self.workers, 100
        )
        self._reading = asyncio.create_task(self.reader.run())

    async def take_on(self, call_id: str) -> SessionWorker:
        lease = await self.services.leases.acquire(call_id)
        assert lease is not None
        record = await AsyncCallStore(self.services.redis).get(call_id)
        assert record is not None
        worker = await adopt(self.services, record, lease)
        self.workers[call_id] = worker
        self.runs[call_id] = asyncio.create_task(worker.run())
        self.reader.read_soon(call_id)
        await self.services.redis.rpush(keys.runner_commands(self.services.runner_id), call_id)  # type: ignore[misc]
        return worker

    async def crash(self, call_id: str) -> None:
        """Stop the worker writing nothing more about its call, and let its lease lapse."""
        self.workers.pop(call_id)
        run = self.runs.pop(call_id)
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
        await self.services.redis.delete(keys.call_lease(call_id))

    async def close(self) -> None:
        for run in [*self.runs.values(), self._reading]:
            run.cancel()
        await asyncio.gather(*self.runs.values(), self._reading, return_exceptions=True)


@asynccontextmanager
async def hosting(settings: Settings, policy: Path, runner_id: str) -> AsyncIterator[Host]:
    async with open_services(
        settings, runner_id, LEASE_TTL_S, CollectorRegistry(), PolicySource(policy)
    ) as services:
        host = Host(services)
        try:
            yield host
        finally:
            await host.close()


async def _ended(stack: SessionStack, call_id: str) -> dict[str, Any]:
    """Wait (without blocking the workers here) until the call ended on both sides."""

    def over() -> bool:
        ended = stack.rdb.hget(keys.call_record(call_id), "state") == "ended"
        return ended and stack.emu.call(call_id, events=False)["state"] == "ended"

    await wait_until_async(over, 30.0, f"call {call_id} ended")
    return stack.emu.call(call_id)


def _create_texts(truth: dict[str, Any]) -> list[str]:
    return [
        str(event.get("response", {}).get("instructions", ""))
        for event in truth["events_received"]
        if event["type"] == "response.create"
    ]


async def test_commands_a_stopped_worker_started_are_never_applied_again(
    stack: SessionStack,
) -> None:
    """Its snapshot knew neither command; Redis knew one was done, one was begun."""
    call_id = stack.place_call("steady-call")
    async with hosting(stack.settings, stack.policy_path, "r-old") as old:
        services = old.services
        lease = await services.leases.acquire(call_id)
        assert lease is not None
        said = await services.commands.enqueue_command(call_id, "say", {"text": "Ticket 42."})
        moved = await services.commands.enqueue_command(call_id, "transfer", {"target": "human"})
        claims = [
            services.store.command_claim_op(call_id, cid, lease.token) for cid in (said, moved)
        ]
        await services.store.write(lease, [op for claim in claims for op in claim])
        await services.commands.record_result(call_id, said, True, "will be said")
        await services.redis.delete(keys.call_lease(call_id))

    async with hosting(stack.settings, stack.policy_path, "r-new") as new:
        worker = await new.take_on(call_id)
        commands = new.services.commands
        later = await commands.enqueue_command(call_id, "say", {"text": "Ticket 43."})
        await wait_until_async(
            lambda: any("Ticket 43." in text for text in _create_texts(stack.emu.call(call_id))),
            10.0,
            "the later say at the emulator",
        )
        texts = _create_texts(stack.emu.call(call_id))
        assert not any("Ticket 42." in text for text in texts), texts  # said once, before
        assert stack.emu.call(call_id, events=False)["refer_target"] is None
        for command_id, outcome in [
            (said, (True, "will be said")),
            (moved, (False, INTERRUPTED)),
            (later, (True, "will be said")),
        ]:
            result = await commands.wait_result(call_id, command_id, 5.0)
            assert result is not None
            assert (result.ok, result.detail) == outcome
        assert not worker.core.state.ended


async def _snapshot_while(stack: SessionStack, call_id: str, state: str) -> bytes:
    """The call's snapshot once its tool ledger shows a tool ``state``, taken as soon as
    that happens, and the snapshot saved last before the tool was called."""
    earlier: list[bytes] = []

    def seen() -> bool:
        raw = stack.rdb.get(keys.call_snapshot(call_id))
        if raw is not None and not json.loads(raw)["core"]["tools"]:
            earlier[:] = [raw.encode()]
        entries = stack.rdb.hvals(keys.call_tools(call_id))
        return any(json.loads(entry)["state"] == state for entry in entries)

    await wait_until_async(seen, 20.0, f"a tool {state}")
    assert earlier, "no snapshot before the tool call"
    return earlier[0]


async def test_a_tool_claimed_after_the_last_snapshot_is_answered_once_by_the_next_worker(
    stack: SessionStack,
) -> None:
    call_id = stack.place_call("steady-slow-order")
    async with hosting(stack.settings, stack.policy_path, "r-old") as old:
        await old.take_on(call_id)
        before_tool = await _snapshot_while(stack, call_id, "running")
        await old.crash(call_id)  # the tool was running: its outcome is lost with it
    stack.rdb.set(keys.call_snapshot(call_id), before_tool)

    async with hosting(stack.settings, stack.policy_path, "r-new") as new:
        await new.take_on(call_id)
        truth = await _ended(stack, call_id)
    [output] = truth["tool_outputs"]
    assert json.loads(output["output"]) == {"error": UNKNOWN_OUTCOME}
    assert len(stack.tool_runs()) == 1
    assert truth["ended_by"] == "caller"


async def test_a_tool_output_sent_after_the_last_snapshot_is_not_sent_again(
    stack: SessionStack,
) -> None:
    call_id = stack.place_call("steady-slow-order")
    async with hosting(stack.settings, stack.policy_path, "r-old") as old:
        await old.take_on(call_id)

        def tool_pending_in_snapshot() -> bool:
            raw = stack.rdb.get(keys.call_snapshot(call_id))
            tools = json.loads(raw)["core"]["tools"] if raw is not None else {}
            return any(tool["ok"] is None for tool in tools.values())

        await wait_until_async(tool_pending_in_snapshot, 20.0, "a snapshot with the tool running")
        while_running = stack.rdb.get(keys.call_snapshot(call_id))
        assert while_running is not None
        await wait_until_async(
            lambda: bool(stack.emu.call(call_id, events=False)["tool_outputs"]),
            10.0,
            "the tool's output at the emulator",
        )
        await old.crash(call_id)
    stack.rdb.set(keys.call_snapshot(call_id), while_running)

    async with hosting(stack.settings, stack.policy_path, "r-new") as new:
        await new.take_on(call_id)
        truth = await _ended(stack, call_id)
    [output] = truth["tool_outputs"]
    assert json.loads(output["output"])["status"] == "archived"
    assert len(stack.tool_runs()) == 1


async def test_a_refer_the_call_decided_is_not_sent_again_by_the_next_worker(
    stack: SessionStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model's ``transfer_call``: the worker stops right after its Refer went out,
    before the call's end or a snapshot were written; the next worker, from the older
    snapshot, ends the call as transferred without referring the caller again."""
    call_id = stack.place_call("transfer-to-human")
    referred = asyncio.Event()
    async with hosting(stack.settings, stack.policy_path, "r-old") as old:
        refer = old.services.realtime.refer

        async def refer_and_stop(refer_call_id: str, target_uri: str) -> None:
            await refer(refer_call_id, target_uri)
            referred.set()
            await asyncio.Event().wait()  # stopped here, until the crash below

        monkeypatch.setattr(old.services.realtime, "refer", refer_and_stop)
        await old.take_on(call_id)
        await asyncio.wait_for(referred.wait(), 20.0)
        await old.crash(call_id)
    assert stack.rdb.hget(keys.call_record(call_id), "state") == "active"

    async with hosting(stack.settings, stack.policy_path, "r-new") as new:
        await new.take_on(call_id)
        truth = await _ended(stack, call_id)
        assert await new.runs[call_id] is Outcome.ENDED
    assert truth["control_requests"] == ["refer"]
    assert truth["refer_target"] == "sip:agent@pbx.example.com"
    record = stack.raw_record(call_id)
    ended = (record.get("end_reason"), record.get("end_detail"))
    assert ended == ("transferred", truth["refer_target"])


@pytest.mark.parametrize("taker_first", [False, True], ids=["left-then-taken", "taken-then-left"])
async def test_a_tool_call_heard_by_a_worker_that_lost_the_call_is_run_by_the_next_one(
    stack: SessionStack, monkeypatch: pytest.MonkeyPatch, taker_first: bool
) -> None:
    """Redis was away when the function call came, so the tool could not be claimed, and
    the runner let the call go before Redis came back (its self-fence). The next worker
    runs the tool once, whether it loaded the call before or after the first one left
    the function call in the ledger."""
    call_id = stack.place_call("steady-order")
    heard, go_on = asyncio.Event(), asyncio.Event()
    async with (
        hosting(stack.settings, stack.policy_path, "r-old") as old,
        hosting(stack.settings, stack.policy_path, "r-new") as new,
    ):

        async def redis_away(*args: object) -> None:
            heard.set()
            raise redis.ConnectionError("Connection refused")

        request = old.services.store.request_tool

        async def request_when_told(*args: Any) -> Any:
            await go_on.wait()
            return await request(*args)

        looked = new.services.store.requested_tools
        looks: list[dict[str, Any]] = []

        async def look(call_ids: Any) -> Any:
            looks.append(found := await looked(call_ids))
            return found

        monkeypatch.setattr(old.services.store, "claim_tool", redis_away)
        monkeypatch.setattr(old.services.store, "request_tool", request_when_told)
        monkeypatch.setattr(new.services.store, "requested_tools", look)
        worker = await old.take_on(call_id)
        await asyncio.wait_for(heard.wait(), 20.0)
        worker.lose()
        if not taker_first:
            go_on.set()
            assert await old.runs[call_id] is Outcome.LOST
        stack.rdb.delete(keys.call_lease(call_id))  # it expired meanwhile
        await new.take_on(call_id)
        # Taken on, and its first look at the ledger done, before the call is left to it.
        await wait_until_async(lambda: bool(looks), 10.0, "the new worker's first read")
        go_on.set()
        assert await old.runs[call_id] is Outcome.LOST
        truth = await _ended(stack, call_id)
        assert await new.runs[call_id] is Outcome.ENDED
    [output] = truth["tool_outputs"]
    assert json.loads(output["output"])["status"] == "shipped"
    assert stack.tool_runs() == ["12345"]


USAGE = ResponseUsage(60, 40, 20, 0, 10, 40).as_event()
SLOW_CLOSE_S = 1.5
"""How long the server below takes to notice our close: longer than a second."""


async def _lose_while_the_api_sends(
    redis_url: str, tmp_path: Path, call_id: str, late: list[dict[str, Any]]
) -> redis.Redis:
    """A worker attached to a server that is slow to see our close loses its lease; the
    server sends ``late`` after the loss, before it reads the close. Returns a client of
    the Redis the worker wrote to."""
    lost = asyncio.Event()

    async def slow_server(connection: ServerConnection) -> None:
        connection.transport.pause_reading()  # our close frame waits unread
        await lost.wait()
        await asyncio.sleep(SLOW_CLOSE_S)
        for event in late:
            await connection.send(orjson.dumps(event).decode())
        connection.transport.resume_reading()
        await connection.wait_closed()

    port = free_port()
    policy = tmp_path / "policy.yaml"
    policy.write_text(RUNNER_POLICY)
    rdb = redis.Redis.from_url(redis_url, decode_responses=True)
    create_incoming(CallStore(rdb), call_id, to=STEADY_LINE)
    rdb.hset(keys.call_record(call_id), mapping={"state": "active", "profile": "steady"})
    settings = Settings(
        redis_url=redis_url,
        openai_base_url=f"http://127.0.0.1:{port}/v1",
        openai_api_key="sk-test",
        config=policy,
    )
    async with serve(slow_server, "127.0.0.1", port), hosting(settings, policy, "r1") as host:
        worker = await host.take_on(call_id)
        await wait_until_async(lambda: worker.core.state.attached, 10.0, "attached")
        worker.lose()
        lost.set()
        assert await host.runs.pop(call_id) is Outcome.LOST
    return rdb


async def test_usage_sent_while_a_worker_lets_go_of_its_socket_is_counted(
    redis_url: str, tmp_path: Path
) -> None:
    """The lease is lost while the API, slow to see our close, still sends a bill: the
    socket is read to its end and the bill is counted, lease or not."""
    done = {"id": "resp_late", "status": "completed", "usage": USAGE}
    late = [{"type": "response.done", "response": done}]
    call_id = "rtc_late_bill"
    rdb = await _lose_while_the_api_sends(redis_url, tmp_path, call_id, late)
    counted = rdb.hkeys(keys.call_counted(call_id))
    assert counted == ["resp_late"]
    expected = cost_of(USAGE, "gpt-realtime", default_price_table()).total_usd
    assert Decimal(str(rdb.hget(keys.call_record(call_id), "cost_usd"))) == expected > 0
    rdb.close()


async def test_a_function_call_sent_while_a_worker_lets_go_is_left_to_the_next(
    redis_url: str, tmp_path: Path
) -> None:
    """The model's function call comes after the lease is lost, while the socket is read
    to its end: nothing runs here, and the ledger holds it for the call's next worker."""
    arguments = '{"order_id": "A12"}'
    call = {"call_id": "call_late", "name": "lookup_order", "arguments": arguments}
    late = [{"type": "response.function_call_arguments.done", "response_id": "resp_1", **call}]
    call_id = "rtc_late_tool"
    rdb = await _lose_while_the_api_sends(redis_url, tmp_path, call_id, late)
    entry = orjson.loads(rdb.hget(keys.call_tools(call_id), "call_late") or "null")
    assert entry == {
        "state": "requested",
        "name": "lookup_order",
        "arguments": arguments,
        "runner": "r1",
    }
    rdb.close()


class RefusedRefer(AsyncRealtimeClient):
    """Real requests to the emulator, each refer with a target it refuses (400)."""

    async def refer(self, call_id: str, target_uri: str) -> None:
        await super().refer(call_id, "mailto:" + target_uri)


async def test_a_transfer_the_api_refuses_is_reported_as_failed(stack: SessionStack) -> None:
    """The core acknowledges a transfer with its request; the result tells the truth."""
    call_id = stack.place_call("steady-call")
    async with hosting(stack.settings, stack.policy_path, "r-refused") as host:
        worker = await host.take_on(call_id)
        await wait_until_async(lambda: worker.socket is not None, 10.0, "the sideband attached")
        refused = RefusedRefer(stack.emu.api_url, stack.emu.api_key)
        good, host.services.realtime = host.services.realtime, refused
        try:
            commands = host.services.commands
            moved = await commands.enqueue_command(call_id, "transfer", {"target": "human"})
            result = await commands.wait_result(call_id, moved, 10.0)
        finally:
            host.services.realtime = good
            await refused.aclose()
        assert result is not None
        assert not result.ok
        assert result.detail.startswith("refer refused by the API"), result.detail
        assert stack.emu.call(call_id, events=False)["refer_target"] is None


async def test_a_call_gone_before_its_first_attach_ends_caller_gone(stack: SessionStack) -> None:
    """Accepted, then over at the API before any runner attached: the attach hears 404."""
    call_id = stack.place_call("steady-call")
    gone = httpx.post(
        f"{stack.emu.api_url}/realtime/calls/{call_id}/hangup",
        headers={"Authorization": f"Bearer {stack.emu.api_key}"},
    )
    assert gone.status_code == 200
    async with hosting(stack.settings, stack.policy_path, "r-late") as host:
        await host.take_on(call_id)
        await wait_until_async(
            lambda: stack.rdb.hget(keys.call_record(call_id), "state") == "ended",
            10.0,
            "the call recorded ended",
        )
    record = stack.raw_record(call_id)
    assert record["end_reason"] == "caller_gone"
    assert stack.emu.call(call_id, events=False)["attachments"] == []


@pytest.mark.parametrize("age_s", [PENDING_TAKEOVER_S, 0], ids=["old", "just-left"])
async def test_a_bill_a_killed_runner_left_half_counted_reaches_the_cluster_totals(
    stack: SessionStack, age_s: int
) -> None:
    """Step 1 of an accrual done (the call's cost), step 2 (the cluster's) not: the runner
    that ends the call finishes it, even when the mark is too young to take over at the
    end (the killed runner left it a moment before): it waits until the mark is due."""
    call_id = stack.place_call("steady-call")
    books = Accounting(stack.rdb)
    bill = {"input_tokens": 120, "output_tokens": 30, "input_token_details": {"text_tokens": 120}}
    bill["output_token_details"] = {"text_tokens": 30}
    half_count(books, call_id, "resp_left", bill)
    age_mark(stack.rdb, call_id, "resp_left", age_s)
    async with hosting(stack.settings, stack.policy_path, "r-finisher") as host:
        worker = await host.take_on(call_id)
        await wait_until_async(lambda: worker.socket is not None, 10.0, "the sideband attached")
        gone = httpx.post(
            f"{stack.emu.api_url}/realtime/calls/{call_id}/hangup",
            headers={"Authorization": f"Bearer {stack.emu.api_key}"},
        )
        assert gone.status_code == 200
        await _ended(stack, call_id)
    assert stack.rdb.hget(keys.call_counted(call_id), "resp_left") == "done"
    assert books.cluster_totals().cost == books.call_cost(call_id).cost
