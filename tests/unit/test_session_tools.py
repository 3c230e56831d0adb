"""Tool calls in the session core: run once, answer always, one follow-up response."""

from __future__ import annotations

import json

import pytest

from shared.models import EndReason
from tests.support.session_driver import Driver, creates, make_plan, of_type, sends
from workers.sessions.effects import Effect, EndCall, Hangup, Observe, Refer, RunTool
from workers.sessions.plan import ToolSpec


def _outputs(effects: list[Effect]) -> list[tuple[str, object]]:
    """(call_id, decoded output) of every function_call_output sent."""
    found: list[tuple[str, object]] = []
    for event in sends(effects):
        if event["type"] == "conversation.item.create":
            item = event["item"]
            assert item["type"] == "function_call_output"
            try:
                output = json.loads(item["output"])
            except ValueError:
                output = item["output"]
            found.append((item["call_id"], output))
    return found


def test_configured_tool_runs_and_its_output_is_answered() -> None:
    d = Driver()
    d.attach()
    d.created("resp_tool")
    run = of_type(d.function_call("call_1", "lookup", '{"order": "A12"}'), RunTool)
    assert run == [RunTool("call_1", "lookup", {"order": "A12"}, 5.0)]
    answered = d.at(0.25).tool_result("call_1", '{"status": "shipped"}')
    assert _outputs(answered) == [("call_1", {"status": "shipped"})]
    assert of_type(answered, Observe) == [Observe("tool_latency_s", 0.25)]
    assert creates(answered) == []  # the response that called the tool is still active
    assert len(creates(d.done("resp_tool"))) == 1


def test_a_tool_call_id_runs_at_most_once() -> None:
    d = Driver()
    d.attach()
    d.function_call("call_1", "lookup")
    assert d.function_call("call_1", "lookup") == []
    d.tool_result("call_1", "first")
    assert d.tool_result("call_1", "second") == []
    assert len(of_type(d.log, RunTool)) == 1
    assert _outputs(d.log) == [("call_1", "first")]


@pytest.mark.parametrize(
    ("name", "arguments", "error"),
    [
        ("weather", "{}", "unknown tool 'weather'"),
        ("lookup", "{not json", "arguments of lookup are not valid JSON"),
        ("lookup", "[1, 2]", "arguments of lookup must be a JSON object"),
        ("lookup", '"text"', "arguments of lookup must be a JSON object"),
        ("transfer_call", '{"target": "nowhere"}', "unknown transfer target 'nowhere'"),
        ("transfer_call", "{}", "unknown transfer target None"),
    ],
)
def test_refused_tool_calls_get_an_error_output_and_a_response(
    name: str, arguments: str, error: str
) -> None:
    d = Driver()
    d.attach()
    effects = d.function_call("call_1", name, arguments)
    assert of_type(effects, RunTool) == []
    [(call_id, output)] = _outputs(effects)
    assert call_id == "call_1"
    assert isinstance(output, dict)
    assert output["error"].startswith(error)
    assert len(creates(effects)) == 1


def test_builtins_not_offered_by_the_plan_are_unknown() -> None:
    d = Driver(make_plan(tools=(ToolSpec("lookup"),)))
    d.attach()
    effects = d.function_call("call_1", "transfer_call", '{"target": "sales"}')
    assert of_type(effects, Refer) == []
    assert _outputs(effects) == [("call_1", {"error": "unknown tool 'transfer_call'"})]


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("HTTP 503 from crm", {"error": "HTTP 503 from crm"}),
        ("  ", {"error": "lookup failed"}),
    ],
)
def test_failing_tool_answers_with_an_error(output: str, expected: dict[str, str]) -> None:
    d = Driver()
    d.attach()
    d.function_call("call_1", "lookup")
    effects = d.tool_result("call_1", output, ok=False)
    assert _outputs(effects) == [("call_1", expected)]
    assert len(creates(effects)) == 1


def test_tool_timeout_answers_with_an_error_and_ignores_the_late_result() -> None:
    d = Driver()
    d.attach()
    d.function_call("call_1", "lookup")
    assert d.core.next_deadline() == d.now + 5.0
    assert d.at(4.9).tick() == []
    effects = d.at(5).tick()
    assert _outputs(effects) == [("call_1", {"error": "lookup timed out after 5 s"})]
    assert Observe("tool_timeouts", 1.0) in effects
    assert len(creates(effects)) == 1
    assert d.core.next_deadline() is None
    assert d.at(6).tool_result("call_1", "too late") == []


def test_parallel_calls_get_one_follow_up_after_all_outputs() -> None:
    d = Driver(make_plan(tools=(ToolSpec("lookup", 5.0), ToolSpec("weather", 2.0))))
    d.attach()
    d.created("resp_tool")
    d.function_call("call_a", "lookup")
    assert creates(d.tool_result("call_a", "a")) == []
    d.function_call("call_b", "weather")
    assert creates(d.done("resp_tool")) == []  # call_b still pending
    assert creates(d.tool_result("call_b", "b")) != []
    assert len(creates(d.log)) == 1
    assert [call_id for call_id, _ in _outputs(d.log)] == ["call_a", "call_b"]


def test_transfer_call_waits_for_the_agent_to_finish_speaking() -> None:
    d = Driver()
    d.attach()
    d.created("resp_tool")
    d.event("output_audio_buffer.started", response_id="resp_tool")
    assert d.function_call("call_1", "transfer_call", '{"target": "desk"}') != []
    assert of_type(d.log, Refer) == []
    assert of_type(d.done("resp_tool"), Refer) == []  # audio still playing
    effects = d.event("output_audio_buffer.stopped", response_id="resp_tool")
    assert of_type(effects, Refer) == [Refer("tel:+14155550123")]
    assert of_type(effects, EndCall) == [EndCall(EndReason.TRANSFERRED, "tel:+14155550123")]
    assert _outputs(d.log) == []  # the call is gone; the model needs no answer


def test_transfer_call_to_a_literal_uri_after_a_silent_response() -> None:
    d = Driver()
    d.attach()
    d.created("resp_tool")
    d.function_call("call_1", "transfer_call", '{"target": "sip:billing@example.com"}')
    assert of_type(d.done("resp_tool"), Refer) == [Refer("sip:billing@example.com")]


def test_end_call_hangs_up_after_the_goodbye_or_the_deadline() -> None:
    d = Driver(make_plan(finale_timeout_s=10))
    d.attach()
    d.created("resp_tool")
    d.event("output_audio_buffer.started", response_id="resp_tool")
    d.function_call("call_1", "end_call", '{"reason": "caller is done"}')
    d.done("resp_tool")
    assert d.at(9.9).tick() == []
    effects = d.at(10).tick()
    assert of_type(effects, Hangup) == [Hangup()]
    assert of_type(effects, EndCall) == [EndCall(EndReason.AGENT_HANGUP, "caller is done")]


def test_builtins_are_refused_once_the_call_is_ending() -> None:
    d = Driver()
    d.attach()
    d.created("resp_tool")
    d.event("output_audio_buffer.started", response_id="resp_tool")
    d.function_call("call_1", "end_call")
    effects = d.function_call("call_2", "transfer_call", '{"target": "sales"}')
    assert _outputs(effects) == [("call_2", {"error": "the call is already ending"})]
    assert of_type(d.log, Refer) == []
