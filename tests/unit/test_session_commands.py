"""Operator commands in the session core: validated, applied at most once, acknowledged."""

from __future__ import annotations

from typing import Any

import pytest

from shared.models import EndReason
from tests.support.session_driver import (
    Driver,
    creates,
    instructions,
    of_type,
    sends,
    without_persist,
)
from workers.sessions.client_events import session_update
from workers.sessions.effects import (
    ClaimCommand,
    ClaimControl,
    CommandDone,
    EndCall,
    Hangup,
    Observe,
    Persist,
    Refer,
    Send,
)


@pytest.mark.parametrize(
    ("kind", "args", "detail"),
    [
        ("dance", {}, "unknown command kind 'dance'"),
        ("transfer", {}, "transfer needs a target"),
        ("transfer", {"target": ""}, "transfer needs a target"),
        ("transfer", {"target": "nowhere"}, "unknown transfer target 'nowhere'"),
        ("transfer", {"target": "http://example.com"}, "unknown transfer target"),
        ("transfer", {"target": "sip:"}, "unknown transfer target"),
        ("transfer", {"target": "tel:call-me"}, "unknown transfer target"),
        ("transfer", {"target": 42}, "unknown transfer target 42"),
        ("transfer", {"target": "sales", "announcement": " "}, "announcement must be non-empty"),
        ("hangup", {"goodbye": ""}, "goodbye must be non-empty"),
        ("hangup", {"goodbye": 3}, "goodbye must be non-empty"),
        ("say", {}, "say needs a non-empty text"),
        ("say", {"text": "   "}, "say needs a non-empty text"),
        ("say", {"text": ["hi"]}, "say needs a non-empty text"),
        ("update", {}, "update needs a non-empty session object"),
        ("update", {"session": "instructions"}, "update needs a non-empty session object"),
        ("update", {"session": {"voice": "marin"}}, "voice -> audio.output.voice"),
        ("update", {"session": {"temperature": 0.7}}, "beta session fields"),
        ("update", {"session": {"type": "transcription"}}, "session.type must be 'realtime'"),
        ("update", {"session": {"audio": "loud"}}, "session.audio must be an object"),
        (
            "update",
            {"session": {"audio": {"input": {"format": {"type": "audio/pcmu"}}}}},
            "nothing to update",
        ),
    ],
)
def test_invalid_commands_change_nothing(kind: str, args: dict[str, Any], detail: str) -> None:
    d = Driver()
    d.attach()
    before = d.core.snapshot()
    effects = without_persist(d.command("cmd_1", kind, **args))
    assert len(effects) == 1
    [done] = effects
    assert isinstance(done, CommandDone)
    assert (done.command_id, done.ok) == ("cmd_1", False)
    assert detail in done.detail
    after = d.core.snapshot()
    assert after.pop("commands") == {"cmd_1": {"ok": False, "detail": done.detail}}
    before.pop("commands")
    assert after == before


@pytest.mark.parametrize(
    ("session", "sent"),
    [
        ({"instructions": "Be brief."}, {"type": "realtime", "instructions": "Be brief."}),
        (
            {
                "type": "realtime",
                "audio": {"output": {"voice": "marin", "format": {"type": "audio/pcm"}}},
            },
            {"type": "realtime", "audio": {"output": {"voice": "marin"}}},
        ),
        (
            {
                "tools": [],
                "audio": {
                    "input": {"format": {"type": "audio/pcmu"}, "turn_detection": None},
                    "output": {"format": {"type": "audio/pcma"}},
                },
            },
            {"type": "realtime", "tools": [], "audio": {"input": {"turn_detection": None}}},
        ),
        (
            {"instructions": "x", "audio": {"input": {"format": {"type": "audio/pcm"}}}},
            {"type": "realtime", "instructions": "x"},
        ),
    ],
)
def test_update_sets_session_type_and_strips_audio_formats(
    session: dict[str, Any], sent: dict[str, Any]
) -> None:
    assert session_update(session) == {"type": "session.update", "session": sent}
    d = Driver()
    d.attach()
    effects = d.command("cmd_1", "update", session=session)
    assert sends(effects) == [{"type": "session.update", "session": sent}]
    assert of_type(effects, CommandDone) == [CommandDone("cmd_1", True, "session updated")]


def test_a_command_id_is_applied_at_most_once() -> None:
    d = Driver()
    d.attach()
    first = d.command("cmd_1", "say", text="Your order shipped.")
    assert len(creates(first)) == 1
    again = d.command("cmd_1", "say", text="Your order shipped.")
    assert without_persist(again) == [CommandDone("cmd_1", True, "will be said")]
    refused = d.command("cmd_2", "dance")
    assert without_persist(d.command("cmd_2", "say", text="hi")) == of_type(refused, CommandDone)


def test_say_speaks_the_text_through_response_instructions() -> None:
    d = Driver()
    d.attach()
    d.at(0.5)
    effects = d.command("cmd_1", "say", issued_at=d.now - 0.25, text="Your order shipped.")
    [said] = instructions(effects)
    assert said is not None
    assert said.endswith("word for word, and nothing else: Your order shipped.")
    assert Observe("command_latency_s", 0.25) in effects


