"""Idle prompts, DTMF, max duration and budget in the session core."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from shared.models import EndReason
from tests.support.session_driver import Driver, creates, instructions, make_plan, of_type
from workers.sessions.effects import EndCall, Hangup, Refer
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


def test_max_duration_goodbye_then_hard_stop_after_grace() -> None:
    d = Driver(_duration_plan(goodbye_instructions="We are out of time; say goodbye.", grace_s=15))
    d.attach()
    assert d.core.next_deadline() == d.now + 60
    assert d.at(59.9).tick() == []
    assert instructions(d.at(60).tick()) == ["We are out of time; say goodbye."]
    assert d.core.next_deadline() == d.now + 15
    d.created("resp_x")  # the caller answers with something else first: no metadata match
    assert d.at(74).tick() == []
    effects = d.at(75).tick()
    assert of_type(effects, Hangup) == [Hangup()]
    assert of_type(effects, EndCall) == [EndCall(EndReason.MAX_DURATION)]


def test_max_duration_ends_as_soon_as_the_goodbye_played() -> None:
    d = Driver(_duration_plan(goodbye_instructions="Say goodbye.", grace_s=15))
    d.attach()
    tag = creates(d.at(60).tick())[0]["response"]["metadata"]["switchboard_tag"]
    d.at(61).created("resp_bye", tag=tag)
    d.event("output_audio_buffer.started", response_id="resp_bye")
    assert of_type(d.at(62).done("resp_bye"), Hangup) == []
    ended = d.at(64).event("output_audio_buffer.stopped", response_id="resp_bye")
    assert of_type(ended, EndCall) == [EndCall(EndReason.MAX_DURATION)]


def test_max_duration_without_echoed_metadata_still_recognises_the_goodbye() -> None:
    d = Driver(_duration_plan(goodbye_instructions="Say goodbye."))
    d.attach()
    d.at(60).tick()
    d.created("resp_bye")
    assert of_type(d.done("resp_bye"), EndCall) == [EndCall(EndReason.MAX_DURATION)]


def test_max_duration_can_let_the_conversation_run_the_grace() -> None:
    d = Driver(_duration_plan(goodbye_instructions="Wrap up.", grace_s=30, end_when_spoken=False))
    d.attach()
    tag = creates(d.at(60).tick())[0]["response"]["metadata"]["switchboard_tag"]
    d.created("resp_bye", tag=tag)
    assert of_type(d.done("resp_bye"), EndCall) == []
    assert of_type(d.at(90).tick(), EndCall) == [EndCall(EndReason.MAX_DURATION)]


def test_max_duration_transfer_wrap_up() -> None:
    d = Driver(_duration_plan(transfer_to="sales"))
    d.attach()
    effects = d.at(60).tick()
    assert of_type(effects, Refer) == [Refer("sip:sales@example.com")]
    assert [e.reason for e in of_type(effects, EndCall)] == [EndReason.MAX_DURATION]


def test_max_duration_counts_from_the_plan_start() -> None:
    d = Driver(make_plan(max_duration_s=60, started_at=1_749_999_990.0))
    d.attach()
    assert d.core.next_deadline() == 1_750_000_050.0


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


def test_only_one_wrap_up_at_a_time() -> None:
    plan = make_plan(
        max_duration_s=60,
        max_duration_wrap_up=WrapUp(goodbye_instructions="Time's up.", grace_s=20),
        budget_usd=Decimal("0.005"),
        budget_wrap_up=WrapUp(goodbye_instructions="Budget's up.", grace_s=20),
    )
    d = Driver(plan)
    d.attach()
    d.at(60).tick()
    d.at(61).done("resp_other", SPEECH)
    assert instructions(d.log) == ["Time's up."]
    assert of_type(d.at(80).tick(), EndCall) == [EndCall(EndReason.MAX_DURATION)]
