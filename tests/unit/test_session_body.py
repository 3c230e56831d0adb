"""The accept body: GA session shape checked against the official SDK's own types."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.realtime import RealtimeSessionCreateRequest

from shared.policy import Policy
from shared.policy_file import demo_policy, parse_policy
from shared.profile import VOICES, Profile
from tests.support.session_check import check_against_sdk, unknown_fields
from workers.policy import CallFacts
from workers.session_body import session_body

CALL = CallFacts(
    call_id="rtc_abc",
    caller="+14155550100",
    called="+18005550100",
    received_at=0.0,
    sip_headers={"x-account": ("A-42",)},
)


def test_the_demo_support_body_is_a_valid_ga_session() -> None:
    policy = demo_policy()
    body = session_body("support", policy.profiles["support"], policy, CALL)
    model = check_against_sdk(body)

    assert body["type"] == "realtime"
    assert body["model"] == "gpt-realtime"
    assert "+14155550100" in body["instructions"]
    assert "{caller}" not in body["instructions"]
    assert body["audio"]["input"]["transcription"] == {
        "model": "gpt-4o-mini-transcribe",
        "language": "en",
    }
    assert body["audio"]["input"]["turn_detection"] == {
        "type": "server_vad",
        "silence_duration_ms": 500,
        "idle_timeout_ms": 8000,  # from idle.timeout_s
    }
    assert body["audio"]["input"]["noise_reduction"] == {"type": "near_field"}
    assert body["audio"]["output"] == {"voice": "marin"}
    assert body["max_output_tokens"] == 1024
    assert body["tool_choice"] == "auto"
    assert model.tools is not None
    tools = {tool["name"]: tool for tool in body["tools"]}
    assert list(tools) == ["lookup_order", "transfer_call", "end_call"]
    assert tools["transfer_call"]["parameters"]["properties"]["target"]["enum"] == ["human"]
    assert tools["transfer_call"]["parameters"]["required"] == ["target"]
    assert tools["end_call"]["parameters"]["required"] == ["reason"]
    assert tools["lookup_order"]["parameters"]["required"] == ["order_id"]
    assert all(tool["type"] == "function" for tool in body["tools"])


def test_no_audio_format_and_no_beta_fields_ever() -> None:
    policy = demo_policy()
    for name, profile in policy.profiles.items():
        body = session_body(name, profile, policy, CALL)
        check_against_sdk(body)
        for direction in body["audio"].values():
            assert "format" not in direction
        for beta in ("temperature", "voice", "modalities", "input_audio_format", "turn_detection"):
            assert beta not in body


def test_unset_options_are_left_to_the_server() -> None:
    policy = parse_policy("profiles: {p: {instructions: 'Hi {sip.X-Account}'}}\n", "p.yaml")
    body = session_body("p", policy.profiles["p"], policy, CALL)
    check_against_sdk(body)
    assert body == {
        "type": "realtime",
        "model": "gpt-realtime",
        "instructions": "Hi A-42",
        "audio": {"output": {"voice": "marin"}},
    }


def test_a_custom_voice_and_semantic_vad() -> None:
    policy = parse_policy(
        textwrap.dedent(
            """\
            profiles:
              p:
                instructions: Hi
                voice: voice_1234
                speed: 1.2
                turn_detection: {type: semantic_vad, eagerness: low}
                max_output_tokens: inf
                tool_choice: required
                tools: [end_call]
            """
        ),
        "p.yaml",
    )
    body = session_body("p", policy.profiles["p"], policy, CALL)
    check_against_sdk(body)
    assert body["audio"]["output"] == {"voice": {"id": "voice_1234"}, "speed": 1.2}
    assert body["audio"]["input"]["turn_detection"] == {"type": "semantic_vad", "eagerness": "low"}
    assert body["max_output_tokens"] == "inf"
    assert body["tool_choice"] == "required"


def test_the_idle_timeout_is_the_servers_silence_timer() -> None:
    policy = parse_policy(
        textwrap.dedent(
            """\
            profiles:
              quiet:
                instructions: Hi
                turn_detection: {type: server_vad, create_response: false}
                idle: {timeout_s: 6.5, max_prompts: 1}
              chatty:
                instructions: Hi
                turn_detection: {type: server_vad}
            """
        ),
        "p.yaml",
    )
    quiet = session_body("quiet", policy.profiles["quiet"], policy, CALL)
    check_against_sdk(quiet)
    assert quiet["audio"]["input"]["turn_detection"] == {
        "type": "server_vad",
        "create_response": False,
        "idle_timeout_ms": 6500,
    }
    chatty = session_body("chatty", policy.profiles["chatty"], policy, CALL)
    assert chatty["audio"]["input"]["turn_detection"] == {"type": "server_vad"}


def test_a_stray_field_would_be_caught() -> None:
    # The check above must be able to fail: a beta field is reported, not silently kept.
    model = RealtimeSessionCreateRequest.model_validate(
        {"type": "realtime", "temperature": 0.8, "audio": {"output": {"voice": "marin", "x": 1}}}
    )
    assert sorted(unknown_fields(model)) == ["audio.output.x", "temperature"]


PRICED_MODELS = ["gpt-realtime", "gpt-realtime-mini", "gpt-realtime-2", "gpt-4o-realtime-preview"]


@settings(max_examples=60, deadline=None)
@given(
    model=st.sampled_from(PRICED_MODELS),
    voice=st.sampled_from(VOICES),
    speed=st.none() | st.floats(min_value=0.25, max_value=1.5),
    transcription=st.none() | st.sampled_from(["whisper-1", "gpt-4o-transcribe"]),
    vad=st.none()
    | st.fixed_dictionaries({"type": st.just("server_vad"), "threshold": st.floats(0, 1)})
    | st.fixed_dictionaries(
        {"type": st.just("semantic_vad"), "eagerness": st.sampled_from(["low", "high", "auto"])}
    ),
    noise=st.none() | st.sampled_from(["near_field", "far_field"]),
    tools=st.lists(st.sampled_from(["transfer_call", "end_call"]), unique=True),
    max_tokens=st.none() | st.integers(1, 4096) | st.just("inf"),
)
def test_any_profile_renders_to_a_valid_session(
    model: str,
    voice: str,
    speed: float | None,
    transcription: str | None,
    vad: dict[str, Any] | None,
    noise: str | None,
    tools: list[str],
    max_tokens: int | str | None,
) -> None:
    profile = Profile.model_validate(
        {
            "model": model,
            "instructions": "Caller {caller} on {called}, account {sip.X-Account}",
            "voice": voice,
            "speed": speed,
            "transcription": {"model": transcription} if transcription else None,
            "turn_detection": vad,
            "noise_reduction": noise,
            "tools": tools,
            "max_output_tokens": max_tokens,
        }
    )
    policy = Policy.model_validate(
        {"profiles": {"p": profile}, "transfer_targets": {"desk": "tel:+14155550123"}}
    )
    body = session_body("p", profile, policy, CALL)
    check_against_sdk(body)
    assert body["instructions"] == "Caller +14155550100 on +18005550100, account A-42"
    assert "format" not in body["audio"].get("input", {})
    assert "format" not in body["audio"]["output"]


@pytest.mark.parametrize("field", ["temperature", "input_audio_format", "modalities"])
def test_profiles_cannot_carry_beta_fields(field: str) -> None:
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        Profile.model_validate({"instructions": "Hi", field: "x"})