def test_transfer_without_announcement_refers_at_once() -> None:
    d = Driver()
    d.attach()
    effects = d.command("cmd_1", "transfer", target="sip:agent@example.com")
    assert without_persist(effects) == [
        ClaimCommand("cmd_1"),
        ClaimControl(
            "refer",
            EndReason.TRANSFERRED,
            "sip:agent@example.com",
            "sip:agent@example.com",
            "cmd_1",
        ),
        Refer("sip:agent@example.com"),
        CommandDone("cmd_1", True, "referred to sip:agent@example.com"),
        Observe("command_latency_s", 0.0),
        EndCall(EndReason.TRANSFERRED, "sip:agent@example.com"),
    ]


def test_transfer_with_announcement_refers_once_it_is_said() -> None:
    d = Driver()
    d.attach()
    effects = d.command("cmd_1", "transfer", target="sales", announcement="Connecting you.")
    [announce] = creates(effects)
    assert "Connecting you." in announce["response"]["instructions"]
    assert of_type(d.log, Refer) == []
    assert d.command("cmd_1", "transfer", target="sales") == []  # in flight: no double transfer
    d.at(0.2).created("resp_a", tag=announce["response"]["metadata"]["switchboard_tag"])
    d.at(0.4).event("output_audio_buffer.started", response_id="resp_a")
    d.at(1.0).done("resp_a")
    done = d.at(2.5).event("output_audio_buffer.stopped", response_id="resp_a")
    assert of_type(done, Refer) == [Refer("sip:sales@example.com")]
    assert Observe("command_latency_s", 2.5) in done
    assert of_type(d.log, CommandDone) == [
        CommandDone("cmd_1", True, "referred to sip:sales@example.com")
    ]


def test_transfer_announcement_has_a_deadline() -> None:
    d = Driver()
    d.attach()
    d.command("cmd_1", "transfer", target="desk", announcement="Connecting you.")
    assert d.core.next_deadline() == d.now + d.plan.finale_timeout_s
    refer = of_type(d.at(d.plan.finale_timeout_s).tick(), Refer)
    assert refer == [Refer("tel:+14155550123")]


def test_hangup_with_goodbye_hangs_up_after_it() -> None:
    d = Driver()
    d.attach()
    [bye] = creates(d.command("cmd_1", "hangup", goodbye="Thanks for calling."))
    d.created("resp_bye", tag=bye["response"]["metadata"]["switchboard_tag"])
    effects = d.done("resp_bye")
    assert of_type(effects, Hangup) == [Hangup()]
    assert of_type(effects, EndCall) == [EndCall(EndReason.OPERATOR_HANGUP)]


def test_hangup_beats_a_pending_transfer() -> None:
    d = Driver()
    d.attach()
    d.command("cmd_t", "transfer", target="sales", announcement="Connecting you.")
    effects = d.command("cmd_h", "hangup", goodbye="Bye")
    assert creates(effects) == []  # no more words: now
    assert of_type(effects, CommandDone) == [
        CommandDone("cmd_t", False, "superseded by cmd_h"),
        CommandDone("cmd_h", True, "hung up"),
    ]
    assert of_type(effects, Hangup) == [Hangup()]
    assert of_type(d.log, Refer) == []


@pytest.mark.parametrize(
    ("kind", "args"),
    [("transfer", {"target": "desk"}), ("say", {"text": "hello"})],
)
def test_commands_while_the_call_is_ending_are_refused(kind: str, args: dict[str, Any]) -> None:
    d = Driver()
    d.attach()
    d.command("cmd_1", "hangup", goodbye="Bye")
    effects = without_persist(d.command("cmd_2", kind, **args))
    assert effects == [
        ClaimCommand("cmd_2"),
        CommandDone("cmd_2", False, "the call is already ending"),
    ]


def test_commands_after_the_end() -> None:
    d = Driver()
    d.attach()
    d.command("cmd_1", "hangup")
    d.closed("caller")
    assert without_persist(d.command("cmd_2", "say", text="hi")) == [
        CommandDone("cmd_2", False, "call ended")
    ]
    # An id applied before the end still answers with its own result.
    assert without_persist(d.command("cmd_1", "hangup")) == [CommandDone("cmd_1", True, "hung up")]


def test_pending_command_is_answered_when_the_caller_leaves_first() -> None:
    d = Driver()
    d.attach()
    d.command("cmd_t", "transfer", target="sales", announcement="Connecting you.")
    effects = d.closed("caller")
    assert of_type(effects, CommandDone) == [
        CommandDone("cmd_t", False, "call ended: caller_hangup")
    ]
    assert of_type(effects, EndCall) == [EndCall(EndReason.CALLER_HANGUP)]


def test_pending_hangup_keeps_its_reason_when_the_caller_leaves_first() -> None:
    d = Driver()
    d.attach()
    d.command("cmd_h", "hangup", goodbye="Bye")
    effects = d.closed("caller")
    assert of_type(effects, CommandDone) == [CommandDone("cmd_h", True, "the caller hung up first")]
    assert of_type(effects, EndCall) == [EndCall(EndReason.OPERATOR_HANGUP)]
    assert of_type(effects, Hangup) == []


def test_update_while_detached_is_sent_on_reattach() -> None:
    d = Driver()
    d.attach()
    d.closed("drop")
    effects = d.command("cmd_1", "update", session={"instructions": "Be brief."})
    assert of_type(effects, Send) == []
    assert Persist() in effects
    resent = sends(d.attach(fresh=False))
    assert resent == [
        {"type": "session.update", "session": {"instructions": "Be brief.", "type": "realtime"}}
    ]
