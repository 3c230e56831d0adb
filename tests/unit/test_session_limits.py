"""Idle prompts, DTMF, max duration and budget in the session core."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.models import EndReason
from tests.support.session_driver import T0, Driver, creates, instructions, make_plan, of_type
from workers.sessions.effects import CommandDone, EndCall, Hangup, Refer
from workers.sessions.plan import (
    HangUp,
    IdlePolicy,
    SayText,
    SessionPlan,
    TransferTo,
    WrapUp,
)

IDLE = IdlePolicy("Ask if the caller is still there.", max_prompts=2)

# Idle ----------------------------------------------------------------------------------

SILENCE = "input_audio_buffer.timeout_triggered"


@pytest.mark.parametrize(
    ("events", "prompts", "ended"),
    [
        ([SILENCE], 1, False),
        ([SILENCE, SILENCE], 2, False),
        ([SILENCE, SILENCE, SILENCE], 2, True),
        # Caller speech (VAD or a transcript) resets the count.
        ([SILENCE, SILENCE, "input_audio_buffer.speech_started", SILENCE, SILENCE], 4, False),
        (
            [SILENCE, SILENCE, "conversation.item.input_audio_transcription.completed", SILENCE],
            3,
            False,
        ),
        ([SILENCE, SILENCE, "input_audio_buffer.speech_stopped", SILENCE], 2, True),
    ],
)
def test_idle_escalation(events: list[str], prompts: int, ended: bool) -> None:
    d = Driver(make_plan(idle=IDLE))
    d.attach()
    for i, kind in enumerate(events):
        d.at(i).event(kind, transcript="yes")
        d.created(f"resp_{i}")  # each prompt gets answered, freeing the gate
        d.done(f"resp_{i}")
    assert instructions(d.log) == [IDLE.prompt_instructions] * prompts
    ends = of_type(d.log, EndCall)
    assert ends == ([EndCall(EndReason.IDLE)] if ended else [])
    assert len(of_type(d.log, Hangup)) == int(ended)


def test_idle_prompt_yields_to_the_servers_own_idle_response() -> None:
    """With ``create_response`` the server answers the timeout itself: no second prompt."""
    d = Driver(make_plan(idle=IDLE))
    d.attach()
    [prompt] = creates(d.event(SILENCE))
    busy = {"code": "conversation_already_has_active_response", "event_id": prompt["event_id"]}
    d.event("error", error=busy)
    d.created("resp_server")
    assert creates(d.done("resp_server")) == []
    d.created("resp_vad")
    assert creates(d.event(SILENCE)) == []  # something is being said already
    assert d.core.snapshot()["idle_prompts"] == 2


def test_idle_goodbye_is_spoken_before_hanging_up() -> None:
    d = Driver(
        make_plan(idle=IdlePolicy("Still there?", max_prompts=0, goodbye_instructions="Bye"))
    )
    d.attach()
    effects = d.event(SILENCE)
    assert instructions(effects) == ["Bye"]
    tag = creates(effects)[0]["response"]["metadata"]["switchboard_tag"]
    d.created("resp_bye", tag=tag)
    assert of_type(d.done("resp_bye"), EndCall) == [EndCall(EndReason.IDLE)]


def test_the_idle_goodbye_refused_for_the_servers_own_idle_reply_is_said_after_it() -> None:
    """The server answers the timeout itself (``create_response``): its reply is created
    before our goodbye arrives and refuses it; the goodbye goes out once that reply is done."""
    d = Driver(
        make_plan(idle=IdlePolicy("Still there?", max_prompts=0, goodbye_instructions="Bye"))
    )
    d.attach()
    [goodbye] = creates(d.event(SILENCE))
    d.created("resp_server")
    busy = {"code": "conversation_already_has_active_response", "event_id": goodbye["event_id"]}
    d.event("error", error=busy)
    d.event("output_audio_buffer.started", response_id="resp_server")
    assert creates(d.done("resp_server")) == [goodbye]
    assert of_type(d.event("output_audio_buffer.stopped", response_id="resp_server"), EndCall) == []
    d.created("resp_bye", tag=goodbye["response"]["metadata"]["switchboard_tag"])
    d.event("output_audio_buffer.started", response_id="resp_bye")
    d.done("resp_bye")
    ended = d.event("output_audio_buffer.stopped", response_id="resp_bye")
    assert of_type(ended, EndCall) == [EndCall(EndReason.IDLE)]


def test_idle_without_policy_is_ignored() -> None:
    d = Driver(make_plan(idle=None))
    d.attach()
    assert d.event(SILENCE) == []


# DTMF ----------------------------------------------------------------------------------

DTMF = {
    "0": TransferTo("desk"),
    "9": TransferTo("sip:night@example.com"),
    "#": HangUp(),
    "1": SayText("Our hours are nine to five."),
}


@pytest.mark.parametrize(
    ("key", "refer", "ended", "said"),
    [
        ("0", "tel:+14155550123", EndReason.TRANSFERRED, None),
        ("9", "sip:night@example.com", EndReason.TRANSFERRED, None),
        ("#", None, EndReason.CALLER_HANGUP, None),
        ("1", None, None, "Our hours are nine to five."),
        ("5", None, None, None),
        (5, None, None, None),
        (None, None, None, None),
    ],
)
def test_dtmf_actions(
    key: Any, refer: str | None, ended: EndReason | None, said: str | None
) -> None:
    d = Driver(make_plan(dtmf=DTMF))
    d.attach()
    effects = d.event("input_audio_buffer.dtmf_event_received", event=key, received_at=1)
    assert of_type(effects, Refer) == ([Refer(refer)] if refer else [])
    assert [e.reason for e in of_type(effects, EndCall)] == ([ended] if ended else [])
    assert len(of_type(effects, Hangup)) == int(ended == EndReason.CALLER_HANGUP)
    spoken = instructions(effects)
    assert [str(said) in str(text) for text in spoken] == ([True] if said else [])


# Max duration --------------------------------------------------------------------------


def _duration_plan(**wrap: Any) -> SessionPlan:
    return make_plan(max_duration_s=60, max_duration_wrap_up=WrapUp(**wrap))


def test_max_duration_goodbye_starts_a_grace_early_and_the_limit_is_the_hard_stop() -> None:
    d = Driver(_duration_plan(goodbye_instructions="We are out of time; say goodbye.", grace_s=15))
    d.attach()
    assert d.core.next_deadline() == d.now + 45
    assert d.at(44.9).tick() == []
    assert instructions(d.at(45).tick()) == ["We are out of time; say goodbye."]
    assert d.core.next_deadline() == d.now + 15
    d.created("resp_x")  # the caller answers with something else first: no metadata match
    assert d.at(59.9).tick() == []
    effects = d.at(60).tick()
    assert of_type(effects, Hangup) == [Hangup()]
    assert of_type(effects, EndCall) == [EndCall(EndReason.MAX_DURATION)]
    assert d.core.next_deadline() is None


def test_max_duration_ends_as_soon_as_the_goodbye_played() -> None:
    d = Driver(_duration_plan(goodbye_instructions="Say goodbye.", grace_s=15))
    d.attach()
    tag = creates(d.at(45).tick())[0]["response"]["metadata"]["switchboard_tag"]
    d.at(46).created("resp_bye", tag=tag)
    d.event("output_audio_buffer.started", response_id="resp_bye")
    assert of_type(d.at(47).done("resp_bye"), Hangup) == []
    ended = d.at(49).event("output_audio_buffer.stopped", response_id="resp_bye")
    assert of_type(ended, EndCall) == [EndCall(EndReason.MAX_DURATION)]


def test_max_duration_without_echoed_metadata_still_recognises_the_goodbye() -> None:
    d = Driver(_duration_plan(goodbye_instructions="Say goodbye."))
    d.attach()
    d.at(45).tick()
    d.created("resp_bye")
    assert of_type(d.done("resp_bye"), EndCall) == [EndCall(EndReason.MAX_DURATION)]


def test_max_duration_can_let_the_conversation_run_the_grace() -> None:
    d = Driver(_duration_plan(goodbye_instructions="Wrap up.", grace_s=30, end_when_spoken=False))
    d.attach()
    tag = creates(d.at(30).tick())[0]["response"]["metadata"]["switchboard_tag"]
    d.created("resp_bye", tag=tag)
    assert of_type(d.done("resp_bye"), EndCall) == []
    assert of_type(d.at(59).tick(), EndCall) == []
    assert of_type(d.at(60).tick(), EndCall) == [EndCall(EndReason.MAX_DURATION)]


def test_max_duration_transfer_wrap_up() -> None:
    d = Driver(_duration_plan(transfer_to="sales"))
    d.attach()
    effects = d.at(45).tick()
    assert of_type(effects, Refer) == [Refer("sip:sales@example.com")]
    assert [e.reason for e in of_type(effects, EndCall)] == [EndReason.MAX_DURATION]


@pytest.mark.parametrize(("grace_s", "wrap_up_at"), [(10, 50), (60, 0), (90, 0)])
def test_the_wrap_up_starts_its_grace_before_the_limit_and_never_before_the_start(
    grace_s: float, wrap_up_at: float
) -> None:
    d = Driver(_duration_plan(goodbye_instructions="Bye.", grace_s=grace_s))
    d.attach()
    assert d.core.next_deadline() == d.now + wrap_up_at
    started = d.at(wrap_up_at).tick()
    assert instructions(started) == ["Bye."]
    assert of_type(started, EndCall) == []
    assert d.core.next_deadline() == T0 + 60
    assert of_type(d.at(60).tick(), EndCall) == [EndCall(EndReason.MAX_DURATION)]


def test_without_grace_the_call_ends_at_the_limit_with_no_time_for_words() -> None:
    d = Driver(_duration_plan(goodbye_instructions="Bye.", grace_s=0))
    d.attach()
    assert d.core.next_deadline() == T0 + 60
    effects = d.at(60).tick()
    assert creates(effects) == []
    assert of_type(effects, Hangup) == [Hangup()]
    assert of_type(effects, EndCall) == [EndCall(EndReason.MAX_DURATION)]


def test_a_late_tick_past_the_limit_stops_the_call_at_once() -> None:
    """A runner that was away (a take-over) does not grant a grace past the limit."""
    d = Driver(_duration_plan(goodbye_instructions="Bye.", grace_s=15))
    d.attach()
    effects = d.at(75).tick()
    assert of_type(effects, Hangup) == [Hangup()]
    assert of_type(effects, EndCall) == [EndCall(EndReason.MAX_DURATION)]


def test_any_pending_finale_goes_ahead_at_the_hard_stop() -> None:
    """An announcement still playing at the limit does not keep the call open."""
    plan = make_plan(max_duration_s=60, max_duration_wrap_up=WrapUp(grace_s=0), finale_timeout_s=30)
    d = Driver(plan)
    d.attach()
    d.at(50).command("cmd_1", "transfer", target="sales", announcement="Transferring you.")
    assert d.core.next_deadline() == T0 + 60
    effects = d.at(60).tick()
    assert of_type(effects, Refer) == [Refer("sip:sales@example.com")]
    assert of_type(effects, EndCall) == [EndCall(EndReason.TRANSFERRED, "sip:sales@example.com")]


def test_max_duration_counts_from_the_plan_start() -> None:
    d = Driver(make_plan(max_duration_s=60, started_at=1_749_999_990.0))
    d.attach()
    assert d.core.next_deadline() == 1_750_000_050.0 - WrapUp().grace_s


# Budget --------------------------------------------------------------------------------

# 100 audio-out tokens on gpt-realtime: 100 * 64 / 1e6 = $0.0064.
SPEECH = {"output_tokens": 100, "output_token_details": {"audio_tokens": 100}}


def test_budget_wrap_up_then_hard_stop() -> None:
    plan = make_plan(
        budget_usd=Decimal("0.01"),
        budget_wrap_up=WrapUp(goodbye_instructions="Budget reached: say goodbye.", grace_s=10),
    )
    d = Driver(plan)
    d.attach()
    assert creates(d.done("resp_1", SPEECH)) == []  # $0.0064 < $0.01
    assert instructions(d.at(5).done("resp_2", SPEECH)) == ["Budget reached: say goodbye."]
    # The goodbye costs money too, but the wrap-up happens once.
    assert creates(d.at(6).done("resp_3", SPEECH)) == []
    effects = d.at(15).tick()
    assert of_type(effects, Hangup) == [Hangup()]
    assert of_type(effects, EndCall) == [EndCall(EndReason.BUDGET)]


def test_budget_transfer_wrap_up_without_words_is_immediate() -> None:
    plan = make_plan(budget_usd=Decimal("0.005"), budget_wrap_up=WrapUp(transfer_to="desk"))
    d = Driver(plan)
    d.attach()
    effects = d.done("resp_1", SPEECH)
    assert of_type(effects, Refer) == [Refer("tel:+14155550123")]
    assert [e.reason for e in of_type(effects, EndCall)] == [EndReason.BUDGET]


def test_the_budget_grace_ends_at_the_max_duration_at_the_latest() -> None:
    plan = make_plan(
        max_duration_s=60,
        max_duration_wrap_up=WrapUp(grace_s=0),
        budget_usd=Decimal("0.005"),
        budget_wrap_up=WrapUp(goodbye_instructions="Budget's up.", grace_s=30),
    )
    d = Driver(plan)
    d.attach()
    assert instructions(d.at(50).done("resp_1", SPEECH)) == ["Budget's up."]
    assert d.core.next_deadline() == T0 + 60
    effects = d.at(60).tick()
    assert of_type(effects, EndCall) == [EndCall(EndReason.BUDGET)]


def test_only_one_wrap_up_at_a_time() -> None:
    plan = make_plan(
        max_duration_s=60,
        max_duration_wrap_up=WrapUp(goodbye_instructions="Time's up.", grace_s=20),
        budget_usd=Decimal("0.005"),
        budget_wrap_up=WrapUp(goodbye_instructions="Budget's up.", grace_s=20),
    )
    d = Driver(plan)
    d.attach()
    d.at(40).tick()
    d.at(41).done("resp_other", SPEECH)
    assert instructions(d.log) == ["Time's up."]
    assert of_type(d.at(60).tick(), EndCall) == [EndCall(EndReason.MAX_DURATION)]


# Whatever happens, the max duration holds ------------------------------------------------

_BUSY_PLAN = make_plan(
    max_duration_s=60,
    max_duration_wrap_up=WrapUp(goodbye_instructions="Time's up.", grace_s=15),
    budget_usd=Decimal("0.02"),
    budget_wrap_up=WrapUp(goodbye_instructions="Budget's up.", grace_s=30),
    idle=IdlePolicy("Still there?", max_prompts=1, goodbye_instructions="Bye."),
    dtmf={"1": SayText("Our hours are nine to five.")},
    finale_timeout_s=30,
)
_COMMANDS: dict[str, dict[str, Any]] = {
    "transfer": {"target": "sales", "announcement": "Hold on."},
    "hangup": {"goodbye": "Bye."},
    "say": {"text": "Hello."},
}
_OPS = st.sampled_from(
    ["tick", "tick", "transfer", "hangup", "say", "dtmf", "idle", "speech", "reply", "silent"]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_OPS, st.floats(0, 20)), max_size=30))
def test_no_tick_past_the_max_duration_finds_the_call_alive(ops: list[tuple[str, float]]) -> None:
    d = Driver(_BUSY_PLAN)
    d.attach()
    offset_s = 0.0
    for n, (op, step_s) in enumerate(ops):
        offset_s += step_s
        d.at(offset_s)
        if op == "tick":
            d.tick()
            assert d.core.state.ended or offset_s < 60
        elif op in _COMMANDS:
            done = of_type(d.command(f"cmd_{n}", op, **_COMMANDS[op]), CommandDone)
            refused = [c.detail for c in done if not c.ok]
            assert all(r.startswith(("superseded", "the call is", "call ended")) for r in refused)
        elif op == "dtmf":
            d.event("input_audio_buffer.dtmf_event_received", event="1", received_at=1)
        elif op == "idle":
            d.event(SILENCE)
        elif op == "speech":
            d.event("input_audio_buffer.speech_started")
        else:  # a response that plays, or one that never stops playing
            d.created(f"resp_{n}")
            d.event("output_audio_buffer.started", response_id=f"resp_{n}")
            d.done(f"resp_{n}", SPEECH)
            if op == "reply":
                d.event("output_audio_buffer.stopped", response_id=f"resp_{n}")
    deadline = d.core.next_deadline()
    assert d.core.state.ended or (deadline is not None and deadline <= T0 + 60)
