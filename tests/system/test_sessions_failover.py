"""Runners dying, draining and full: calls move between real ``switchboard runner``
processes, and a runner takes calls only while it has room.

Calls are scripted callers (time scale 0.05, about 5 s of talk each) that keep talking
through a gap in the sideband, so a call that moves must go on to its normal end. Some
look an order up with a slow tool (``runner_tools.slow_lookup``), so a runner can be
killed while a tool runs. The emulator's ground truth says whether two sidebands were
ever attached at once and how often each tool call was answered; the tools' own log says
how often they ran.
"""

from __future__ import annotations

import itertools
import json
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared import keys
from shared.runner_registry import list_runners, request_drain
from tests.observability.exposition import scrape, value
from tests.support.emulator import EmulatorHandle, running_emulator
from tests.support.ports import free_port
from tests.support.procs import wait_until
from tests.support.runner_stack import SessionStack, session_stack, write_scenarios
from workers.sessions.tools import UNKNOWN_OUTCOME

pytestmark = pytest.mark.system

CALLS = ("steady-slow-order", "steady-call", "steady-slow-order", "steady-call")
TOOL_CALLS = CALLS.count("steady-slow-order")
FAILOVER_TARGET_S = 5.0


@pytest.fixture(scope="module")
def emu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorHandle]:
    scenarios = write_scenarios(tmp_path_factory.mktemp("scenarios"))
    with running_emulator(time_scale=0.05, scenario_dirs=[scenarios]) as handle:
        yield handle


@pytest.fixture
def stack(redis_server: str, emu: EmulatorHandle, tmp_path: Path) -> Iterator[SessionStack]:
    with session_stack(redis_server, emu, tmp_path) as running:
        yield running


def _busiest(stack: SessionStack, call_ids: list[str]) -> tuple[str, list[str]]:
    """Place the calls; wait until all are attached; the runner holding most, and its calls."""
    for call_id in call_ids:
        stack.wait_state(call_id, "active")
    held: dict[str, list[str]] = {}
    for call_id in call_ids:
        holder = stack.holder(call_id)
        assert holder is not None
        held.setdefault(holder, []).append(call_id)
    victim = max(held, key=lambda runner_id: len(held[runner_id]))
    return victim, held[victim]


def _check_completed(stack: SessionStack, call_ids: list[str], moved: list[str]) -> None:
    """Every call went on to its normal end, never with two sidebands at once."""
    for call_id in call_ids:
        truth = stack.wait_ended(call_id)
        assert truth["ended_by"] == "caller", (call_id, truth["ended_by"])
        assert not truth["overlapping_attachments"], truth["attachments"]
        record = stack.record(call_id)
        assert record.end_reason == "caller_hangup"
        # Turn counts come from the restored core; the transcript from fenced writes.
        turns = int(stack.raw_record(call_id)["caller_turns"])
        turns += int(stack.raw_record(call_id)["agent_turns"])
        assert turns == stack.rdb.xlen(keys.call_transcript(call_id))
        if call_id in moved:
            assert len(truth["attachments"]) >= 2, truth["attachments"]
    _check_tools(stack, call_ids)


def _check_tools(stack: SessionStack, call_ids: list[str]) -> dict[str, str]:
    """Each tool call ran once and was answered once; the output of each, by id."""
    issued: set[str] = set()
    outputs: dict[str, str] = {}
    for call_id in call_ids:
        truth = stack.emu.call(call_id)
        called = {
            str(event["call_id"])
            for event in truth["events_sent"]
            if event["type"] == "response.function_call_arguments.done"
        }
        answered = Counter(str(output["call_id"]) for output in truth["tool_outputs"])
        assert answered == Counter(called), (call_id, answered, called)
        issued |= called
        outputs |= {str(out["call_id"]): str(out["output"]) for out in truth["tool_outputs"]}
    assert len(stack.tool_runs()) == len(issued) >= 1
    return outputs


def _running_tool(stack: SessionStack, call_ids: list[str]) -> list[str]:
    """The calls whose tool ledger shows a tool running now."""
    return [
        call_id
        for call_id in call_ids
        if any(
            json.loads(entry)["state"] == "running"
            for entry in stack.rdb.hvals(keys.call_tools(call_id))
        )
    ]


def _start_with_metrics(stack: SessionStack, *runner_ids: str) -> dict[str, str]:
    """Start runners serving ``/metrics``; runner id -> metrics URL."""
    urls = {}
    for runner_id in runner_ids:
        port = free_port()
        stack.start_runner(runner_id, "--metrics-port", str(port))
        urls[runner_id] = f"http://127.0.0.1:{port}/metrics"
    return urls


def _takeovers(url: str) -> float:
    """Calls a runner attached to after another runner held them (failover, hand-over)."""
    return value(scrape(url), "switchboard_session_attaches_total", kind="takeover")


def _largest_gap_s(attachments: list[dict[str, Any]]) -> float:
    gaps = [
        later["opened_at"] - earlier["closed_at"]
        for earlier, later in itertools.pairwise(attachments)
    ]
    return max(gaps, default=0.0)


