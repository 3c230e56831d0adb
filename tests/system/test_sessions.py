"""Session runner end to end: a real ``switchboard runner`` process on a real Redis, calls
placed with the emulator (scripted callers at time scale 0.05) and routed with the real
control actions, so the runner pulls them from the pending list like in production.

One runner serves the module; each test places its own calls.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from shared import keys
from shared.commands import CommandQueue
from shared.pricing import TokenCounts, cost_of_tokens, default_price_table
from tests.support.emulator import EmulatorHandle, running_emulator
from tests.support.runner_stack import SessionStack, session_stack, write_scenarios

pytestmark = pytest.mark.system


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
        running.start_runner("solo")
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
