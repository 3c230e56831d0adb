"""The sideband websocket against the official SDK: the events of a turn and their order,
attach, tool flow, client events, handshake refusals, hangup, faults and re-attachment."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from openai import AsyncOpenAI
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus

from tests.emulator.sideband_agent import (
    LOOKUP_ORDER,
    ORDER_OUTPUT,
    TOOLS,
    fast_emulator,
    place_and_accept,
    run_agent,
    sdk,
    types_of,
    validate,
)
from tests.support.emulator import EmulatorHandle
from tests.support.procs import wait_until_async


@pytest.fixture
def emu() -> Any:
    with fast_emulator() as handle:
        yield handle


class Frames:
    """A call-attached raw websocket whose every server frame is validated against the
    SDK's server-event union and kept, in order, in ``seen``."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.seen: list[dict[str, Any]] = []

    async def send(self, **client_event: Any) -> None:
        await self.ws.send(orjson.dumps(client_event).decode())

    async def next(self) -> dict[str, Any]:
        body: dict[str, Any] = orjson.loads(await self.ws.recv())
        validate(body)
        self.seen.append(body)
        return body

    async def until(self, kind: str) -> list[dict[str, Any]]:
        """Frames up to and including the next one of type ``kind``."""
        frames = [await self.next()]
        while frames[-1]["type"] != kind:
            frames.append(await self.next())
        return frames

    async def rest(self) -> list[dict[str, Any]]:
        """Every frame until the server closes the socket."""
        frames: list[dict[str, Any]] = []
        try:
            while True:
                frames.append(await self.next())
        except ConnectionClosed:
            return frames


def attached(emu: EmulatorHandle, call_id: str) -> Any:
    headers = {"Authorization": f"Bearer {emu.api_key}"}
    return connect(f"{emu.ws_url}/realtime?call_id={call_id}", additional_headers=headers)


def collapse(kinds: list[str]) -> list[str]:
    """``kinds`` with each run of one type (deltas) reduced to one entry."""
    return [kind for index, kind in enumerate(kinds) if index == 0 or kinds[index - 1] != kind]


def one_turn(transcribed: bool) -> list[str]:
    """The GA events of one caller turn answered in speech, in the order they are sent."""
    transcription = [
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.completed",
    ]
    return [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        *(transcription if transcribed else []),
        "conversation.item.done",
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
        "output_audio_buffer.started",
        "response.output_audio_transcript.delta",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
        "output_audio_buffer.stopped",
    ]


@pytest.mark.parametrize("transcribed", [True, False])
async def test_a_turn_emits_the_ga_events_in_order(emu: EmulatorHandle, transcribed: bool) -> None:
    audio = {"input": {"transcription": {"model": "gpt-4o-transcribe"}}} if transcribed else {}
    async with sdk(emu) as client:
        call_id = await place_and_accept(emu, client, "quick-question", audio=audio)
    async with attached(emu, call_id) as ws:
        frames = Frames(ws)
        await frames.until("output_audio_buffer.stopped")
    kinds = types_of(frames.seen)
    assert kinds[0] == "session.created"
    turn = frames.seen[1:]
    assert collapse(types_of(turn)) == one_turn(transcribed)

    by_type: dict[str, list[dict[str, Any]]] = {}
    for body in turn:
        by_type.setdefault(body["type"], []).append(body)
    started, stopped = by_type["input_audio_buffer.speech_started"][0], turn[1]
    assert started["audio_start_ms"] < stopped["audio_end_ms"]
    user_item = by_type["conversation.item.done"][0]["item"]
    assert user_item["role"] == "user"
    user_ids = {started["item_id"], stopped["item_id"], turn[2]["item_id"], user_item["id"]}
    user_ids |= {e["item"]["id"] for e in by_type["conversation.item.added"][:1]}
    user_ids |= {e["item_id"] for k, v in by_type.items() if "transcription" in k for e in v}
    assert len(user_ids) == 1
    heard = user_item["content"][0]["transcript"]
    if transcribed:
        deltas = by_type["conversation.item.input_audio_transcription.delta"]
        completed = by_type["conversation.item.input_audio_transcription.completed"][0]
        assert "".join(e["delta"] for e in deltas) == completed["transcript"] == heard
        assert heard == "Hi, what are your opening hours on Saturday?"
    else:
        assert heard is None

    response = by_type["response.done"][0]["response"]
    assert by_type["response.created"][0]["response"]["id"] == response["id"]
    assert response["status"] == "completed"
    assert {e["response_id"] for e in turn if "response_id" in e} == {response["id"]}
    assistant_added = by_type["conversation.item.added"][1]
    assert assistant_added["previous_item_id"] == user_item["id"]
    reply_id = assistant_added["item"]["id"]
    assert {e["item_id"] for e in turn if "response_id" in e and "item_id" in e} == {reply_id}
    assert by_type["response.output_item.added"][0]["item"]["id"] == reply_id
    assert by_type["conversation.item.done"][1]["item"]["id"] == reply_id
    said = "".join(e["delta"] for e in by_type["response.output_audio_transcript.delta"])
    done = by_type["response.output_audio_transcript.done"][0]["transcript"]
    expected = "We're open from nine in the morning to five in the afternoon on Saturdays."
    assert said == done == expected
    assert response["output"][0]["content"][0]["transcript"] == expected
    assert response["usage"]["output_token_details"]["audio_tokens"] > 0


