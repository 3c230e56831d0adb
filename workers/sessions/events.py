"""The server events the session core reacts to, and how it reacts to each.

``ServerEvents.handle`` routes one decoded GA server event by its ``type``; unknown
types are ignored. Each handler reads only the fields it routes on, with type checks
(a field of the wrong type counts as absent), so malformed events never raise:

- ``response.created`` / ``response.done``: the response gate; ``done`` also prices
  ``usage`` once per response id, checks the budget and may release a finale;
- ``conversation.item.input_audio_transcription.completed``: a caller turn (and caller
  activity, which resets the idle count, as ``input_audio_buffer.speech_started`` does);
- ``response.output_audio_transcript.done`` and ``response.output_text.done``: agent turns;
- ``input_audio_buffer.speech_stopped`` until the first agent output
  (``response.output_audio_transcript.delta``, ``response.output_text.delta`` or
  ``output_audio_buffer.started``): turn latency;
- ``output_audio_buffer.started`` / ``.stopped`` / ``.cleared``: what is playing, for finales;
- ``input_audio_buffer.timeout_triggered``: an idle prompt, or the end after ``max_prompts``;
- ``input_audio_buffer.dtmf_event_received``: the plan's action for the key;
- ``response.function_call_arguments.done``: a tool call, at most once per ``call_id``;
- ``conversation.item.added``: the API has one of our tool outputs (``OutputDelivered``);
- ``error``: releases a refused ``response.create`` of ours (queued again if another
  response was active); counted.

After the call ended only the transcript and ``response.done`` (the bill) still count.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from shared.models import EndReason
from shared.pricing import cost_of
from workers.sessions.client_events import error_output, say_instructions
from workers.sessions.control import CallControl
from workers.sessions.effects import (
    AccrueUsage,
    AppendTranscript,
    OutputDelivered,
    Role,
    RunTool,
)
from workers.sessions.plan import HangUp, SessionPlan, TransferTo
from workers.sessions.state import SessionState
from workers.sessions.tools import Refuse, RunConfigured, TransferCall, decide


class ServerEvents:
    """Handlers of the server events of one call, over its state and call control."""

    def __init__(self, plan: SessionPlan, state: SessionState, control: CallControl) -> None:
        self._plan = plan
        self._s = state
        self._c = control

    def handle(self, event: Mapping[str, Any], now_s: float) -> bool:
        """React to ``event``; false when it was ignored (unknown, malformed, too late)."""
        kind = event.get("type") if isinstance(event, Mapping) else None
        handler = _HANDLERS.get(kind) if isinstance(kind, str) else None
        if handler is None or (self._s.ended and kind not in _AFTER_END):
            return False
        handler(self, event, now_s)
        return True

    def _on_response_created(self, event: Mapping[str, Any], now_s: float) -> None:
        response = _obj(event, "response")
        response_id = _str(response, "id")
        if response_id is not None:
            self._s.gate.created(response_id, now_s, response.get("metadata"))
            if self._s.finale is not None:
                self._s.finale.on_created(response_id, response.get("metadata"))

    def _on_response_done(self, event: Mapping[str, Any], now_s: float) -> None:
        s, response = self._s, _obj(event, "response")
        response_id = _str(response, "id")
        if response_id is not None and response_id not in s.priced:
            self._accrue(response_id, response.get("usage"))
        if s.ended:
            return
        s.gate.done(response_id, now_s)
        if response_id is not None and s.finale is not None and s.finale.on_done(response_id):
            self._c.fire(now_s)
        budget = self._plan.budget_usd
        if budget is not None and s.cost.total_usd >= budget:
            self._c.wrap_up("budget", EndReason.BUDGET, self._plan.budget_wrap_up, now_s)

    def _accrue(self, response_id: str, usage: object) -> None:
        if not isinstance(usage, Mapping):
            return
        self._s.remember_priced(response_id)
        self._c.dirty = True
        try:
            cost = cost_of(usage, self._plan.model, self._plan.price_table)
        except ValueError:
            self._c.observe("usage_rejected", 1.0)
            return
        self._s.cost += cost
        self._c.emit(AccrueUsage(response_id, self._plan.model, usage, cost))

    def _caller_active(self) -> None:
        if self._s.idle_prompts:
            self._s.idle_prompts = 0
            self._c.dirty = True

    def _on_caller_transcript(self, event: Mapping[str, Any], now_s: float) -> None:
        self._caller_active()
        self._transcript("caller", _str(event, "transcript"), now_s)

    def _on_agent_transcript(self, event: Mapping[str, Any], now_s: float) -> None:
        self._transcript("agent", _str(event, "transcript"), now_s)

    def _on_agent_text(self, event: Mapping[str, Any], now_s: float) -> None:
        self._transcript("agent", _str(event, "text"), now_s)

    def _transcript(self, role: Role, text: str | None, now_s: float) -> None:
        text = text.strip() if text is not None else ""
        if text:
            if role == "caller":
                self._s.caller_turns += 1
            else:
                self._s.agent_turns += 1
            self._c.emit(AppendTranscript(role, text, now_s))
            self._c.dirty = True

    def _on_speech_started(self, event: Mapping[str, Any], now_s: float) -> None:
        self._caller_active()

    def _on_speech_stopped(self, event: Mapping[str, Any], now_s: float) -> None:
        self._s.speech_stopped_at = now_s

    def _on_first_output(self, event: Mapping[str, Any], now_s: float) -> None:
        if self._s.speech_stopped_at is not None:
            self._c.observe("turn_latency_s", max(0.0, now_s - self._s.speech_stopped_at))
            self._s.speech_stopped_at = None

    def _on_audio_started(self, event: Mapping[str, Any], now_s: float) -> None:
        self._on_first_output(event, now_s)
        response_id = _str(event, "response_id")
        if response_id is not None:
            if len(self._s.playing) >= 8:  # Stops were missed; keep the set small.
                self._s.playing.clear()
            self._s.playing.add(response_id)
            if self._s.finale is not None:
                self._s.finale.on_audio_started(response_id)

    def _on_audio_stopped(self, event: Mapping[str, Any], now_s: float) -> None:
        response_id = _str(event, "response_id")
        if response_id is not None:
            self._s.playing.discard(response_id)
            if self._s.finale is not None and self._s.finale.on_audio_stopped(response_id):
                self._c.fire(now_s)

    def _on_idle(self, event: Mapping[str, Any], now_s: float) -> None:
        idle, s = self._plan.idle, self._s
        if idle is None or s.finale is not None:
            return
        s.idle_prompts += 1
        self._c.dirty = True
        if s.idle_prompts <= idle.max_prompts:
            s.gate.offer(idle.prompt_instructions, now_s)
        else:
            self._c.leave("hangup", EndReason.IDLE, now_s, words=idle.goodbye_instructions)

    def _on_dtmf(self, event: Mapping[str, Any], now_s: float) -> None:
        key = event.get("event")
        action = self._plan.dtmf.get(key) if isinstance(key, str) else None
        if action is None or self._s.finale is not None:
            return
        self._caller_active()
        if isinstance(action, TransferTo):
            uri = self._plan.resolve(action.target)
            self._c.leave(
                "refer", EndReason.TRANSFERRED, now_s, target_uri=uri, detail=f"dtmf {key}"
            )
        elif isinstance(action, HangUp):
            self._c.leave("hangup", EndReason.CALLER_HANGUP, now_s, detail=f"dtmf {key}")
        else:
            self._s.gate.request(say_instructions(action.text))

    def _on_function_call(self, event: Mapping[str, Any], now_s: float) -> None:
        s, call_id = self._s, _str(event, "call_id")
        if call_id is None or s.tools.seen(call_id):
            return
        name = event.get("name")
        decision = decide(name, event.get("arguments"), self._plan)
        if isinstance(decision, RunConfigured):
            spec = decision.spec
            s.tools.start(call_id, spec.name, now_s, spec.timeout_s, decision.arguments)
            self._c.emit(RunTool(call_id, spec.name, decision.arguments, spec.timeout_s))
            self._c.dirty = True
            return
        if not isinstance(decision, Refuse) and s.finale is not None:
            decision = Refuse("the call is already ending")
        label = name if isinstance(name, str) else ""
        if isinstance(decision, Refuse):
            s.tools.settle(call_id, label, False, error_output(decision.message), now_s)
            self._c.answer_tool(call_id, error_output(decision.message))
            return
        s.tools.settle(call_id, label, True, "", now_s)
        response_id = _str(event, "response_id")
        if isinstance(decision, TransferCall):
            uri = decision.target_uri
            self._c.leave(
                "refer",
                EndReason.TRANSFERRED,
                now_s,
                response_id=response_id,
                target_uri=uri,
                detail=uri,
            )
        else:
            self._c.leave(
                "hangup",
                EndReason.AGENT_HANGUP,
                now_s,
                response_id=response_id,
                detail=decision.reason,
            )

    def _on_item_added(self, event: Mapping[str, Any], now_s: float) -> None:
        item = _obj(event, "item")
        if item.get("type") == "function_call_output":
            call_id = _str(item, "call_id")
            if call_id is not None and self._s.tools.seen(call_id):
                self._c.emit(OutputDelivered(call_id))

    def _on_error(self, event: Mapping[str, Any], now_s: float) -> None:
        error = _obj(event, "error")
        self._s.gate.refused(error.get("event_id"), error.get("code"), now_s)
        if self._s.finale is not None:
            self._s.finale.on_refused(error.get("event_id"))
        self._c.observe("server_errors", 1.0)


_Handler = Callable[[ServerEvents, Mapping[str, Any], float], None]

_HANDLERS: dict[str, _Handler] = {
    "response.created": ServerEvents._on_response_created,
    "response.done": ServerEvents._on_response_done,
    "conversation.item.input_audio_transcription.completed": ServerEvents._on_caller_transcript,
    "response.output_audio_transcript.done": ServerEvents._on_agent_transcript,
    "response.output_text.done": ServerEvents._on_agent_text,
    "response.output_audio_transcript.delta": ServerEvents._on_first_output,
    "response.output_text.delta": ServerEvents._on_first_output,
    "output_audio_buffer.started": ServerEvents._on_audio_started,
    "output_audio_buffer.stopped": ServerEvents._on_audio_stopped,
    "output_audio_buffer.cleared": ServerEvents._on_audio_stopped,
    "input_audio_buffer.speech_started": ServerEvents._on_speech_started,
    "input_audio_buffer.speech_stopped": ServerEvents._on_speech_stopped,
    "input_audio_buffer.timeout_triggered": ServerEvents._on_idle,
    "input_audio_buffer.dtmf_event_received": ServerEvents._on_dtmf,
    "response.function_call_arguments.done": ServerEvents._on_function_call,
    "conversation.item.added": ServerEvents._on_item_added,
    "error": ServerEvents._on_error,
}

# After the end, only what keeps the record complete: the bill and the transcript.
_AFTER_END = frozenset(
    {
        "response.done",
        "conversation.item.input_audio_transcription.completed",
        "response.output_audio_transcript.done",
        "response.output_text.done",
    }
)


def _obj(event: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = event.get(key)
    return value if isinstance(value, Mapping) else {}


def _str(event: Mapping[str, Any], key: str) -> str | None:
    value = event.get(key)
    return value if isinstance(value, str) and value else None
