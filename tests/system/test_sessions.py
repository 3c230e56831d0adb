"""Session runner end to end: a real ``switchboard runner`` process on a real Redis, calls
placed with the emulator (scripted callers at time scale 0.05) and routed with the real
control actions, so the runner pulls them from the pending list like in production.

One runner serves the module; each test places its own calls.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from shared import keys
from shared.commands import CommandQueue
from shared.pricing import TokenCounts, cost_of_tokens, default_price_table
from tests.observability.exposition import scrape, value
from tests.support.emulator import EmulatorHandle, running_emulator
from tests.support.ports import free_port
from tests.support.runner_stack import (
    BUDGETED_LINE,
    QUIET_LINE,
    TIMED_LINE,
    SessionStack,
    session_stack,
    write_scenarios,
)

pytestmark = pytest.mark.system

LIMIT_TOLERANCE_S = 0.5
"""How far past its max duration a call may end: the hang-up's own round trips."""


@pytest.fixture(scope="module")
def emu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorHandle]:
    scenarios = write_scenarios(tmp_path_factory.mktemp("scenarios"))
    with running_emulator(time_scale=0.05, scenario_dirs=[scenarios]) as handle:
        yield handle


@pytest.fixture(scope="module")
def stack(
    redis_server: str, emu: EmulatorHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SessionStack]:
    with session_stack(redis_server, emu, Path(tmp_path_factory.mktemp("runner"))) as running:
        port = free_port()
        solo = running.start_runner("solo", "--metrics-port", str(port))
        solo.extra["metrics_url"] = f"http://127.0.0.1:{port}/metrics"
        yield running


def test_order_status_runs_the_tool_once_and_the_model_answers_with_its_output(
    stack: SessionStack,
) -> None:
    runs_before = len(stack.tool_runs())
    call_id = stack.place_call("order-status")
    truth = stack.wait_ended(call_id)

    assert truth["ended_by"] == "caller"
    [output] = truth["tool_outputs"]
    assert output["name"] == "lookup_order"
    assert '"status":"shipped"' in output["output"]
    assert len(stack.tool_runs()) == runs_before + 1
    ledger = stack.rdb.hgetall(keys.call_tools(call_id))
    assert list(ledger) == [output["call_id"]]
    assert '"state":"delivered"' in ledger[output["call_id"]]
    # The follow-up response came after the output and spoke it.
    received = [event["type"] for event in truth["events_received"]]
    after_output = received[received.index("conversation.item.create") :]
    assert "response.create" in after_output
    spoken = [
        event["transcript"]
        for event in truth["events_sent"]
        if event["type"] == "response.output_audio_transcript.done"
    ]
    assert any("shipped" in text for text in spoken)
    record = stack.record(call_id)
    assert record.end_reason == "caller_hangup"
    assert record.owner == "solo"
    lines = stack.rdb.xrange(keys.call_transcript(call_id))
    assert {fields["role"] for _, fields in lines} == {"caller", "agent"}
    assert any("12345" in fields["text"] for _, fields in lines)
    assert not truth["overlapping_attachments"]
    assert truth["defects"] == []


def test_transfer_call_tool_refers_the_caller_and_the_call_ends_transferred(
    stack: SessionStack,
) -> None:
    call_id = stack.place_call("transfer-to-human")
    truth = stack.wait_ended(call_id)

    assert truth["ended_by"] == "refer"
    assert truth["refer_target"] == "sip:agent@pbx.example.com"
    record = stack.record(call_id)
    assert record.end_reason == "transferred"
    assert record.model_extra is not None
    assert record.model_extra["end_detail"] == "sip:agent@pbx.example.com"
    # Admission slot and live index are released with the end.
    assert stack.rdb.hget(keys.ADMISSION_HOLDERS, call_id) is None
    assert stack.rdb.zscore(keys.LIVE_CALLS, call_id) is None


def test_say_and_hangup_commands_are_applied_and_answered(stack: SessionStack) -> None:
    call_id = stack.place_call("steady-call")
    stack.wait_state(call_id, "active")
    queue = CommandQueue(stack.rdb)

    say_id = queue.enqueue_command(call_id, "say", {"text": "Your ticket number is 42."})
    said = queue.wait_result(call_id, say_id, timeout_s=10.0)
    assert said is not None
    assert said.ok, said
    stack.emu.wait_for_call(
        call_id,
        lambda truth: any(
            "ticket number is 42" in event.get("response", {}).get("instructions", "")
            for event in stack.emu.call(call_id)["events_received"]
            if event["type"] == "response.create"
        ),
        10.0,
        "the say command's response.create",
    )
    hangup_id = queue.enqueue_command(call_id, "hangup", {})
    hung_up = queue.wait_result(call_id, hangup_id, timeout_s=10.0)
    assert hung_up is not None
    assert hung_up.ok, hung_up

    truth = stack.wait_ended(call_id)
    assert truth["ended_by"] == "hangup"
    assert stack.record(call_id).end_reason == "operator_hangup"


def test_cost_in_the_record_is_the_price_table_applied_to_the_api_usage(
    stack: SessionStack,
) -> None:
    call_id = stack.place_call("quick-question")
    truth = stack.wait_ended(call_id)

    tokens = TokenCounts.from_dict(truth["usage"])
    assert tokens.total_tokens > 0
    expected = cost_of_tokens(tokens, "gpt-realtime", default_price_table()).total_usd
    recorded = stack.raw_record(call_id)["cost_usd"]
    assert Decimal(recorded) == expected
    assert truth["responses"] >= 2