async def test_the_model_waits_for_response_create_after_a_tool_output(
    emu: EmulatorHandle,
) -> None:
    async with sdk(emu) as client:
        call_id = await place_and_accept(emu, client, "order-status", tools=TOOLS)
    async with attached(emu, call_id) as ws:
        frames = Frames(ws)
        tool_call = (await frames.until("response.done"))[-1]["response"]["output"][0]
        assert tool_call["type"] == "function_call"
        output_item = {"type": "function_call_output", "id": "item_tool_output_1"}
        output_item |= {"call_id": tool_call["call_id"], "output": ORDER_OUTPUT}
        await frames.send(type="conversation.item.create", item=output_item)
        # A round trip: the server has acted on the item before it answers this.
        await frames.send(type="conversation.item.retrieve", item_id="item_tool_output_1")
        meanwhile = await frames.until("conversation.item.retrieved")
        waiting = emu.call(call_id)
        await frames.send(type="response.create")
        answer = await frames.until("response.done")
    assert types_of(meanwhile) == [
        "conversation.item.added",
        "conversation.item.done",
        "conversation.item.retrieved",
    ]
    assert meanwhile[-1]["item"]["output"] == ORDER_OUTPUT
    assert waiting["responses"] == 1
    assert types_of(waiting["events_sent"]).count("response.created") == 1
    assert [o["output"] for o in waiting["tool_outputs"]] == [ORDER_OUTPUT]
    assert answer[0]["type"] == "response.created"
    said = next(e for e in answer if e["type"] == "response.output_audio_transcript.done")
    assert ORDER_OUTPUT in said["transcript"]
    assert emu.call(call_id, events=False)["responses"] == 2


ON_HOLD = "description: Stays on the line without a word.\ngreeting_wait_s: 0\nsteps:\n"
ON_HOLD += "  - silence_s: 600\n"
LONG_LINE = " ".join(["Please hold while I look into every detail of your request."] * 3)


@contextlib.asynccontextmanager
async def on_hold_call(
    tmp_path: Path,
) -> AsyncIterator[tuple[EmulatorHandle, AsyncOpenAI, str, Frames]]:
    """A silent caller's call on a fast emulator, accepted through the SDK and attached,
    its ``session.created`` read: the emulator, the SDK client, the call id, the frames."""
    (tmp_path / "on-hold.yaml").write_text(ON_HOLD, encoding="utf-8")
    with fast_emulator(time_scale=0.2, scenario_dirs=[tmp_path]) as emu:
        async with sdk(emu) as client:
            call_id = await place_and_accept(emu, client, "on-hold")
            async with attached(emu, call_id) as ws:
                frames = Frames(ws)
                await frames.until("session.created")
                yield emu, client, call_id, frames


