"""Arbitrary sequences of events, ticks, commands and results never break the session core."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.pricing import Cost
from tests.support.session_driver import T0, make_plan
from workers.sessions.commands import Command
from workers.sessions.effects import (
    AccrueUsage,
    CommandDone,
    Effect,
    EndCall,
    Hangup,
    Persist,
    Refer,
    RunTool,
    Send,
)
from workers.sessions.plan import HangUp, IdlePolicy, SayText, ToolSpec, TransferTo, WrapUp
from workers.sessions.protocol import SessionProtocol

PLAN = make_plan(
    greeting_instructions="Greet.",
    tools=(ToolSpec("lookup", 3.0), ToolSpec("transfer_call"), ToolSpec("end_call")),
    dtmf={"0": TransferTo("sales"), "#": HangUp(), "1": SayText("Hours: 9-5.")},
    idle=IdlePolicy("Still there?", max_prompts=1, goodbye_instructions="Bye."),
    max_duration_s=120,
    max_duration_wrap_up=WrapUp(goodbye_instructions="Time.", grace_s=10),
    budget_usd=Decimal("0.02"),
    budget_wrap_up=WrapUp(transfer_to="desk"),
)

EVENT_TYPES = [
    "response.created",
    "response.done",
    "conversation.item.input_audio_transcription.completed",
    "response.output_audio_transcript.done",
    "response.output_audio_transcript.delta",
    "response.output_text.done",
    "response.output_text.delta",
    "output_audio_buffer.started",
    "output_audio_buffer.stopped",
    "output_audio_buffer.cleared",
    "input_audio_buffer.speech_started",
    "input_audio_buffer.speech_stopped",
    "input_audio_buffer.timeout_triggered",
    "input_audio_buffer.dtmf_event_received",
    "response.function_call_arguments.done",
    "error",
    "session.updated",
    "response.audio_transcript.done",
    "made.up",
]

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 10**6)
    | st.floats(allow_nan=True)
    | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
_ids = st.sampled_from(["r1", "r2", "r3", "", None, 7])
_count = st.one_of(st.integers(0, 3000), st.integers(-2, -1), st.none(), st.just("9"))
_usage = st.one_of(
    _json,
    st.fixed_dictionaries(
        {},
        optional={
            "input_tokens": _count,
            "output_tokens": _count,
            "input_token_details": st.fixed_dictionaries(
                {},
                optional={
                    "text_tokens": _count,
                    "audio_tokens": _count,
                    "cached_tokens": _count,
                    "cached_tokens_details": st.fixed_dictionaries(
                        {}, optional={"text_tokens": _count, "audio_tokens": _count}
                    ),
                },
            ),
            "output_token_details": st.fixed_dictionaries(
                {}, optional={"text_tokens": _count, "audio_tokens": _count}
            ),
        },
    ),
)
_response = st.one_of(
    _json,
    st.fixed_dictionaries(
        {"id": _ids},
        optional={
            "usage": _usage,
            "metadata": st.one_of(
                st.none(),
                st.fixed_dictionaries(
                    {"switchboard_tag": st.sampled_from(["sb_resp_1", "sb_resp_2", "x"])}
                ),
            ),
        },
    ),
)
_noisy_event = st.one_of(
    st.fixed_dictionaries(
        {"type": st.sampled_from(EVENT_TYPES)},
        optional={
            "response": _response,
            "response_id": _ids,
            "call_id": st.sampled_from(["call_1", "call_2", "", None, 3]),
            "name": st.sampled_from(["lookup", "transfer_call", "end_call", "weather", None, 1]),
            "arguments": st.sampled_from(
                ["{}", '{"target": "sales"}', '{"target": "x"}', "[", None, 5, '{"reason": "done"}']
            ),
            "transcript": st.sampled_from(["hi", "", None, 3]),
            "text": st.sampled_from(["ok", "", None]),
            "delta": st.text(max_size=3),
            "event": st.sampled_from(["0", "#", "1", "5", None, ["0"]]),
            "error": st.one_of(
                _json,
                st.fixed_dictionaries({"event_id": st.sampled_from(["sb_resp_1", "sb_resp_2"])}),
            ),
        },
    ),
    _json,
)
_good_usage = st.builds(
    lambda text, audio, out: {
        "input_tokens": text + audio,
        "output_tokens": out,
        "input_token_details": {"text_tokens": text, "audio_tokens": audio},
        "output_token_details": {"audio_tokens": out},
    },
    st.integers(0, 500),
    st.integers(0, 500),
    st.integers(0, 300),
)
_good_ids = st.sampled_from(["r1", "r2", "r3", "r4"])
_tags = st.sampled_from(["sb_resp_1", "sb_resp_2", "sb_resp_3"])
_good_event = st.one_of(
    st.builds(
        lambda rid, tag: {"type": "response.created", "response": {"id": rid, "metadata": tag}},
        _good_ids,
        st.one_of(st.none(), st.builds(lambda t: {"switchboard_tag": t}, _tags)),
    ),
    st.builds(
        lambda rid, usage: {"type": "response.done", "response": {"id": rid, "usage": usage}},
        _good_ids,
        _good_usage,
    ),
    st.builds(
        lambda kind, rid: {"type": kind, "response_id": rid},
        st.sampled_from(
            [
                "output_audio_buffer.started",
                "output_audio_buffer.stopped",
                "output_audio_buffer.cleared",
            ]
        ),
        _good_ids,
    ),
    st.builds(
        lambda call_id, name, arguments, rid: {
            "type": "response.function_call_arguments.done",
            "call_id": call_id,
            "name": name,
            "arguments": arguments,
            "response_id": rid,
        },
        st.sampled_from(["call_1", "call_2", "call_3"]),
        st.sampled_from(["lookup", "lookup", "transfer_call", "end_call", "weather"]),
        st.sampled_from(
            ["{}", '{"target": "sales"}', '{"target": "x"}', "[", '{"reason": "done"}']
        ),
        _good_ids,
    ),
    st.builds(
        lambda kind: {"type": kind, "transcript": "words", "text": "words", "delta": "w"},
        st.sampled_from(
            [
                "conversation.item.input_audio_transcription.completed",
                "response.output_audio_transcript.done",
                "response.output_audio_transcript.delta",
                "response.output_text.done",
                "input_audio_buffer.speech_started",
                "input_audio_buffer.speech_stopped",
                "input_audio_buffer.timeout_triggered",
            ]
        ),
    ),
    st.builds(
        lambda key: {"type": "input_audio_buffer.dtmf_event_received", "event": key},
        st.sampled_from(["0", "#", "1", "5"]),
    ),
)
_event = st.one_of(_good_event, _good_event, _good_event, _noisy_event, _json)
_command = st.builds(
    Command,
    command_id=st.sampled_from(["cmd_1", "cmd_2", "cmd_3"]),
    kind=st.sampled_from(["transfer", "hangup", "say", "update", "dance"]),
    args=st.one_of(
        st.fixed_dictionaries(
            {},
            optional={
                "target": st.sampled_from(["sales", "sip:a@b.c", "tel:+1555", "nope", None]),
                "announcement": st.sampled_from(["Hold on", "", None]),
                "goodbye": st.sampled_from(["Bye", "", None]),
                "text": st.sampled_from(["Hello", " ", None]),
                "session": st.one_of(
                    _json,
                    st.just({"audio": {"input": {"format": {"type": "audio/pcm"}}}, "tools": []}),
                    st.just(
                        {
                            "instructions": "x",
                            "audio": {"output": {"format": {"type": "audio/pcmu"}}},
                        }
                    ),
                ),
            },
        ),
        _json,
    ),
    issued_at=st.one_of(st.none(), st.floats(T0 - 5, T0 + 500)),
)
_op = st.one_of(
    st.tuples(st.just("event"), _event),
    st.tuples(st.just("event"), _event),
    st.tuples(st.just("event"), _event),
    st.tuples(st.just("event"), _event),
    st.tuples(st.just("tick"), st.none()),
    st.tuples(st.just("command"), _command),
    st.tuples(
        st.just("result"),
        st.tuples(st.sampled_from(["call_1", "call_2", "zz"]), st.text(max_size=5), st.booleans()),
    ),
    st.tuples(
        st.just("closed"), st.sampled_from(["caller", "gone", "drop", "drop", "drop", "error"])
    ),
    st.tuples(st.just("attach"), st.booleans()),
    st.tuples(st.just("failover"), st.none()),
)


def _check_send(event: dict[str, Any]) -> None:
    assert event["type"] in {"response.create", "conversation.item.create", "session.update"}
    json.dumps(event)
    if event["type"] == "session.update":
        session = event["session"]
        assert session["type"] == "realtime"
        audio = session.get("audio", {})
        assert all("format" not in part for part in audio.values() if isinstance(part, dict))
    if event["type"] == "response.create":
        assert set(event.get("response", {})) <= {"instructions", "metadata"}


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_op, st.floats(0, 15)), max_size=60))
def test_arbitrary_sequences_never_break_the_core(ops: list[tuple[tuple[str, Any], float]]) -> None:
    core = SessionProtocol(PLAN)
    now = T0
    effects: list[Effect] = []
    for (kind, arg), step_s in ops:
        now += step_s
        if kind == "event":
            batch = core.on_event(arg, now)
        elif kind == "tick":
            batch = core.on_tick(now)
        elif kind == "command":
            batch = core.on_command(arg, now)
        elif kind == "result":
            batch = core.on_tool_result(arg[0], arg[1], arg[2], now)
        elif kind == "closed":
            batch = core.on_closed(now, arg)
        elif kind == "attach":
            batch = core.on_attached(now, arg)
        else:
            snap = json.loads(json.dumps(core.snapshot()))
            core = SessionProtocol.restore(PLAN, snap)
            assert core.snapshot() == snap
            batch = core.on_attached(now, False)
        deadline = core.next_deadline()
        assert deadline is None or isinstance(deadline, float | int)
        started_at = core.state.started_at
        if kind == "tick" and started_at is not None and PLAN.max_duration_s is not None:
            # No call outlives its max duration, whatever it was doing.
            assert core.state.ended or now < started_at + PLAN.max_duration_s
        assert not batch or batch.count(Persist()) <= 1
        if any(isinstance(e, Refer | Hangup) for e in batch):
            assert any(isinstance(e, EndCall) for e in batch)
        effects.extend(batch)

    ended_at = next((i for i, e in enumerate(effects) if isinstance(e, EndCall)), len(effects))
    assert sum(isinstance(e, EndCall) for e in effects) <= 1
    assert sum(isinstance(e, Refer | Hangup) for e in effects) <= 1
    assert not any(isinstance(e, Send | RunTool) for e in effects[ended_at + 1 :])
    for effect in effects:
        if isinstance(effect, Send):
            _check_send(effect.event)
    accrued = [e for e in effects if isinstance(e, AccrueUsage)]
    assert len({a.response_id for a in accrued}) == len(accrued)
    assert Decimal(core.snapshot()["cost_usd"]) == sum((a.cost for a in accrued), Cost()).total_usd
    runs = [e.tool_call_id for e in effects if isinstance(e, RunTool)]
    assert len(set(runs)) == len(runs)
    outcomes: dict[str, tuple[bool, str]] = {}
    for done in (e for e in effects if isinstance(e, CommandDone)):
        assert outcomes.setdefault(done.command_id, (done.ok, done.detail)) == (
            done.ok,
            done.detail,
        )
