"""Built-in and YAML scenarios: every event they produce is a valid GA server event, each
scenario does what it says, and a bad scenario file is refused with a clear error."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
from openai import AsyncOpenAI

from emulator.scenarios import ScenarioError, builtin_scenarios, load_scenarios
from emulator.state import MAX_EVENTS_KEPT
from tests.emulator.sideband_agent import (
    TOOLS,
    fast_emulator,
    place_and_accept,
    run_agent,
    sdk,
    types_of,
    validate,
)
from tests.support.emulator import EmulatorHandle

BUILTINS = sorted(builtin_scenarios())
DTMF_REPLY = {"type": "response.create", "response": {"instructions": 'Say "One moment."'}}


async def agent_with_dtmf_replies(client: AsyncOpenAI, call_id: str) -> list[Any]:
    """Like ``run_agent``, and it answers each key press with a spoken line."""
    received: list[Any] = []
    async with asyncio.timeout(20), client.realtime.connect(call_id=call_id) as conn:
        async for event in conn:
            received.append(event)
            if event.type == "input_audio_buffer.dtmf_event_received":
                await conn.send(DTMF_REPLY)  # type: ignore[arg-type]
            elif event.type == "response.function_call_arguments.done":
                item = {"type": "function_call_output", "call_id": event.call_id}
                await conn.conversation.item.create(item=item | {"output": '{"ok": true}'})  # type: ignore[arg-type]
                await conn.response.create()
    return received


def check_all_valid(truth: dict[str, Any], received: list[Any]) -> list[str]:
    """Validate every event the emulator kept (the last ``MAX_EVENTS_KEPT`` it sent);
    returns the types of all events received."""
    sent = truth["events_sent"]
    for event in sent:
        validate(event)
    kinds = types_of(received)
    assert len(sent) == min(len(kinds), MAX_EVENTS_KEPT)
    assert types_of(sent) == kinds[len(kinds) - len(sent) :]
    return kinds


@pytest.mark.parametrize("name", BUILTINS)
async def test_every_builtin_scenario_emits_only_valid_events(name: str) -> None:
    scale = 0.005 if name in ("long-call", "busy-call") else 0.02
    if name == "hang-up-early":
        # The caller lets it ring 2 s times the scale: keep that beyond a loaded
        # machine's accept, so the test answers the call the scenario then plays.
        scale = 0.5
    audio = {
        "input": {
            "transcription": {"model": "gpt-4o-transcribe"},
            "turn_detection": {"type": "server_vad", "idle_timeout_ms": 5000},
        }
    }
    with fast_emulator(time_scale=scale) as emu:
        async with sdk(emu) as client:
            call_id = await place_and_accept(emu, client, name, tools=TOOLS, audio=audio)
            received = await agent_with_dtmf_replies(client, call_id)
        truth = emu.call(call_id)
    kinds = check_all_valid(truth, received)
    assert kinds[0] == "session.created"
    assert truth["ended_by"] == "caller"
    assert truth["responses"] == kinds.count("response.done") >= 1
    steps = builtin_scenarios()[name].steps
    assert kinds.count("input_audio_buffer.speech_started") == sum(1 for s in steps if s.say)
    keys = [e["event"] for e in truth["events_sent"] if "dtmf" in e["type"]]
    assert keys == [key for s in steps if s.dtmf for key in s.dtmf]
    if name in ("order-status", "transfer-to-human"):
        assert len(truth["tool_outputs"]) == 1
    if name == "silent-caller":
        assert "input_audio_buffer.timeout_triggered" in kinds
        assert "input_audio_buffer.speech_started" not in kinds


@pytest.mark.parametrize(
    ("audio", "fired"),
    [
        (None, False),  # the server's default turn detection has no idle timeout
        ({"input": {"turn_detection": {"type": "server_vad"}}}, False),
        ({"input": {"turn_detection": {"type": "server_vad", "idle_timeout_ms": 5000}}}, True),
    ],
)
async def test_a_silent_caller_times_out_only_where_the_session_set_idle_timeout_ms(
    audio: dict[str, Any] | None, fired: bool
) -> None:
    session = {"audio": audio} if audio is not None else {}
    with fast_emulator() as emu:
        async with sdk(emu) as client:
            call_id = await place_and_accept(emu, client, "silent-caller", **session)
            received = await run_agent(client, call_id)
        truth = emu.call(call_id)
    timeouts = types_of(received).count("input_audio_buffer.timeout_triggered")
    # 60 s of silence against a 5 s timer, restarted after each idle reply has played.
    if fired:
        assert 4 <= timeouts <= 12
    else:
        assert timeouts == 0
    assert truth["ended_by"] == "caller"


async def test_text_only_session_writes_instead_of_speaking() -> None:
    with fast_emulator() as emu:
        async with sdk(emu) as client:
            call_id = await place_and_accept(
                emu, client, "quick-question", output_modalities=["text"]
            )
            received = await run_agent(client, call_id)
        kinds = check_all_valid(emu.call(call_id), received)
    assert "response.output_text.done" in kinds
    assert not [k for k in kinds if k.startswith(("output_audio_buffer", "response.output_audio"))]


async def test_transfer_scenario_calls_transfer_call_with_target_human(
    tmp_path: Path,
) -> None:
    with fast_emulator() as emu:
        async with sdk(emu) as client:
            call_id = await place_and_accept(emu, client, "transfer-to-human", tools=TOOLS)
            received = await run_agent(client, call_id)
    done = next(e for e in received if e.type == "response.function_call_arguments.done")
    assert (done.name, done.arguments) == ("transfer_call", '{"target":"human"}')


async def test_scenario_from_a_yaml_folder_is_played(tmp_path: Path) -> None:
    (tmp_path / "pizza.yaml").write_text(
        "description: Orders a pizza.\n"
        "steps:\n"
        "  - say: One large margherita, please.\n"
        "    seconds: 2\n"
        "    reply: One large margherita, coming right up.\n",
        encoding="utf-8",
    )
    with fast_emulator(scenario_dirs=[tmp_path]) as emu:
        async with sdk(emu) as client:
            call_id = await place_and_accept(emu, client, "pizza")
            received = await run_agent(client, call_id)
    said = [e.transcript for e in received if e.type == "response.output_audio_transcript.done"]
    assert said == ["One large margherita, coming right up."]


async def test_call_id_placeholder_in_tool_arguments_is_the_function_calls_id(
    tmp_path: Path,
) -> None:
    (tmp_path / "two-lookups.yaml").write_text(
        "steps:\n"
        "  - say: Where is my order?\n"
        "    tool:\n"
        "      name: lookup_order\n"
        "      arguments: {order_id: '{call_id}', note: 'ref {call_id}'}\n"
        "  - say: And my other order?\n"
        "    tool: {name: lookup_order, arguments: {order_id: '{call_id}'}}\n",
        encoding="utf-8",
    )
    with fast_emulator(scenario_dirs=[tmp_path]) as emu:
        async with sdk(emu) as client:
            call_id = await place_and_accept(emu, client, "two-lookups", tools=TOOLS)
            received = await run_agent(client, call_id)
    done = [e for e in received if e.type == "response.function_call_arguments.done"]
    assert len(done) == 2
    assert done[0].call_id != done[1].call_id
    assert orjson.loads(done[0].arguments) == {
        "order_id": done[0].call_id,
        "note": f"ref {done[0].call_id}",
    }
    assert orjson.loads(done[1].arguments) == {"order_id": done[1].call_id}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("steps: [\n", "not valid YAML"),
        ("- just\n- a list\n", "expected a mapping"),
        ("reply_patience_s: soon\n", "field reply_patience_s:"),
        ("steps:\n  - say: hi\n    dtmf: '1'\n", "field steps.0:"),
        ("steps:\n  - sya: hi\n", "field steps.0.sya:"),
        ("steps:\n  - dtmf: '12x'\n", "field steps.0.dtmf:"),
        ("steps:\n  - dtmf: '1'\n    reply: hi\n", "'reply', 'tool' and 'seconds' belong"),
        ("steps:\n  - say: hi\n    tool: {arguments: {}}\n", "field steps.0.tool.name:"),
        ("name: Bad Name\n", "field name:"),
    ],
)
def test_bad_yaml_scenario_names_file_and_field(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ScenarioError) as refused:
        load_scenarios([tmp_path])
    assert str(path) in str(refused.value)
    assert expected in str(refused.value)


def test_duplicate_names_and_missing_folders_are_refused(tmp_path: Path) -> None:
    for stem in ("a", "b"):
        (tmp_path / f"{stem}.yaml").write_text("name: same\n", encoding="utf-8")
    with pytest.raises(ScenarioError, match="'same' is also defined in"):
        load_scenarios([tmp_path])
    with pytest.raises(ScenarioError, match="does not exist"):
        load_scenarios([tmp_path / "nowhere"])


def test_builtins_cover_the_documented_callers(emulator: EmulatorHandle) -> None:
    assert set(BUILTINS) >= {
        "order-status",
        "transfer-to-human",
        "quick-question",
        "silent-caller",
        "dtmf-zero",
        "long-call",
        "hang-up-early",
    }
    for name in BUILTINS:  # the app loads them all: placing a call with each works
        assert emulator.place_call(scenario=name).startswith("rtc_")
    early = builtin_scenarios()["hang-up-early"].ring_patience_s
    assert early is not None
    assert early < 5
    long_call = builtin_scenarios()["long-call"]
    assert len(long_call.steps) >= 20