async def test_events_of_client_requests_validate_against_the_sdk(tmp_path: Path) -> None:
    async with on_hold_call(tmp_path) as (emu, client, call_id, frames):
        user = {"type": "message", "id": "item_user_1", "role": "user"}
        user["content"] = [{"type": "input_text", "text": "Where is my parcel?"}]
        await frames.send(type="conversation.item.create", item=user)
        await frames.until("conversation.item.done")
        speak = {"instructions": f'Say "{LONG_LINE}"'}
        await frames.send(type="response.create", response=speak)
        spoken = (await frames.until("response.done"))[-1]["response"]
        await frames.send(type="output_audio_buffer.clear")  # still playing
        cleared = (await frames.until("output_audio_buffer.cleared"))[-1]
        reply_id = spoken["output"][0]["id"]
        truncate = {"item_id": reply_id, "content_index": 0, "audio_end_ms": 1500}
        await frames.send(type="conversation.item.truncate", **truncate)
        truncated = (await frames.until("conversation.item.truncated"))[-1]
        await frames.send(type="conversation.item.retrieve", item_id="item_user_1")
        retrieved = (await frames.until("conversation.item.retrieved"))[-1]
        await frames.send(type="response.create", response=speak)
        await frames.until("response.created")
        await frames.send(type="response.cancel")
        cancelled = (await frames.until("response.done"))[-1]["response"]
        await frames.send(type="input_audio_buffer.clear")
        await frames.until("input_audio_buffer.cleared")
        await frames.send(type="conversation.item.delete", item_id="item_user_1")
        deleted = (await frames.until("conversation.item.deleted"))[-1]
        bad = [
            {"type": "conversation.item.retrieve", "item_id": "item_user_1"},
            {"type": "conversation.item.delete", "item_id": "item_user_1"},
            {"type": "conversation.item.truncate", "item_id": "item_nope"},
            {"type": "response.cancel"},
            {"type": "input_audio_buffer.commit"},
            {"type": "session.update", "session": {"type": "realtime", "speed": 1}},
        ]
        for index, body in enumerate(bad):
            await frames.send(**body, event_id=f"bad_{index}")
        while len([f for f in frames.seen if f["type"] == "error"]) < len(bad):
            await frames.next()
        await client.realtime.calls.hangup(call_id)
        await frames.rest()
        truth = emu.call(call_id)
    assert (spoken["status"], cancelled["status"]) == ("completed", "cancelled")
    assert cancelled["status_details"]["reason"] == "client_cancelled"
    assert cleared["response_id"] == spoken["id"]
    assert (truncated["item_id"], truncated["audio_end_ms"]) == (reply_id, 1500)
    assert retrieved["item"]["content"][0]["text"] == "Where is my parcel?"
    assert deleted["item_id"] == "item_user_1"
    errors = [f["error"] for f in frames.seen if f["type"] == "error"]
    assert [e["event_id"] for e in errors] == [f"bad_{index}" for index in range(len(bad))]
    assert [e["code"] for e in errors] == [
        "item_retrieve_invalid_item_id",
        "item_delete_invalid_item_id",
        "item_truncate_invalid_item_id",
        "response_cancel_not_active",
        "input_audio_buffer_commit_empty",
        "unknown_parameter",
    ]
    assert truth["ended_by"] == "hangup"
    assert types_of(truth["events_sent"]) == types_of(frames.seen)


async def test_a_cancelled_reply_plays_what_was_generated_until_cleared(tmp_path: Path) -> None:
    """``response.cancel`` stops generation, not playback: the audio generated so far
    plays on and ends with ``stopped``, unless ``output_audio_buffer.clear`` cuts it,
    which is answered with ``cleared``."""
    async with on_hold_call(tmp_path) as (_, client, call_id, frames):
        speak = {"instructions": f'Say "{LONG_LINE}"'}
        endings = []
        for clear in (False, True):
            await frames.send(type="response.create", response=speak)
            await frames.until("response.output_audio_transcript.delta")
            await frames.send(type="response.cancel")
            done = (await frames.until("response.done"))[-1]["response"]
            if clear:
                await frames.send(type="output_audio_buffer.clear")
            ending = await frames.next()
            endings.append((done, ending))
        await client.realtime.calls.hangup(call_id)
    for (done, ending), expected in zip(endings, ("stopped", "cleared"), strict=True):
        assert done["status"] == "cancelled"
        transcript = done["output"][0]["content"][0]["transcript"]
        assert transcript
        assert LONG_LINE.startswith(transcript)
        assert transcript != LONG_LINE
        assert ending["type"] == f"output_audio_buffer.{expected}"
        assert ending["response_id"] == done["id"]