def test_a_killed_runners_calls_continue_on_the_other_runner(stack: SessionStack) -> None:
    """Killed while its calls' tools run: no tool runs again, and the runner taking a
    call over answers its tool call (the outcome is unknown) exactly once."""
    metrics_urls = _start_with_metrics(stack, "r1", "r2")
    call_ids = [stack.place_call(scenario) for scenario in CALLS]
    for call_id in call_ids:
        stack.wait_state(call_id, "active")
    # Every tool call claimed (running): none is between the model's call and the claim,
    # where a runner killed would take the only news of it along.
    running: list[str] = []

    def tools_running() -> bool:
        running[:] = _running_tool(stack, call_ids)
        return len(running) == TOOL_CALLS

    wait_until(tools_running, 20.0, "every tool running")
    victim = stack.holder(running[0])
    assert victim is not None
    moved = [call_id for call_id in call_ids if stack.holder(call_id) == victim]
    survivor = "r2" if victim == "r1" else "r1"

    stack.stop_runner(victim, signal.SIGKILL)
    for call_id in moved:
        wait_until(lambda cid=call_id: stack.holder(cid) == survivor, 10.0, f"{call_id} taken over")

    _check_completed(stack, call_ids, moved)
    outputs = _check_tools(stack, call_ids)
    assert len(outputs) == TOOL_CALLS
    for call_id in set(moved) & set(running):
        [(interrupted, entry)] = stack.rdb.hgetall(keys.call_tools(call_id)).items()
        assert json.loads(entry)["state"] == "delivered"
        assert json.loads(outputs[interrupted]) == {"error": UNKNOWN_OUTCOME}
    for call_id in moved:
        truth = stack.emu.call(call_id, events=False)
        assert _largest_gap_s(truth["attachments"]) < FAILOVER_TARGET_S
        assert stack.record(call_id).owner == survivor

    # The failover shows in the survivor's metrics: one takeover per call it took.
    assert _takeovers(metrics_urls[survivor]) == len(moved)


def test_a_drained_runner_hands_every_call_over_and_exits(stack: SessionStack) -> None:
    metrics_urls = _start_with_metrics(stack, "r1", "r2")
    call_ids = [stack.place_call(scenario) for scenario in CALLS]
    victim, moved = _busiest(stack, call_ids)
    survivor = "r2" if victim == "r1" else "r1"

    started = time.monotonic()
    assert stack.stop_runner(victim, signal.SIGTERM, timeout_s=30.0) == 0
    assert time.monotonic() - started < 15.0
    assert stack.rdb.zscore(keys.RUNNERS, victim) is None

    _check_completed(stack, call_ids, moved)
    for call_id in moved:
        assert stack.record(call_id).owner == survivor
        truth = stack.emu.call(call_id, events=False)
        assert _largest_gap_s(truth["attachments"]) < 1.0

    # The hand-over shows in the survivor's metrics: one takeover per call handed over.
    assert _takeovers(metrics_urls[survivor]) == len(moved)


def test_a_runner_asked_to_drain_alone_keeps_its_calls_until_they_end(
    stack: SessionStack,
) -> None:
    runner = stack.start_runner("alone")
    call_id = stack.place_call("steady-call")
    stack.wait_state(call_id, "active")

    assert request_drain(stack.rdb, "alone")  # what `switchboard runners drain` does
    wait_until(lambda: list_runners(stack.rdb)[0].draining, 5.0, "runner reports draining")
    truth = stack.wait_ended(call_id)
    assert truth["ended_by"] == "caller"
    assert len(truth["attachments"]) == 1
    assert runner.proc.wait(timeout=10.0) == 0


def test_a_call_whose_end_was_saved_but_not_written_is_finished_by_the_next_runner(
    stack: SessionStack,
) -> None:
    """A snapshot can say a call ended while its record does not (the end's writes were
    lost to a Redis restart); the runner that takes such a call on writes the end."""
    stack.start_runner("r1")
    call_id = stack.place_call("steady-call")
    stack.wait_ended(call_id)
    stack.wait_state(call_id, "ended")
    snapshot = json.loads(stack.rdb.get(keys.call_snapshot(call_id)) or "{}")
    assert snapshot["core"]["end_reason"] == "caller_hangup"

    record_key = keys.call_record(call_id)
    stack.rdb.hset(record_key, mapping={"state": "active", "owner": ""})
    stack.rdb.hdel(record_key, "end_reason", "end_detail", "ended_at")
    stack.rdb.rpush(keys.PENDING_CALLS, call_id)

    record = stack.wait_state(call_id, "ended")
    assert record.end_reason == "caller_hangup"
    assert record.end_detail == "finished after a takeover"
    assert record.owner == "r1"


def test_a_full_runner_takes_the_next_call_only_once_it_has_room(stack: SessionStack) -> None:
    stack.start_runner("small", "--capacity", "1")
    first = stack.place_call("quick-question")
    stack.wait_state(first, "active")
    second = stack.place_call("quick-question")

    first_truth = stack.wait_ended(first)
    second_truth = stack.wait_ended(second)
    # The second call waited in the queue: its sideband opened after the first's closed.
    [first_attachment] = first_truth["attachments"]
    [second_attachment] = second_truth["attachments"]
    assert second_attachment["opened_at"] >= first_attachment["closed_at"]
    assert second_truth["ended_by"] == first_truth["ended_by"] == "caller"
    assert stack.record(first).owner == stack.record(second).owner == "small"
