"""The scripted model: one session's configuration and conversation, as GA server events.

``ScriptedModel`` knows no clock and no socket: it turns what happens (a caller's turn is
committed, a client adds an item, a response is asked for) into lists of event dicts in
the GA shapes of realtime-api.md section 3, and keeps the conversation that every
response bills as input (``emulator.usage``). ``plan`` returns the next
``ScriptedResponse``; the session runtime decides when each of its events is sent.

What the model says is scripted, never generated: an answer to a function call output
mentions that output; otherwise ``response.instructions`` (the text after the colon of
a "Say ...:" instruction, else the quoted part if any, else the text itself); otherwise
the scenario's reply to the caller's last turn, or a call to the scenario's tool when
the session declares it; otherwise a greeting or a stock line.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from emulator.response import WORDS_PER_DELTA, ScriptedResponse, event, new_id
from emulator.scenarios import Step
from emulator.session_config import SessionError, tool_names
from emulator.usage import (
    ContextEntry,
    UsageMeter,
    caller_audio_tokens,
    text_tokens,
)

GREETING = "Hello, thanks for calling. How can I help you today?"
IDLE_PROMPT = "Are you still there? I'm happy to help whenever you're ready."
DEFAULT_REPLY = "I see. Is there anything else I can help you with?"
DEFAULT_AFTER_TOOL = "Thanks for waiting. Here is what I found: {output}"
_QUOTED = re.compile(r"\"([^\"]+)\"|“([^”]+)”")
_SAY_COLON = re.compile(r"\s*say\b[^:\"“]*:\s*(\S.*)", re.IGNORECASE | re.DOTALL)
"""``Say the following to the caller, word for word: Goodbye.`` -> ``Goodbye.``"""
_MAX_SPOKEN_WORDS = 60
_CONTENT_TYPES = {
    "user": ("input_text", "input_audio", "input_image"),
    "system": ("input_text",),
    "assistant": ("output_text", "output_audio"),
}


def _words(text: str, limit: int = _MAX_SPOKEN_WORDS) -> str:
    return " ".join(text.split()[:limit])


def speech_from_instructions(instructions: str) -> str:
    """What the model says when told to: what follows the colon of a "Say ...: text"
    instruction, else the quoted part, else the instructions themselves."""
    told = _SAY_COLON.match(instructions)
    quoted = _QUOTED.search(instructions)
    if told:
        spoken = told.group(1)
    elif quoted:
        spoken = next(group for group in quoted.groups() if group)
    else:
        spoken = instructions
    return _words(spoken) or GREETING


class ScriptedModel:
    """One realtime session: its configuration, conversation and usage meter."""

    def __init__(self, session: dict[str, Any]) -> None:
        self.session = session
        self.conversation_id = new_id("conv")
        self.meter = UsageMeter()
        self.items: dict[str, dict[str, Any]] = {}
        self.context: dict[str, ContextEntry] = {}
        self.steps: dict[str, Step] = {}
        self.tool_calls: dict[str, tuple[str, Step | None]] = {}
        self.heard_caller = False

    @property
    def last_item_id(self) -> str | None:
        return next(reversed(self.items), None)

    @property
    def transcription(self) -> bool:
        return bool(self.session["audio"]["input"].get("transcription"))

    @property
    def turn_detection(self) -> dict[str, Any] | None:
        detection: dict[str, Any] | None = self.session["audio"]["input"].get("turn_detection")
        return detection

    def add_item(self, item: dict[str, Any], entry: ContextEntry) -> str | None:
        previous = self.last_item_id
        self.items[item["id"]] = item
        self.context[item["id"]] = entry
        return previous

    def commit_caller_audio(
        self, item_id: str, transcript: str, seconds: float, step: Step | None
    ) -> list[dict[str, Any]]:
        """Events for a caller turn that has just been committed to the conversation."""
        item: dict[str, Any] = {"id": item_id, "object": "realtime.item", "type": "message"}
        item["status"] = "completed"
        item |= {"role": "user", "content": [{"type": "input_audio", "transcript": None}]}
        previous = self.add_item(item, ContextEntry(item_id, 0, caller_audio_tokens(seconds)))
        self.heard_caller = True
        if step is not None:
            self.steps[item_id] = step
        events = [
            event("input_audio_buffer.committed", item_id=item_id, previous_item_id=previous),
            event("conversation.item.added", previous_item_id=previous, item=dict(item)),
        ]
        if self.transcription:
            words = transcript.split()
            for start in range(0, len(words), WORDS_PER_DELTA):
                chunk = " ".join(words[start : start + WORDS_PER_DELTA])
                delta = chunk if start == 0 else " " + chunk
                events.append(
                    event(
                        "conversation.item.input_audio_transcription.delta",
                        item_id=item_id,
                        content_index=0,
                        delta=delta,
                    )
                )
            audio_in, text_out = caller_audio_tokens(seconds), text_tokens(transcript)
            usage: dict[str, Any] = {"type": "tokens", "input_tokens": audio_in}
            usage["output_tokens"] = text_out
            usage |= {"total_tokens": audio_in + text_out}
            usage["input_token_details"] = {"text_tokens": 0, "audio_tokens": audio_in}
            events.append(
                event(
                    "conversation.item.input_audio_transcription.completed",
                    item_id=item_id,
                    content_index=0,
                    transcript=transcript,
                    usage=usage,
                )
            )
            item = {**item, "content": [{"type": "input_audio", "transcript": transcript}]}
            self.items[item_id] = item
        events.append(event("conversation.item.done", previous_item_id=previous, item=item))
        return events

    def add_client_item(self, item: Any) -> list[dict[str, Any]]:
        """Events for ``conversation.item.create``; raises ``SessionError`` on a bad item."""
        if not isinstance(item, dict):
            raise SessionError("invalid_type", "Invalid type for 'item': expected an object.")
        kind = item.get("type")
        if item.get("id") in self.items:
            message = f"Item with id '{item['id']}' already exists."
            raise SessionError("invalid_value", message, "item.id")
        if kind == "message":
            content, allowed = item.get("content"), _CONTENT_TYPES.get(str(item.get("role")))
            if allowed is None or not isinstance(content, list):
                message = (
                    "A message item needs a role (user, system, assistant) and a content list."
                )
                raise SessionError("invalid_value", message, "item")
            for part in content:
                if not isinstance(part, dict) or part.get("type") not in allowed:
                    message = f"A {item['role']} message's content types are: {', '.join(allowed)}."
                    raise SessionError("invalid_value", message, "item.content")
            texts = [str(part.get("text") or "") for part in content]
            entry_tokens = text_tokens(" ".join(texts))
        elif kind == "function_call_output":
            call_id, output = item.get("call_id"), item.get("output")
            if not isinstance(call_id, str) or not isinstance(output, str):
                raise SessionError(
                    "missing_required_parameter",
                    "A function_call_output item needs 'call_id' and 'output' strings.",
                    "item.call_id",
                )
            if call_id not in self.tool_calls:
                raise SessionError(
                    "invalid_value", f"No function call with call_id '{call_id}'.", "item.call_id"
                )
            entry_tokens = text_tokens(output)
        elif kind == "function_call":
            arguments = str(item.get("arguments", ""))
            entry_tokens = text_tokens(f"{item.get('name', '')} {arguments}")
        else:
            raise SessionError("invalid_value", f"Invalid value: '{kind}'.", "item.type")
        item_id = item.get("id") or new_id("item")
        stored = {**item, "id": item_id, "object": "realtime.item", "status": "completed"}
        previous = self.add_item(stored, ContextEntry(item_id, entry_tokens, 0))
        return [
            event("conversation.item.added", previous_item_id=previous, item=dict(stored)),
            event("conversation.item.done", previous_item_id=previous, item=stored),
        ]

    def plan(self, request: dict[str, Any], idle: bool = False) -> ScriptedResponse:
        """Decide what the next response says or calls, for ``response.create`` or VAD."""
        tail = self.items[next(reversed(self.items))] if self.items else None
        tools = request.get("tools", self.session.get("tools") or [])
        choice = request.get("tool_choice", self.session.get("tool_choice", "auto"))
        instructions = request.get("instructions")
        tool: tuple[str, str, Step] | None = None
        if idle:
            text = IDLE_PROMPT
        elif tail is not None and tail["type"] == "function_call_output":
            step = self.tool_calls.get(tail["call_id"], ("", None))[1]
            template = step.tool.then_say if step and step.tool else DEFAULT_AFTER_TOOL
            text = template.replace("{output}", _words(tail["output"], 40))
        elif isinstance(instructions, str) and instructions.strip():
            text = speech_from_instructions(instructions)
        elif tail is not None and tail["type"] == "message" and tail["role"] == "user":
            step = self.steps.get(tail["id"])
            text = (step.reply if step else None) or DEFAULT_REPLY
            if step is None and tail["content"] and tail["content"][0].get("type") == "input_text":
                text = "Understood: " + _words(str(tail["content"][0].get("text", "")), 30)
            if step and step.tool and step.tool.name in tool_names(tools) and choice != "none":
                arguments = orjson.dumps(step.tool.arguments).decode()
                tool = (step.tool.name, arguments, step)
        else:
            text = DEFAULT_REPLY if self.heard_caller else GREETING
        header_text = str(instructions or self.session.get("instructions") or "")
        tools_text = orjson.dumps(tools).decode() if tools else ""
        header = ContextEntry(
            "hdr:" + str(hash((header_text, tools_text))),
            text_tokens(header_text) + text_tokens(tools_text),
        )
        return ScriptedResponse(self, request, [header, *self.context.values()], text, tool)