async def test_sdk_attaches_and_answers_a_tool_call(emu: EmulatorHandle) -> None:
    async with sdk(emu) as client:
        call_id = await place_and_accept(emu, client, "order-status", tools=TOOLS)
        events = await run_agent(client, call_id)
    kinds = types_of(events)
    assert kinds[0] == "session.created"
    assert events[0].session.tools[0].name == "lookup_order"
    args_done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert (args_done.name, orjson.loads(args_done.arguments)) == (
        "lookup_order",
        {"order_id": "12345"},
    )
    assert args_done.call_id.startswith("call_")
    after_tool = kinds.index("response.function_call_arguments.done")
    transcripts = [
        e.transcript
        for e in events[after_tool:]
        if e.type == "response.output_audio_transcript.done"
    ]
    assert ORDER_OUTPUT in transcripts[0]
    truth = emu.call(call_id)
    assert truth["tool_outputs"] == [
        {
            "call_id": args_done.call_id,
            "name": "lookup_order",
            "output": ORDER_OUTPUT,
            "at": truth["tool_outputs"][0]["at"],
        }
    ]
    [issued] = truth["function_calls"]
    assert (issued["call_id"], issued["name"], issued["delivered"], issued["attachments"]) == (
        args_done.call_id,
        "lookup_order",
        True,
        [0],
    )
    assert truth["created_at"] < issued["at"] < truth["tool_outputs"][0]["at"]
    assert (truth["state"], truth["ended_by"]) == ("ended", "caller")
    assert truth["attachments"][0]["closed_at"] is not None
    assert kinds.count("response.done") == truth["responses"] == 3


async def test_undeclared_tool_is_not_called(emu: EmulatorHandle) -> None:
    async with sdk(emu) as client:
        call_id = await place_and_accept(emu, client, "order-status", tools=[])
        events = await run_agent(client, call_id)
    assert "response.function_call_arguments.done" not in types_of(events)
    first_reply = next(e for e in events if e.type == "response.output_audio_transcript.done")
    assert first_reply.transcript.startswith("I'm sorry, I can't look up orders")
    assert emu.call(call_id)["tool_outputs"] == []


async def test_a_hung_tool_makes_the_caller_hang_up(emu: EmulatorHandle) -> None:
    async with sdk(emu) as client:
        call_id = await place_and_accept(emu, client, "order-status", tools=[LOOKUP_ORDER])
        events = await run_agent(client, call_id, tool_output=None)
    kinds = types_of(events)
    assert "response.function_call_arguments.done" in kinds
    assert "response.output_audio_transcript.done" not in kinds
    truth = emu.call(call_id)
    assert (truth["ended_by"], truth["tool_outputs"]) == ("caller", [])


@pytest.mark.parametrize("configured", [True, False])
async def test_caller_transcripts_only_when_configured(
    emu: EmulatorHandle, configured: bool
) -> None:
    audio = {"input": {"transcription": {"model": "gpt-4o-transcribe"}}} if configured else {}
    async with sdk(emu) as client:
        call_id = await place_and_accept(emu, client, "quick-question", audio=audio)
        events = await run_agent(client, call_id)
    kinds = types_of(events)
    user_done = [
        e.item for e in events if e.type == "conversation.item.done" and e.item.role == "user"
    ]
    assert len(user_done) == 2
    transcripts = [item.content[0].transcript for item in user_done]
    if configured:
        assert kinds.count("conversation.item.input_audio_transcription.completed") == 2
        assert "conversation.item.input_audio_transcription.delta" in kinds
        assert transcripts[0] == "Hi, what are your opening hours on Saturday?"
    else:
        assert not [k for k in kinds if "input_audio_transcription" in k]
        assert transcripts == [None, None]


