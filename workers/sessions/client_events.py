"""The GA client events the session core sends, built in one place.

Only GA shapes: ``response.create`` with ``response.instructions``/``metadata``,
``conversation.item.create`` with a ``function_call_output`` item (its id derived from
the tool-call id, ``output_item_id``), and ``session.update``
with ``session.type: "realtime"`` always set. Nothing here ever carries an
``audio.*.format`` (on a SIP call the carrier's codec must not be overridden, so an
operator's update loses them silently), and beta field names are refused with the GA
name to use instead.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

BETA_FIELDS: Mapping[str, str] = {
    "modalities": "output_modalities",
    "voice": "audio.output.voice",
    "speed": "audio.output.speed",
    "input_audio_format": "nothing (no audio format on SIP)",
    "output_audio_format": "nothing (no audio format on SIP)",
    "input_audio_transcription": "audio.input.transcription",
    "turn_detection": "audio.input.turn_detection",
    "input_audio_noise_reduction": "audio.input.noise_reduction",
    "max_response_output_tokens": "max_output_tokens",
    "temperature": "nothing (not in the GA API)",
}

TAG_KEY = "switchboard_tag"
"""``response.metadata`` key marking a response the core asked for, to recognise it."""


def response_tag(metadata: object) -> str | None:
    """The tag in a server response's ``metadata``: the event id of our ``response.create``."""
    tag = metadata.get(TAG_KEY) if isinstance(metadata, Mapping) else None
    return tag if isinstance(tag, str) else None


SAY_TEMPLATE = "Say the following to the caller, word for word, and nothing else: {text}"


def response_create(
    event_id: str, instructions: str | None = None, tag: str | None = None
) -> dict[str, Any]:
    """A ``response.create``; ``tag`` comes back in the response's ``metadata``."""
    response: dict[str, Any] = {}
    if instructions is not None:
        response["instructions"] = instructions
    if tag is not None:
        response["metadata"] = {TAG_KEY: tag}
    event: dict[str, Any] = {"type": "response.create", "event_id": event_id}
    if response:
        event["response"] = response
    return event


def say_instructions(text: str) -> str:
    """Instructions for a response that speaks ``text`` verbatim."""
    return SAY_TEMPLATE.format(text=text)


def output_item_id(call_id: str) -> str:
    """The item id of the output for ``call_id``: the same on every runner, so the API,
    which refuses an item id it already has, keeps one output per call even if one is
    sent again after a failover. Client item ids are 32 characters at most."""
    return "sbo_" + hashlib.sha256(call_id.encode()).hexdigest()[:28]


def function_call_output(call_id: str, output: str) -> dict[str, Any]:
    """The tool's answer to the model for one ``call_id``."""
    return {
        "type": "conversation.item.create",
        "item": {
            "id": output_item_id(call_id),
            "type": "function_call_output",
            "call_id": call_id,
            "output": output,
        },
    }


def tool_output_id(event: Mapping[str, Any]) -> str | None:
    """The ``call_id`` a ``function_call_output`` event answers; ``None`` for any other."""
    item = event.get("item") if event.get("type") == "conversation.item.create" else None
    if isinstance(item, Mapping) and item.get("type") == "function_call_output":
        call_id = item.get("call_id")
        return call_id if isinstance(call_id, str) else None
    return None


def error_output(message: str) -> str:
    """A tool output that tells the model the call failed, instead of leaving it silent."""
    return json.dumps({"error": message})


def session_update(session: object) -> dict[str, Any] | str:
    """A GA ``session.update`` for a SIP call, or why ``session`` cannot be sent."""
    if not isinstance(session, Mapping) or not session:
        return "update needs a non-empty session object"
    beta = sorted(key for key in session if key in BETA_FIELDS)
    if beta:
        hints = ", ".join(f"{key} -> {BETA_FIELDS[key]}" for key in beta)
        return f"beta session fields are not accepted: {hints}"
    if session.get("type", "realtime") != "realtime":
        return f"session.type must be 'realtime', got {session.get('type')!r}"
    clean = {key: value for key, value in session.items() if key != "audio"}
    clean["type"] = "realtime"
    if "audio" in session:
        audio = session["audio"]
        if not isinstance(audio, Mapping):
            return "session.audio must be an object"
        kept: dict[str, Any] = {}
        for direction, settings in audio.items():
            if isinstance(settings, Mapping):
                settings = {k: v for k, v in settings.items() if k != "format"}
                if not settings:
                    continue
            kept[direction] = settings
        if kept:
            clean["audio"] = kept
    if len(clean) == 1:
        return "nothing to update once audio formats are removed (never set on SIP)"
    return {"type": "session.update", "session": clean}
