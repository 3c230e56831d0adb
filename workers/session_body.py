"""The accept request body: a profile rendered into a GA Realtime session object.

Pure: the profile, the policy (for tool definitions and transfer targets) and the
call's facts go in, a JSON-ready dict comes out. Rules from the remote API:

- ``type: "realtime"`` is required; beta fields (``temperature``, ``voice`` at the top,
  ``input_audio_format``...) do not exist in GA and are never produced;
- ``audio.input.format`` and ``audio.output.format`` are never set: on SIP the carrier
  negotiates G.711 and an override garbles the call's audio;
- fields the profile leaves unset are left out, so the server's defaults apply;
- ``idle.timeout_s`` becomes ``turn_detection.idle_timeout_ms`` (``server_vad`` only, which
  the profile guarantees): without it the server never reports a silent caller.

The built-in tools ``transfer_call(target)`` and ``end_call(reason)`` are declared
here; session runners carry them out when the model calls them.
"""

from __future__ import annotations

from typing import Any

from shared.policy import Policy
from shared.profile import Profile
from shared.templates import render_template
from workers.policy import CallFacts


def transfer_call_tool(targets: list[str]) -> dict[str, Any]:
    """The ``transfer_call`` function tool, offering the given named targets."""
    return {
        "type": "function",
        "name": "transfer_call",
        "description": (
            "Transfer the caller to a person or department. Say that you are transferring "
            "them before you call this."
        ),
        "parameters": {
            "type": "object",
            "properties": {
                "target": {
                    "type": "string",
                    "enum": targets,
                    "description": "Who to transfer the caller to.",
                }
            },
            "required": ["target"],
            "additionalProperties": False,
        },
    }


def end_call_tool() -> dict[str, Any]:
    """The ``end_call`` function tool: hang up after saying goodbye."""
    return {
        "type": "function",
        "name": "end_call",
        "description": "Hang up the call. Say goodbye before you call this.",
        "parameters": {
            "type": "object",
            "properties": {
                "reason": {
                    "type": "string",
                    "description": "Why the call ends, in a few words.",
                }
            },
            "required": ["reason"],
            "additionalProperties": False,
        },
    }


def template_values(call: CallFacts, profile_name: str) -> tuple[dict[str, str], dict[str, str]]:
    """The plain variables and the SIP headers (first value each) templates may use."""
    variables = {
        "caller": call.caller,
        "called": call.called,
        "call_id": call.call_id,
        "profile": profile_name,
    }
    headers = {name: values[0] for name, values in call.sip_headers.items() if values}
    return variables, headers


def render_for_call(template: str, call: CallFacts, profile_name: str) -> str:
    """``template`` (instructions or greeting) filled in for this call."""
    variables, headers = template_values(call, profile_name)
    return render_template(template, variables, headers)


def _tools(profile: Profile, policy: Policy) -> list[dict[str, Any]]:
    tools: list[dict[str, Any]] = []
    for name in profile.tools:
        if name == "transfer_call":
            tools.append(transfer_call_tool(sorted(policy.targets_for(profile))))
        elif name == "end_call":
            tools.append(end_call_tool())
        else:
            definition = policy.tools[name]
            tools.append(
                {
                    "type": "function",
                    "name": name,
                    "description": definition.description,
                    "parameters": definition.parameters,
                }
            )
    return tools


def _audio(profile: Profile) -> dict[str, Any]:
    audio_in: dict[str, Any] = {}
    if profile.transcription is not None:
        audio_in["transcription"] = profile.transcription.model_dump(exclude_none=True)
    if profile.turn_detection is not None:
        detection = profile.turn_detection.model_dump(exclude_none=True)
        if profile.idle is not None:
            # The server's silence timer is what emits ``timeout_triggered``.
            detection["idle_timeout_ms"] = round(profile.idle.timeout_s * 1000)
        audio_in["turn_detection"] = detection
    if profile.noise_reduction is not None:
        audio_in["noise_reduction"] = {"type": profile.noise_reduction}
    voice: str | dict[str, str] = profile.voice
    if profile.voice.startswith("voice_"):
        voice = {"id": profile.voice}
    audio_out: dict[str, Any] = {"voice": voice}
    if profile.speed is not None:
        audio_out["speed"] = profile.speed
    audio: dict[str, Any] = {"output": audio_out}
    if audio_in:
        audio["input"] = audio_in
    return audio


def session_body(
    profile_name: str, profile: Profile, policy: Policy, call: CallFacts
) -> dict[str, Any]:
    """The JSON body of ``POST /realtime/calls/{id}/accept`` for ``call``."""
    body: dict[str, Any] = {
        "type": "realtime",
        "model": profile.model,
        "instructions": render_for_call(profile.instructions, call, profile_name),
        "audio": _audio(profile),
    }
    tools = _tools(profile, policy)
    if tools:
        body["tools"] = tools
        body["tool_choice"] = profile.tool_choice
    if profile.max_output_tokens is not None:
        body["max_output_tokens"] = profile.max_output_tokens
    return body