async def test_client_event_errors_echo_event_id_and_change_nothing(emu: EmulatorHandle) -> None:
    async with sdk(emu) as client:
        call_id = await place_and_accept(emu, client, "quick-question", instructions="Be brief.")
    headers = {"Authorization": f"Bearer {emu.api_key}"}
    async with connect(
        f"{emu.ws_url}/realtime?call_id={call_id}", additional_headers=headers
    ) as ws:
        created = orjson.loads(await ws.recv())
        for frame in [
            {"type": "session.update", "event_id": "c1", "session": {"instructions": "x"}},
            {"type": "no.such.event", "event_id": "c2"},
            "{not json",
            {"type": "response.cancel", "event_id": "c3"},
            {"type": "conversation.item.create", "event_id": "c4", "item": {"type": "bogus"}},
            {"type": "response.create", "event_id": "c5", "response": {"conversation": "x"}},
            {
                "type": "conversation.item.create",
                "event_id": "c6",
                "item": {"type": "message", "role": "user", "content": [{"type": "text"}]},
            },
        ]:
            await ws.send(frame if isinstance(frame, str) else orjson.dumps(frame).decode())
        errors, others = [], []
        while len(errors) < 7:  # the caller's script runs meanwhile: keep its events apart
            body = orjson.loads(await ws.recv())
            (errors if body["type"] == "error" else others).append(body)
        update = {"type": "realtime", "instructions": "Be kind."}
        update["audio"] = {"output": {"format": {"type": "audio/pcm", "rate": 24000}}}
        await ws.send(orjson.dumps({"type": "session.update", "session": update}).decode())
        updated = orjson.loads(await ws.recv())
        while updated["type"] != "session.updated":
            others.append(updated)
            updated = orjson.loads(await ws.recv())
    for body in [created, *errors, updated, *others]:
        validate(body)
    assert [e["type"] for e in errors] == ["error"] * 7
    first = errors[0]["error"]
    assert (first["type"], first["code"], first["event_id"]) == (
        "invalid_request_error",
        "missing_required_parameter",
        "c1",
    )
    assert first["message"] == "Missing required parameter: 'session.type'."
    codes = [(e["error"]["code"], e["error"]["event_id"]) for e in errors[1:]]
    assert codes == [
        ("invalid_value", "c2"),
        ("invalid_json", None),
        ("response_cancel_not_active", "c3"),
        ("invalid_value", "c4"),
        ("invalid_value", "c5"),
        ("invalid_value", "c6"),
    ]
    assert created["session"]["instructions"] == "Be brief."
    assert updated["type"] == "session.updated"
    assert updated["session"]["instructions"] == "Be kind."
    truth = emu.call(call_id)
    assert truth["defects"]
    assert "audio.output.format" in truth["defects"][0]
    assert any(e.get("type") == "no.such.event" for e in truth["events_received"])
    assert truth["state"] == "active"  # errors leave the session open


async def test_beta_header_gets_an_error_and_close_4000(emu: EmulatorHandle) -> None:
    headers = {"Authorization": f"Bearer {emu.api_key}", "OpenAI-Beta": "realtime=v1"}
    async with connect(
        f"{emu.ws_url}/realtime?model=gpt-realtime", additional_headers=headers
    ) as ws:
        event = orjson.loads(await ws.recv())
        with pytest.raises(ConnectionClosedError):
            await ws.recv()
    validate(event)
    assert event["error"]["code"] == "beta_api_shape_disabled"
    assert event["error"]["message"] == (
        "The Realtime Beta API is no longer supported. Please use /v1/realtime for the GA API."
    )
    assert ws.close_code == 4000
    assert ws.close_reason == "invalid_request_error.beta_api_shape_disabled"


