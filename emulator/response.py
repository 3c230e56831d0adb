"""One response of the scripted model, and the helpers that build GA server events.

``ScriptedResponse`` emits a response's events in the order the real API sends them:
``response.created``; the output item and, for speech, its content part and
``output_audio_buffer.started``; transcript (or text, or function-argument) deltas; the
closing ``.done`` events and ``response.done`` with its usage; and, once the audio has
played, ``output_audio_buffer.stopped``. A response cancelled before any output ends
with an empty ``response.done`` billed for reading its input.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any, Literal

from emulator.scenarios import Step
from emulator.state import new_event_id
from emulator.usage import ContextEntry, ResponseUsage, model_audio_tokens, speech_s, text_tokens

if TYPE_CHECKING:
    from emulator.model import ScriptedModel

WORDS_PER_DELTA = 4
CALL_ID_PLACEHOLDER = "{call_id}"
"""In a scenario's tool arguments, stands for the ``call_id`` of the function call made."""


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"


def event(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "event_id": new_event_id(), **fields}


def error_event(
    code: str, message: str, param: str | None = None, client_event_id: str | None = None
) -> dict[str, Any]:
    """An ``error`` event; the session stays open after it."""
    error = {"type": "invalid_request_error", "code": code, "message": message, "param": param}
    return event("error", error={**error, "event_id": client_event_id})


