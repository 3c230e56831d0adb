"""The accept body and ``session.update`` are checked as a GA session: the error names the
field, and nothing changes."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import orjson
import pytest
from websockets.asyncio.client import connect

from emulator.session_schema import RealtimeSession
from emulator.validation import param_path
from tests.emulator.conftest import SdkFactory
from tests.emulator.sideband_agent import validate
from tests.support.emulator import EmulatorHandle

BAD_SESSIONS: list[tuple[dict[str, Any], str, str]] = [
    ({"type": "realtime", "temperature": 0.8}, "temperature", "unknown_parameter"),
    ({"type": "realtime", "modalities": ["audio"]}, "modalities", "unknown_parameter"),
    ({"type": "realtime", "voice": "alloy"}, "voice", "unknown_parameter"),
    ({"type": "realtime", "colour": "blue"}, "colour", "unknown_parameter"),
    ({"model": "gpt-realtime"}, "type", "missing_required_parameter"),
    ({"type": "transcription"}, "type", "invalid_value"),
    ({"type": "realtime", "model": "gpt-4o"}, "model", "invalid_value"),
    ({"type": "realtime", "audio": {"output": {"speed": 1.6}}}, "audio.output.speed", ""),
    ({"type": "realtime", "audio": {"output": {"speed": 0.2}}}, "audio.output.speed", ""),
    ({"type": "realtime", "audio": {"output": {"voice": "bob"}}}, "audio.output.voice", ""),
    ({"type": "realtime", "max_output_tokens": 0}, "max_output_tokens", ""),
    ({"type": "realtime", "max_output_tokens": 4097}, "max_output_tokens", ""),
    ({"type": "realtime", "max_output_tokens": "lots"}, "max_output_tokens", ""),
    ({"type": "realtime", "output_modalities": ["audio", "text"]}, "output_modalities", ""),
    (
        {"type": "realtime", "audio": {"input": {"turn_detection": {"type": "loud"}}}},
        "audio.input.turn_detection.type",
        "invalid_value",
    ),
    (
        {"type": "realtime", "audio": {"input": {"turn_detection": {"threshold": 0.5}}}},
        "audio.input.turn_detection.type",
        "missing_required_parameter",
    ),
    (
        {
            "type": "realtime",
            "audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": 1.5}}},
        },
        "audio.input.turn_detection.threshold",
        "decimal_above_max_value",
    ),
    (
        {
            "type": "realtime",
            "audio": {"input": {"turn_detection": {"type": "server_vad", "idle_timeout_ms": 10}}},
        },
        "audio.input.turn_detection.idle_timeout_ms",
        "integer_below_min_value",
    ),
    (
        {
            "type": "realtime",
            "audio": {"input": {"turn_detection": {"type": "semantic_vad", "eagerness": "max"}}},
        },
        "audio.input.turn_detection.eagerness",
        "invalid_value",
    ),
    ({"type": "realtime", "tools": [{"type": "function"}]}, "tools[0].name", ""),
    ({"type": "realtime", "tool_choice": "sometimes"}, "tool_choice", ""),
    ({"type": "realtime", "truncation": {"type": "retention_ratio"}}, "truncation", ""),
    ({"type": "realtime", "audio": {"input": {"format": {"type": "g711"}}}}, "", ""),
]


@pytest.mark.parametrize(("session", "param", "code"), BAD_SESSIONS)
def test_bad_accept_body_is_400_naming_the_field(
    emulator: EmulatorHandle, session: dict[str, Any], param: str, code: str
) -> None:
    call_id = emulator.place_call()
    response = httpx.post(
        f"{emulator.api_url}/realtime/calls/{call_id}/accept",
        json=session,
        headers={"Authorization": f"Bearer {emulator.api_key}"},
    )

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    if param:
        assert error["param"] == param
    else:
        assert error["param"]
    if code:
        assert error["code"] == code
    truth = emulator.call(call_id)
    assert (truth["state"], truth["accept"]) == ("ringing", None)


BAD_UPDATES = [
    *BAD_SESSIONS,
    ({"type": "realtime", "audio": {"output": {"speed": 9}}}, "audio.output.speed", ""),
    (
        {"type": "realtime", "audio": {"input": {"transcription": {"model": "x", "mood": 1}}}},
        "audio.input.transcription.model",
        "invalid_value",
    ),
    (
        {"type": "realtime", "audio": {"input": {"noise_reduction": {"strength": 1, "x": 1}}}},
        "audio.input.noise_reduction.x",
        "unknown_parameter",
    ),
    ({"type": "realtime", "tools": [{"type": "function", "name": "f", "strict": True}]}, "", ""),
    ({"type": "realtime", "instructions": 7}, "instructions", "invalid_type"),
]


async def test_bad_session_update_is_an_error_naming_the_field(
    emulator: EmulatorHandle, sdk: SdkFactory
) -> None:
    call_id = emulator.place_call()
    sdk(emulator).realtime.calls.accept(call_id, type="realtime", instructions="Be brief.")
    headers = {"Authorization": f"Bearer {emulator.api_key}"}
    url = f"{emulator.ws_url}/realtime?call_id={call_id}"
    async with connect(url, additional_headers=headers) as ws:
        created = orjson.loads(await ws.recv())
        for index, (session, _, _) in enumerate(BAD_UPDATES):
            update = {"type": "session.update", "event_id": f"u{index}", "session": session}
            await ws.send(orjson.dumps(update).decode())
        await ws.send(orjson.dumps({"type": "session.update", "session": {"type": "realtime"}}))
        replies = [orjson.loads(await ws.recv())]
        while replies[-1]["type"] != "session.updated":
            replies.append(orjson.loads(await ws.recv()))
    for reply in replies:
        validate(reply)
    errors = {e["error"]["event_id"]: e["error"] for e in replies if e["type"] == "error"}
    assert len(errors) == len(BAD_UPDATES)
    for index, (_, param, code) in enumerate(BAD_UPDATES):
        error = errors[f"u{index}"]
        assert error["type"] == "invalid_request_error"
        if param:
            assert error["param"] == f"session.{param}", error
            assert f"'session.{param}'" in error["message"]
        else:
            assert error["param"].startswith("session."), error
        if code:
            assert error["code"] == code, error
    assert replies[-1]["session"] == created["session"]  # none of them changed anything
    assert emulator.call(call_id)["defects"] == []


def test_sdk_sees_the_param_of_a_beta_field(emulator: EmulatorHandle, sdk: SdkFactory) -> None:
    client = sdk(emulator)
    call_id = emulator.place_call()
    with pytest.raises(openai.BadRequestError) as raised:
        client.realtime.calls.accept(call_id, type="realtime", extra_body={"temperature": 0.7})
    assert raised.value.param == "temperature"
    assert "beta" in raised.value.message


@pytest.mark.parametrize("body", [b"", b"{not json", b"[1, 2]"])
def test_accept_without_a_json_object_is_400(emulator: EmulatorHandle, body: bytes) -> None:
    call_id = emulator.place_call()
    response = httpx.post(
        f"{emulator.api_url}/realtime/calls/{call_id}/accept",
        content=body,
        headers={"Authorization": "Bearer k", "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert emulator.call(call_id)["state"] == "ringing"


def test_audio_format_override_is_accepted_but_recorded_as_a_defect(
    emulator: EmulatorHandle, sdk: SdkFactory
) -> None:
    client = sdk(emulator)
    clean, overridden = emulator.place_call(), emulator.place_call()
    client.realtime.calls.accept(clean, type="realtime", audio={"output": {"voice": "cedar"}})
    client.realtime.calls.accept(
        overridden,
        type="realtime",
        audio={"input": {"format": {"type": "audio/pcmu"}}, "output": {"voice": "cedar"}},
    )

    assert emulator.call(clean)["defects"] == []
    truth = emulator.call(overridden)
    assert truth["state"] == "active"
    assert len(truth["defects"]) == 1
    assert "audio.input.format" in truth["defects"][0]


def test_full_ga_session_validates() -> None:
    session = {
        "type": "realtime",
        "model": "gpt-realtime-2",
        "instructions": "x",
        "output_modalities": ["text"],
        "audio": {
            "input": {
                "transcription": {"model": "gpt-4o-transcribe", "language": "en"},
                "noise_reduction": {"type": "near_field"},
                "turn_detection": {"type": "server_vad", "idle_timeout_ms": 6000},
            },
            "output": {"voice": {"id": "voice_123"}, "speed": 0.25},
        },
        "include": ["item.input_audio_transcription.logprobs"],
        "tools": [{"type": "mcp", "server_label": "crm", "server_url": "https://crm.example"}],
        "tool_choice": {"type": "function", "name": "lookup"},
        "parallel_tool_calls": True,
        "reasoning": {"effort": "low"},
        "max_output_tokens": 4096,
        "truncation": {"type": "retention_ratio", "retention_ratio": 0.8},
        "tracing": "auto",
        "prompt": {"id": "pmpt_1", "variables": {"name": "Ann"}},
    }
    assert RealtimeSession.model_validate(session).model == "gpt-realtime-2"


@pytest.mark.parametrize(
    ("loc", "data", "missing", "expected"),
    [
        (
            ("tools", 0, "function", "name"),
            {"tools": [{"type": "function"}]},
            True,
            "tools[0].name",
        ),
        (
            ("audio", "output", "voice", "literal['a']"),
            {"audio": {"output": {"voice": 1}}},
            False,
            "audio.output.voice",
        ),
        (("truncation", "literal['auto']"), {"truncation": {}}, False, "truncation"),
        (("type",), {}, True, "type"),
    ],
)
def test_param_path_skips_union_tags(
    loc: tuple[int | str, ...], data: dict[str, Any], missing: bool, expected: str
) -> None:
    assert param_path(loc, data, missing=missing) == expected