async def test_bad_key_unknown_and_ended_calls_are_refused() -> None:
    with fast_emulator(api_key="sk-right") as emu:
        async with sdk(emu) as client:
            call_id = await place_and_accept(emu, client, "quick-question")
            await client.realtime.calls.hangup(call_id)
        cases = [
            (f"call_id={call_id}", "sk-wrong", 401),
            ("call_id=rtc_unknown", "sk-right", 404),
            (f"call_id={call_id}", "sk-right", 404),  # ended
            ("", "sk-right", 400),
        ]
        for query, key, status in cases:
            headers = {"Authorization": f"Bearer {key}"}
            with pytest.raises(InvalidStatus) as refused:
                await connect(f"{emu.ws_url}/realtime?{query}", additional_headers=headers)
            assert refused.value.response.status_code == status
            assert b"sk-wrong" not in refused.value.response.body


async def test_rest_hangup_closes_the_socket(emu: EmulatorHandle) -> None:
    async with sdk(emu) as client:
        call_id = await place_and_accept(emu, client, "long-call")
        async with asyncio.timeout(10), client.realtime.connect(call_id=call_id) as conn:
            assert (await conn.recv()).type == "session.created"
            await client.realtime.calls.hangup(call_id)
            rest = [event async for event in conn]  # ends when the server closes (1000)
    assert "session.created" not in types_of(rest)
    truth = emu.call(call_id)
    assert truth["ended_by"] == "hangup"
    assert truth["attachments"][0]["closed_at"] is not None


async def test_drop_fault_then_reattach_resumes_the_script(emu: EmulatorHandle) -> None:
    emu.set_faults(ws_drop_rate=1.0)
    async with sdk(emu) as client:
        call_id = await place_and_accept(emu, client, "quick-question")
        with pytest.raises(ConnectionClosedError) as dropped:
            await run_agent(client, call_id)
        assert dropped.value.rcvd is not None
        assert dropped.value.rcvd.code == 1011
        emu.set_faults(ws_drop_rate=0.0)
        again = await run_agent(client, call_id)
    kinds = types_of(again)
    assert kinds[0] == "session.created"
    assert "input_audio_buffer.speech_started" in kinds
    assert "response.done" in kinds
    truth = emu.call(call_id)
    first, second = truth["attachments"]
    assert first["closed_at"] <= second["opened_at"]
    assert (first["closed_by"], first["close_code"]) == ("server", 1011)
    assert (second["closed_by"], second["close_code"]) == ("server", 1000)  # the call's end
    assert truth["overlapping_attachments"] is False
    assert truth["ended_by"] == "caller"


@pytest.mark.parametrize(("abort", "codes"), [(False, {1000}), (True, {1005, 1006})])
async def test_a_socket_the_client_closes_or_loses_is_recorded_as_its_close(
    emu: EmulatorHandle, abort: bool, codes: set[int]
) -> None:
    """A client closing (1000) or vanishing without a close frame (its process died) is
    told apart from the emulator's own closes in ground truth."""
    async with sdk(emu) as client:
        call_id = await place_and_accept(emu, client, "long-call")
    async with attached(emu, call_id) as ws:
        assert orjson.loads(await ws.recv())["type"] == "session.created"
        if abort:
            ws.transport.abort()
    await wait_until_async(
        lambda: emu.call(call_id, events=False)["attachments"][0]["closed_at"] is not None,
        10.0,
        "the close seen by the emulator",
    )
    [span] = emu.call(call_id, events=False)["attachments"]
    assert span["closed_by"] == "client"
    assert span["close_code"] in codes


async def test_two_sockets_both_get_events_and_overlap(emu: EmulatorHandle) -> None:
    async with sdk(emu) as client:
        call_id = await place_and_accept(emu, client, "quick-question")
        both = await asyncio.gather(run_agent(client, call_id), run_agent(client, call_id))
    for events in both:
        assert types_of(events).count("response.done") == 2
    assert emu.call(call_id)["overlapping_attachments"] is True