class ScriptedResponse:
    """One response of the scripted model, from ``response.created`` to ``response.done``."""

    def __init__(
        self,
        model: ScriptedModel,
        request: dict[str, Any],
        context: list[ContextEntry],
        text: str,
        tool: tuple[str, str, Step] | None,
    ) -> None:
        self.model = model
        self.id = new_id("resp")
        self.item_id = new_id("item")
        self.context = context
        if tool is not None:
            name, arguments, step = tool
            tool = (name, arguments.replace(CALL_ID_PLACEHOLDER, self.call_id), step)
        self.tool = tool
        self.text = tool[1] if tool else text
        session = model.session
        modalities = request.get("output_modalities") or session["output_modalities"]
        self.audio = "audio" in modalities and tool is None
        self.in_conversation = request.get("conversation", "auto") != "none"
        words = self.text.split()
        per_delta = WORDS_PER_DELTA if tool is None else max(1, len(words))
        self.deltas = [
            (" " if start else "") + " ".join(words[start : start + per_delta])
            for start in range(0, len(words), per_delta)
        ] or [self.text]
        self.sent_deltas = 0
        self.previous: str | None = None
        self.opened = False
        self.playback_s = speech_s(self.text) if self.audio else 0.0
        self._shape: dict[str, Any] = {
            "id": self.id,
            "object": "realtime.response",
            "conversation_id": model.conversation_id if self.in_conversation else None,
            "output_modalities": ["audio"] if "audio" in modalities else ["text"],
            "max_output_tokens": request.get("max_output_tokens", session["max_output_tokens"]),
            "audio": {"output": {k: session["audio"]["output"][k] for k in ("format", "voice")}},
            "metadata": request.get("metadata"),
        }

    @property
    def kind(self) -> Literal["message", "function_call"]:
        return "function_call" if self.tool else "message"

    def response(self, status: str, output: list[Any], usage: Any = None) -> dict[str, Any]:
        details = None
        if status == "cancelled":
            details = {"type": "cancelled", "reason": "client_cancelled"}
        body = {**self._shape, "status": status, "status_details": details, "output": output}
        return {**body, "usage": usage}

    def created(self) -> dict[str, Any]:
        return event("response.created", response=self.response("in_progress", []))

    def item(self, status: str) -> dict[str, Any]:
        base = {"id": self.item_id, "object": "realtime.item", "status": status}
        if self.tool:
            arguments = self.tool[1] if status != "in_progress" else ""
            call = {"type": "function_call", "call_id": self.call_id, "name": self.tool[0]}
            return {**base, **call, "arguments": arguments}
        if status == "in_progress":
            return {**base, "type": "message", "role": "assistant", "content": []}
        return {**base, "type": "message", "role": "assistant", "content": [self.content()]}

    @property
    def call_id(self) -> str:
        return "call_" + self.item_id.removeprefix("item_")

    def spoken(self) -> str:
        return "".join(self.deltas[: self.sent_deltas])

    def content(self) -> dict[str, Any]:
        if self.audio:
            return {"type": "output_audio", "transcript": self.spoken()}
        return {"type": "output_text", "text": self.spoken()}

    def part(self) -> dict[str, Any]:
        if self.audio:
            return {"type": "audio", "transcript": self.spoken()}
        return {"type": "text", "text": self.spoken()}

    def _where(self) -> dict[str, Any]:
        return {"response_id": self.id, "item_id": self.item_id, "output_index": 0}

    def opening(self) -> list[dict[str, Any]]:
        """Events from the output item's creation to the start of its content."""
        self.opened = True
        events = [event("response.output_item.added", response_id=self.id, output_index=0)]
        events[0]["item"] = self.item("in_progress")
        if self.tool:
            self.model.tool_calls[self.call_id] = (self.tool[0], self.tool[2])
        if self.in_conversation:
            item = self.item("in_progress")
            self.previous = self.model.add_item(dict(item), ContextEntry(self.item_id))
            added = event("conversation.item.added", previous_item_id=self.previous, item=item)
            events.append(added)
        if self.tool is None:
            events.append(
                event("response.content_part.added", **self._where(), content_index=0)
                | {"part": self.part()}
            )
        if self.audio:
            events.append(event("output_audio_buffer.started", response_id=self.id))
        return events

    def next_delta(self) -> dict[str, Any]:
        delta = self.deltas[self.sent_deltas]
        self.sent_deltas += 1
        if self.tool:
            kind = "response.function_call_arguments.delta"
            return event(kind, **self._where(), call_id=self.call_id, delta=delta)
        kind = (
            "response.output_audio_transcript.delta" if self.audio else "response.output_text.delta"
        )
        return event(kind, **self._where(), content_index=0, delta=delta)

    def closing(self, status: str) -> tuple[list[dict[str, Any]], ResponseUsage]:
        """Events from the end of the content to ``response.done``, and the usage billed."""
        if not self.opened:  # cancelled before any output: billed for reading the input
            usage = self.model.meter.bill(self.context, 0, 0)
            return [
                event("response.done", response=self.response(status, [], usage.as_event()))
            ], usage
        where, item_status = self._where(), "completed" if status == "completed" else "incomplete"
        events: list[dict[str, Any]] = []
        if self.tool:
            name, arguments, _ = self.tool
            events.append(
                event("response.function_call_arguments.done", **where, call_id=self.call_id)
                | {"name": name, "arguments": arguments}
            )
        else:
            if self.audio:
                done = event("response.output_audio_transcript.done", **where, content_index=0)
                events.append(done | {"transcript": self.spoken()})
            else:
                done = event("response.output_text.done", **where, content_index=0)
                events.append(done | {"text": self.spoken()})
            events.append(
                event("response.content_part.done", **where, content_index=0)
                | {"part": self.part()}
            )
        item = self.item(item_status)
        events.append(event("response.output_item.done", response_id=self.id, output_index=0))
        events[-1]["item"] = item
        spoken = self.text if self.tool else self.spoken()
        audio_s = speech_s(spoken) if self.audio and self.sent_deltas else 0.0
        out_text = text_tokens(f"{self.tool[0]} {spoken}" if self.tool else spoken)
        usage = self.model.meter.bill(self.context, out_text, model_audio_tokens(audio_s))
        if self.in_conversation:
            self.model.items[self.item_id] = dict(item)
            self.model.context[self.item_id] = (
                ContextEntry(self.item_id, 0, model_audio_tokens(audio_s))
                if self.audio
                else ContextEntry(self.item_id, out_text, 0)
            )
            done_item = event("conversation.item.done", previous_item_id=self.previous, item=item)
            events.append(done_item)
        done = self.response(status, [item], usage.as_event())
        events.append(event("response.done", response=done))
        return events, usage

    def stopped(self) -> dict[str, Any]:
        return event("output_audio_buffer.stopped", response_id=self.id)