def test_a_dropped_sideband_is_attached_again_and_the_call_goes_on(stack: SessionStack) -> None:
    metrics_url = stack.runners["solo"].extra["metrics_url"]
    attaches = "switchboard_session_attaches_total"
    reattached_before = value(scrape(metrics_url), attaches, kind="reattach")
    stack.emu.set_faults(ws_drop_rate=0.1)
    try:
        call_id = stack.place_call("steady-call")
        truth = stack.wait_ended(call_id)
    finally:
        stack.emu.set_faults(ws_drop_rate=0.0)

    assert truth["ended_by"] == "caller"
    assert len(truth["attachments"]) > 1
    assert not truth["overlapping_attachments"]
    assert stack.record(call_id).end_reason == "caller_hangup"
    notes = [fields for _, fields in stack.rdb.xrange(keys.call_events(call_id))]
    kinds = [note.get("kind") for note in notes if note["type"] == "attached"]
    assert kinds[0] == "first"
    assert set(kinds[1:]) == {"reattach"}
    assert any(note.get("reason") == "drop" for note in notes if note["type"] == "detached")
    # Each reconnect shows in the runner's metrics.
    reattached = value(scrape(metrics_url), attaches, kind="reattach") - reattached_before
    assert reattached == len(kinds) - 1


def assert_ended_and_followed_up(
    stack: SessionStack, call_id: str, reason: str, truth: dict[str, Any]
) -> dict[str, Any]:
    """The final record is complete and sensible, and its post-call task was queued and
    does its work; the record, as raw fields."""
    record = stack.raw_record(call_id)
    assert record["end_reason"] == reason
    duration_s = float(record["duration_s"])
    assert 0 < duration_s <= truth["ended_at"] - truth["accepted_at"] + 0.5
    assert float(record["ended_at"]) - float(record["accepted_at"]) >= duration_s - 0.01
    assert stack.rdb.hget(keys.ADMISSION_HOLDERS, call_id) is None
    assert stack.post_call_queued(call_id)
    summary = stack.run_post_call(call_id)
    assert (summary["end_reason"], summary["duration_s"]) == (reason, duration_s)
    assert summary["cost_usd"] == record["cost_usd"]
    return record


def spoken_by_agent(truth: dict[str, Any]) -> list[str]:
    """What the agent said, in order (the emulator speaks instructions as they come)."""
    return [
        event["transcript"]
        for event in truth["events_sent"]
        if event["type"] == "response.output_audio_transcript.done"
    ]


def test_pressing_zero_transfers_the_caller_to_a_human(stack: SessionStack) -> None:
    call_id = stack.place_call("dtmf-zero")
    truth = stack.wait_ended(call_id)

    assert truth["ended_by"] == "refer"
    assert truth["refer_target"] == "sip:agent@pbx.example.com"
    keys_pressed = [e["event"] for e in truth["events_sent"] if "dtmf" in e["type"]]
    assert keys_pressed == ["0"]
    record = assert_ended_and_followed_up(stack, call_id, "transferred", truth)
    assert record["end_detail"] == "dtmf 0"


def test_the_budget_cap_says_goodbye_then_ends_the_call(stack: SessionStack) -> None:
    call_id = stack.place_call("steady-call", to=BUDGETED_LINE)
    truth = stack.wait_ended(call_id)

    assert truth["ended_by"] == "hangup"
    goodbye = "That is all I can do on this call. Goodbye."
    record = assert_ended_and_followed_up(stack, call_id, "budget", truth)
    assert Decimal(record["cost_usd"]) >= Decimal("0.0001")
    # The greeting used up the budget; the goodbye was said, and was the last thing said.
    [greeting, last] = spoken_by_agent(truth)
    assert "Hello, thanks for calling" in greeting
    assert last.endswith(goodbye)


def test_max_duration_wraps_up_before_the_limit_and_never_runs_past_it(
    stack: SessionStack,
) -> None:
    call_id = stack.place_call("long-call", to=TIMED_LINE)
    truth = stack.wait_ended(call_id)

    assert truth["ended_by"] == "hangup"
    assert spoken_by_agent(truth)[-1].endswith("We are out of time today. Goodbye.")
    record = assert_ended_and_followed_up(stack, call_id, "max_duration", truth)
    # The wrap-up starts 2 s before the 4 s limit; the call is over by the limit.
    assert 2.0 <= float(record["duration_s"]) <= 4.0 + LIMIT_TOLERANCE_S
    assert truth["ended_at"] - truth["accepted_at"] <= 4.0 + LIMIT_TOLERANCE_S


def test_a_silent_caller_is_prompted_then_the_call_ends_idle(stack: SessionStack) -> None:
    call_id = stack.place_call("silent-caller", to=QUIET_LINE)
    truth = stack.wait_ended(call_id)

    # The session asked the API for the idle timeout the profile sets.
    detection = truth["accept"]["audio"]["input"]["turn_detection"]
    assert detection["idle_timeout_ms"] == 5000
    timeouts = [e for e in truth["events_sent"] if e["type"].endswith("timeout_triggered")]
    # The first timeout is prompted, the second ends the call (a third could only come
    # 5 s, scaled, after the goodbye played, while the hang-up was on its way).
    assert len(timeouts) in (2, 3)
    assert truth["ended_by"] == "hangup"
    *prompts, goodbye = spoken_by_agent(truth)
    assert goodbye.endswith("I cannot hear you, so I will hang up now. Goodbye.")
    # The server answers each timeout itself; our prompt gives way to its reply.
    assert len(prompts) == 2
    assert all("still" in prompt for prompt in prompts)
    assert_ended_and_followed_up(stack, call_id, "idle", truth)