async def test_greeting_cancel_and_standalone_session() -> None:
    with fast_emulator(time_scale=0.2) as emu:
        async with sdk(emu) as client, client.realtime.connect(model="gpt-realtime") as conn:
            created = await conn.recv()
            await conn.response.create(response={"instructions": 'Say "Welcome to Acme."'})
            greeting = [await conn.recv()]
            while greeting[-1].type != "output_audio_buffer.stopped":
                greeting.append(await conn.recv())
            item = {"type": "message", "role": "user"}
            item["content"] = [{"type": "input_text", "text": "Where is my parcel?"}]
            await conn.conversation.item.create(item=item)  # type: ignore[arg-type]
            assert (await conn.recv()).type == "conversation.item.added"
            assert (await conn.recv()).type == "conversation.item.done"
            await conn.response.create()
            answer = [await conn.recv()]
            while answer[-1].type != "response.done":
                answer.append(await conn.recv())
            await conn.response.create()
            while (await conn.recv()).type != "response.created":
                pass  # the answer's output_audio_buffer.stopped may come first
            await conn.response.cancel()
            events = [await conn.recv()]
            while events[-1].type != "response.done":
                events.append(await conn.recv())
    assert created.type == "session.created"
    assert created.session.model == "gpt-realtime"
    transcript = next(e for e in greeting if e.type == "response.output_audio_transcript.done")
    assert transcript.transcript == "Welcome to Acme."
    said = next(e for e in answer if e.type == "response.output_audio_transcript.done")
    assert said.transcript == "Understood: Where is my parcel?"
    assert events[-1].response.status == "cancelled"
    assert events[-1].response.status_details.reason == "client_cancelled"


async def test_dead_air_makes_the_caller_hang_up() -> None:
    with fast_emulator(dead_air_timeout_s=0.2) as emu:
        async with sdk(emu) as client:
            call_id = await place_and_accept(emu, client, "quick-question")
        truth = emu.wait_for_call(call_id, lambda c: c["state"] == "ended", 5.0)
    assert (truth["ended_by"], truth["attachments"]) == ("caller", [])


async def test_malformed_fault_adds_broken_or_unknown_frames(emu: EmulatorHandle) -> None:
    emu.set_faults(malformed_event_rate=1.0)
    async with sdk(emu) as client:
        call_id = await place_and_accept(emu, client, "quick-question")
    headers = {"Authorization": f"Bearer {emu.api_key}"}
    frames: list[str] = []
    async with connect(
        f"{emu.ws_url}/realtime?call_id={call_id}", additional_headers=headers
    ) as ws:
        async for frame in ws:
            frames.append(str(frame))
    assert ws.close_code == 1000  # the caller hung up at the end of the script
    valid, broken, unknown = 0, 0, 0
    for frame in frames:
        try:
            body = orjson.loads(frame)
        except orjson.JSONDecodeError:
            broken += 1
            continue
        if body["type"].startswith("emulator."):
            unknown += 1
        else:
            validate(body)
            valid += 1
    assert broken + unknown == valid - 1  # every scripted event, not session.created
    truth = emu.call(call_id, events=False)
    assert truth["malformed_sent"] == broken + unknown
    assert truth["ended_by"] == "caller"  # the call itself was unaffected


async def test_without_turn_detection_the_client_commits(emu: EmulatorHandle) -> None:
    audio = {"input": {"turn_detection": None}}
    async with sdk(emu) as client:
        call_id = await place_and_accept(emu, client, "quick-question", audio=audio)
        async with asyncio.timeout(10), client.realtime.connect(call_id=call_id) as conn:
            assert (await conn.recv()).type == "session.created"
            committed = None
            while committed is None:  # poll until the caller's first words are buffered
                await asyncio.sleep(0.02)
                await conn.input_audio_buffer.commit()
                reply = await conn.recv()
                if reply.type == "input_audio_buffer.committed":
                    committed = reply
                else:
                    assert reply.error.code == "input_audio_buffer_commit_empty"
            await conn.response.create()
            events = [await conn.recv()]
            while events[-1].type != "response.done":
                events.append(await conn.recv())
    kinds = types_of(events)
    assert "input_audio_buffer.speech_started" not in kinds
    said = next(e for e in events if e.type == "response.output_audio_transcript.done")
    assert said.transcript.startswith("We're open from nine")
    assert committed.item_id.startswith("item_")
