"""The session core: greeting, transcripts, cost, latencies, the end, failover."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from shared.models import EndReason
from tests.support.session_driver import (
    T0,
    Driver,
    creates,
    instructions,
    make_plan,
    of_type,
    sends,
    without_persist,
)
from workers.sessions.effects import (
    AccrueUsage,
    AppendTranscript,
    CommandDone,
    EndCall,
    Hangup,
    Observe,
    Persist,
    Refer,
    RunTool,
    Send,
)
from workers.sessions.protocol import SessionProtocol
from workers.sessions.responses import STALL_S
from workers.sessions.state import PRICED_IDS_KEPT, SnapshotError

USAGE = {
    "input_tokens": 1000,
    "output_tokens": 500,
    "input_token_details": {
        "text_tokens": 200,
        "audio_tokens": 800,
        "cached_tokens": 300,
        "cached_tokens_details": {"text_tokens": 100, "audio_tokens": 200},
    },
    "output_token_details": {"text_tokens": 100, "audio_tokens": 400},
}
USAGE_USD = Decimal("0.04692")  # Worked by hand in test_pricing.


# Greeting -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("greeting", "attaches", "expected"),
    [
        ("Greet the caller.", [True], ["Greet the caller."]),
        (None, [True], []),
        ("Greet the caller.", [False], []),
        ("Greet the caller.", [True, True], ["Greet the caller."]),
        ("Greet the caller.", [True, False], ["Greet the caller."]),
    ],
)
def test_greeting_only_on_the_first_fresh_attach(
    greeting: str | None, attaches: list[bool], expected: list[str]
) -> None:
    d = Driver(make_plan(greeting_instructions=greeting))
    for i, fresh in enumerate(attaches):
        d.at(i)
        if i:
            d.closed("drop")
        d.attach(fresh)
    assert instructions(d.log) == expected


def test_no_greeting_after_failover_even_if_told_fresh() -> None:
    plan = make_plan(greeting_instructions="Greet the caller.")
    first = Driver(plan)
    first.attach()
    second = Driver(plan, core=SessionProtocol.restore(plan, first.core.snapshot()))
    assert creates(second.attach(fresh=True)) == []


def test_greeting_is_a_plain_ga_response_create() -> None:
    d = Driver(make_plan(greeting_instructions="Say hello."))
    assert d.attach() == [
        Send(
            {
                "type": "response.create",
                "event_id": "sb_resp_1",
                # The tag comes back in response.created: ours, not the server's.
                "response": {
                    "instructions": "Say hello.",
                    "metadata": {"switchboard_tag": "sb_resp_1"},
                },
            }
        ),
        Persist(),
    ]


# Transcripts ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (
            {"type": "conversation.item.input_audio_transcription.completed", "transcript": "Hi"},
            [("caller", "Hi")],
        ),
        (
            {"type": "response.output_audio_transcript.done", "transcript": " Hello! "},
            [("agent", "Hello!")],
        ),
        ({"type": "response.output_text.done", "text": "Typed"}, [("agent", "Typed")]),
        ({"type": "response.output_text.done", "transcript": "wrong field"}, []),
        ({"type": "conversation.item.input_audio_transcription.completed", "transcript": ""}, []),
        ({"type": "response.output_audio_transcript.done", "transcript": None}, []),
        ({"type": "response.output_audio_transcript.done", "transcript": ["x"]}, []),
        # Beta names are not GA events: ignored.
        ({"type": "response.audio_transcript.done", "transcript": "beta"}, []),
        ({"type": "response.text.done", "text": "beta"}, []),
    ],
)
def test_transcripts(event: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    d = Driver()
    d.attach()
    d.at(3.5)
    lines = of_type(d.raw(event), AppendTranscript)
    assert [(line.role, line.text) for line in lines] == expected
    assert all(line.at == T0 + 3.5 for line in lines)
    assert d.core.snapshot()["transcript_count"] == len(expected)


# Cost -----------------------------------------------------------------------------


def test_each_response_is_priced_once() -> None:
    d = Driver()
    d.attach()
    first = of_type(d.done("resp_1", USAGE), AccrueUsage)
    assert [(a.response_id, a.model, a.cost.total_usd) for a in first] == [
        ("resp_1", "gpt-realtime", USAGE_USD)
    ]
    assert of_type(d.done("resp_1", USAGE), AccrueUsage) == []  # re-delivered
    assert len(of_type(d.done("resp_2", USAGE), AccrueUsage)) == 1
    snap = d.core.snapshot()
    assert Decimal(snap["cost_usd"]) == 2 * USAGE_USD
    assert snap["usage"]["input_audio_tokens"] == 1600
    assert snap["usage"]["total_tokens"] == 3000


@pytest.mark.parametrize(
    ("response", "accrued", "observed"),
    [
        ({"id": "resp_1", "usage": USAGE}, 1, []),
        ({"usage": USAGE}, 0, []),  # no id: cannot be deduplicated, not priced
        ({"id": "resp_1"}, 0, []),  # no usage reported
        ({"id": "resp_1", "usage": "lots"}, 0, []),
        ({"id": "resp_1", "usage": {"input_tokens": -5}}, 0, ["usage_rejected"]),
        ({"id": 7, "usage": USAGE}, 0, []),
        (None, 0, []),
    ],
)
def test_usage_shapes(response: Any, accrued: int, observed: list[str]) -> None:
    d = Driver()
    d.attach()
    effects = d.event("response.done", response=response)
    assert len(of_type(effects, AccrueUsage)) == accrued
    assert [o.kind for o in of_type(effects, Observe)] == observed


def test_usage_is_still_priced_after_the_call_ended() -> None:
    d = Driver()
    d.attach()
    d.closed("caller")
    assert len(of_type(d.done("resp_late", USAGE), AccrueUsage)) == 1
    assert Decimal(d.core.snapshot()["cost_usd"]) == USAGE_USD


def test_priced_ids_are_bounded() -> None:
    d = Driver()
    d.attach()
    for i in range(PRICED_IDS_KEPT + 10):
        d.done(f"resp_{i}", {"output_tokens": 1})
    priced = d.core.snapshot()["priced_response_ids"]
    assert len(priced) == PRICED_IDS_KEPT
    assert priced[-1] == f"resp_{PRICED_IDS_KEPT + 9}"


# Latencies ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "first_output",
    [
        {"type": "response.output_audio_transcript.delta", "delta": "He"},
        {"type": "output_audio_buffer.started", "response_id": "resp_1"},
        {"type": "response.output_text.delta", "delta": "He"},
    ],
)
def test_turn_latency_from_speech_stopped_to_first_output(first_output: dict[str, Any]) -> None:
    d = Driver()
    d.attach()
    d.at(10).event("input_audio_buffer.speech_stopped", audio_end_ms=1000, item_id="item_1")
    observed = of_type(d.at(10.75).raw(first_output), Observe)
    assert observed == [Observe("turn_latency_s", 0.75)]
    assert of_type(d.at(11).raw(first_output), Observe) == []  # once per turn


def test_no_turn_latency_without_caller_speech() -> None:
    d = Driver()
    d.attach()
    assert of_type(d.event("response.output_audio_transcript.delta", delta="x"), Observe) == []


# The end --------------------------------------------------------------------------


def test_caller_hangup_ends_once_and_silences_the_core() -> None:
    d = Driver(make_plan(max_duration_s=60))
    d.attach()
    assert of_type(d.at(5).closed("caller"), EndCall) == [EndCall(EndReason.CALLER_HANGUP)]
    assert d.core.next_deadline() is None
    assert without_persist(d.closed("caller")) == []
    assert d.at(100).tick() == []
    assert d.function_call("call_1", "lookup") == []
    assert d.event("input_audio_buffer.timeout_triggered") == []
    assert d.attach() == []


@pytest.mark.parametrize(
    ("reason", "ended"),
    [
        ("caller", EndReason.CALLER_HANGUP),
        ("gone", EndReason.CALLER_GONE),
        ("error", EndReason.ERROR),
        ("drop", None),
    ],
)
def test_closed_reasons(reason: Any, ended: EndReason | None) -> None:
    d = Driver()
    d.attach()
    ends = of_type(d.closed(reason), EndCall)
    assert [e.reason for e in ends] == ([ended] if ended else [])


def test_our_hangup_then_socket_close_ends_once() -> None:
    d = Driver()
    d.attach()
    d.command("cmd_1", "hangup")
    d.closed("caller")
    assert of_type(d.log, EndCall) == [EndCall(EndReason.OPERATOR_HANGUP)]
    assert len(of_type(d.log, Hangup)) == 1


def test_sends_while_detached_are_held_until_reattach() -> None:
    d = Driver()
    d.attach()
    d.function_call("call_1", "lookup", '{"q": "x"}')
    d.done("resp_tool")
    d.closed("drop")
    held = d.tool_result("call_1", '{"answer": 42}')
    assert sends(held) == []
    resumed = sends(d.at(2).attach(fresh=False))
    assert [e["type"] for e in resumed] == ["conversation.item.create", "response.create"]
    assert resumed[0]["item"]["output"] == '{"answer": 42}'


# The response gate ----------------------------------------------------------------


def test_our_responses_wait_for_the_active_one() -> None:
    d = Driver()
    d.attach()
    d.created("resp_vad")
    assert creates(d.command("cmd_1", "say", text="One moment")) == []
    flushed = creates(d.done("resp_vad"))
    assert len(flushed) == 1
    assert "One moment" in flushed[0]["response"]["instructions"]


def test_refused_response_create_frees_the_gate() -> None:
    d = Driver()
    d.attach()
    d.command("cmd_1", "say", text="first")
    d.command("cmd_2", "say", text="second")
    first_id = creates(d.log)[0]["event_id"]
    released = d.event("error", error={"type": "invalid_request_error", "event_id": first_id})
    assert [o.kind for o in of_type(released, Observe)] == ["server_errors"]
    assert "second" in str(instructions(released)[0])


def test_response_create_refused_as_busy_goes_again_after_the_active_one() -> None:
    d = Driver()
    d.attach()
    [say] = creates(d.command("cmd_1", "say", text="One moment"))
    error = {
        "type": "invalid_request_error",
        "code": "conversation_already_has_active_response",
        "event_id": say["event_id"],
    }
    assert creates(d.event("error", error=error)) == []
    assert creates(d.done("resp_unseen")) == [say]


@pytest.mark.parametrize("echoed", [True, False])
def test_ours_refused_after_the_servers_own_response_was_created_goes_again(
    echoed: bool,
) -> None:
    """The server's reply (VAD, idle timeout) is created while ours is on its way; the
    refusal that follows still finds ours pending, with or without echoed metadata."""
    d = Driver()
    d.attach()
    [say] = creates(d.command("cmd_1", "say", text="One moment"))
    d.created("resp_server")
    error = {
        "type": "invalid_request_error",
        "code": "conversation_already_has_active_response",
        "event_id": say["event_id"],
    }
    assert creates(d.event("error", error=error)) == []
    assert creates(d.done("resp_server")) == [say]
    tag = say["response"]["metadata"]["switchboard_tag"] if echoed else None
    d.created("resp_ours", tag=tag)
    assert creates(d.command("cmd_2", "say", text="Two")) == []
    assert len(creates(d.done("resp_ours"))) == 1


def test_stalled_gate_is_released_after_a_while() -> None:
    d = Driver()
    d.attach()
    d.created("resp_lost")  # its response.done never comes
    d.command("cmd_1", "say", text="Still there?")
    assert d.core.next_deadline() == T0 + STALL_S
    assert creates(d.at(STALL_S - 1).tick()) == []
    assert len(creates(d.at(STALL_S).tick())) == 1


# Failover -------------------------------------------------------------------------


def _restored(d: Driver) -> Driver:
    snap = json.loads(json.dumps(d.core.snapshot()))
    other = Driver(d.plan, core=SessionProtocol.restore(d.plan, snap))
    other.now = d.now
    return other


def test_restore_continues_cost_and_ledgers() -> None:
    d = Driver(make_plan(idle=None))
    d.attach()
    d.done("resp_1", USAGE)
    d.function_call("call_1", "lookup", '{"q": 1}')
    d.command("cmd_1", "say", text="Hi")
    d.at(1).closed("drop")

    e = _restored(d).at(2)
    e.attach(fresh=False)
    assert of_type(e.done("resp_1", USAGE), AccrueUsage) == []  # already priced
    assert of_type(e.function_call("call_1", "lookup", '{"q": 1}'), RunTool) == []
    assert of_type(e.command("cmd_1", "say", text="Hi"), CommandDone) == [
        CommandDone("cmd_1", True, "will be said")
    ]
    assert creates(e.log) == []  # neither greeting nor a second say
    e.done("resp_2", USAGE)
    assert Decimal(e.core.snapshot()["cost_usd"]) == 2 * USAGE_USD
    # The tool still pending on the old runner times out at its original deadline.
    assert e.core.next_deadline() == T0 + 5.0
    timed_out = sends(e.at(5).tick())
    assert json.loads(timed_out[0]["item"]["output"]) == {"error": "lookup timed out after 5 s"}


def test_restore_keeps_a_pending_finale_and_its_deadline() -> None:
    d = Driver(make_plan(finale_timeout_s=8))
    d.attach()
    d.command("cmd_1", "transfer", target="sales", announcement="Transferring you now.")
    e = _restored(d)
    e.attach(fresh=False)
    assert e.core.next_deadline() == T0 + 8
    fired = e.at(8).tick()
    assert of_type(fired, Refer) == [Refer("sip:sales@example.com")]
    assert of_type(fired, CommandDone)[0].ok


def test_snapshot_is_json_and_round_trips() -> None:
    d = Driver(make_plan(max_duration_s=100, budget_usd=Decimal(1)))
    d.attach()
    d.done("resp_1", USAGE)
    d.event("conversation.item.input_audio_transcription.completed", transcript="Hello")
    d.function_call("call_1", "lookup")
    d.tool_result("call_1", "ok")
    d.command("cmd_bad", "dance")
    snap = d.core.snapshot()
    assert json.loads(json.dumps(snap)) == snap
    assert _restored(d).core.snapshot() == snap
    assert snap["commands"] == {
        "cmd_bad": {"ok": False, "detail": snap["commands"]["cmd_bad"]["detail"]}
    }
    assert snap["tools"]["call_1"]["ok"] is True
    assert snap["caller_turns"] == 1
    assert snap["started_at"] == T0


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s.update(call_id="rtc_other"), "offered to"),
        (lambda s: s.update(version=99), "version"),
        (lambda s: s.update(cost={"text_in_usd": "x"}), "malformed"),
        (lambda s: s.pop("tools"), "malformed"),
        (lambda s: s.update(end_reason="bored"), "malformed"),
        (lambda s: s.update(finale={"action": "refer"}), "malformed"),
    ],
)
def test_bad_snapshots_are_refused(mutate: Any, message: str) -> None:
    d = Driver()
    d.attach()
    snap = d.core.snapshot()
    mutate(snap)
    with pytest.raises(SnapshotError, match=message):
        SessionProtocol.restore(d.plan, snap)
