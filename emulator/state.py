"""Ground truth of the emulator: every call it placed and everything that happened to it.

One ``EmulatedCall`` per call id, owned by a ``CallRegistry``. REST handlers, the
sideband and the webhook sender all read and write the same object, so the control
surface (``GET /_emulator/calls/{id}``, ``GET /_emulator/ledger``) reports what really
happened: the accept body received, the reject status, the refer target, every refer
and hangup request (``control_requests``, refused ones too), who ended the call, every
sideband attachment interval, the usage the scripted model reported, the function calls
it made (``function_calls``, with when they were sent) and the tool outputs it got,
every event sent and received, and protocol defects (for example an ``audio.*.format``
override on a SIP call).

Call states: ``ringing`` -> ``active`` -> ``ended``; ``ringing`` -> ``rejected``;
``ringing`` -> ``missed`` (the caller gave up before anyone answered).
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from emulator.live_session import LiveSession

CallState = Literal["ringing", "active", "ended", "rejected", "missed"]
EndedBy = Literal["caller", "hangup", "refer", "reject", "ring_timeout", "server"]

#: Events kept per call in ground truth (both directions); older ones are dropped.
MAX_EVENTS_KEPT = 2_000

USAGE_FIELDS = (
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "input_text_tokens",
    "input_audio_tokens",
    "cached_tokens",
    "cached_text_tokens",
    "cached_audio_tokens",
    "output_text_tokens",
    "output_audio_tokens",
)


def new_call_id() -> str:
    """An ``rtc_`` call id shaped like the real ones (opaque to clients)."""
    return "rtc_" + secrets.token_hex(16)


def new_event_id() -> str:
    return "evt_" + secrets.token_hex(16)


def zero_usage() -> dict[str, int]:
    return dict.fromkeys(USAGE_FIELDS, 0)


ClosedBy = Literal["client", "server"]


@dataclass
class Attachment:
    """One sideband websocket attached to a call, from open to close (wall-clock s).

    ``closed_by``: ``server`` when the emulator closed it (the call ended, or a
    ``ws_drop_rate`` fault), ``client`` when the client did or vanished; ``close_code``:
    the code of that close; 1005 or 1006 when no code came from the client (no close
    frame: its process died, or the connection broke; the web server says 1005 for a
    connection lost once open)."""

    opened_at: float
    closed_at: float | None = None
    closed_by: ClosedBy | None = None
    close_code: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "opened_at": self.opened_at,
            "closed_at": self.closed_at,
            "closed_by": self.closed_by,
            "close_code": self.close_code,
        }


@dataclass
class EmulatedCall:
    """One placed call and its ground truth."""

    call_id: str
    from_uri: str
    to_uri: str
    scenario: str
    sip_headers: list[dict[str, str]]
    created_at: float = field(default_factory=time.time)
    state: CallState = "ringing"
    accept: dict[str, Any] | None = None
    accepted_at: float | None = None
    reject_status: int | None = None
    refer_target: str | None = None
    hangup_requested: bool = False
    control_requests: list[str] = field(default_factory=list)
    """``refer`` or ``hangup`` per REST request naming the call, answered or refused."""
    ended_by: EndedBy | None = None
    ended_at: float | None = None
    usage: dict[str, int] = field(default_factory=zero_usage)
    responses: int = 0
    attachments: list[Attachment] = field(default_factory=list)
    tool_outputs: list[dict[str, Any]] = field(default_factory=list)
    function_calls: list[dict[str, Any]] = field(default_factory=list)
    """``{"call_id", "name", "at", "delivered", "attachments"}`` per function call
    broadcast while a sideband was attached (``at``: wall-clock s; ``delivered``: false
    when every socket was dropped instead, see ``ws_drop_rate``, so no client ever saw
    it; ``attachments``: the indexes in ``attachments`` of the sockets that took it)."""
    events_sent: list[dict[str, Any]] = field(default_factory=list)
    events_received: list[dict[str, Any]] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)
    repeat_decisions: list[str] = field(default_factory=list)
    """Accepts and rejects refused because the call was already decided (404 each)."""
    malformed_sent: int = 0
    """Broken or unknown frames the ``malformed_event_rate`` fault added on its sockets."""
    webhook_deliveries: list[dict[str, Any]] = field(default_factory=list)
    # Signals for the tasks that play the call (not part of ground truth output).
    answered: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    on_end: list[Callable[[EmulatedCall], None]] = field(default_factory=list)
    # The running realtime session (scripted model, sockets, caller) while answered.
    session: LiveSession | None = field(default=None, repr=False, compare=False)

    @property
    def live(self) -> bool:
        return self.state in ("ringing", "active")

    def open_attachments(self) -> int:
        return sum(1 for a in self.attachments if a.closed_at is None)

    def end(self, by: EndedBy, state: CallState = "ended") -> bool:
        """Move to a terminal state once; returns False if the call had already ended."""
        if not self.live:
            return False
        self.state = state
        self.ended_by = by
        self.ended_at = time.time()
        self.answered.set()  # wake anyone waiting for an answer that will never come
        self.finished.set()
        for callback in list(self.on_end):
            callback(self)
        return True

    def record_sent(self, event: dict[str, Any]) -> None:
        self.events_sent.append(event)
        if len(self.events_sent) > MAX_EVENTS_KEPT:
            del self.events_sent[0]

    def record_function_call(self, event: dict[str, Any], took_it: list[Attachment]) -> None:
        """A function call broadcast to the sidebands; ``took_it``: the sockets it went to."""
        call = {"call_id": event.get("call_id"), "name": event.get("name"), "at": time.time()}
        indexes = [n for n, a in enumerate(self.attachments) if any(a is t for t in took_it)]
        self.function_calls.append(call | {"delivered": bool(took_it), "attachments": indexes})

    def record_received(self, event: dict[str, Any]) -> None:
        self.events_received.append(event)
        if len(self.events_received) > MAX_EVENTS_KEPT:
            del self.events_received[0]

    def add_usage(self, usage: dict[str, int]) -> None:
        for key in USAGE_FIELDS:
            self.usage[key] += int(usage.get(key, 0))
        self.responses += 1

    def overlapping_attachments(self) -> bool:
        """True if two attachment intervals ever overlapped (two sidebands at once)."""
        spans = sorted(
            (a.opened_at, a.closed_at if a.closed_at is not None else float("inf"))
            for a in self.attachments
        )
        return any(nxt[0] < cur[1] for cur, nxt in itertools.pairwise(spans))

    def ground_truth(self, include_events: bool = True) -> dict[str, Any]:
        body: dict[str, Any] = {
            "call_id": self.call_id,
            "from": self.from_uri,
            "to": self.to_uri,
            "scenario": self.scenario,
            "state": self.state,
            "created_at": self.created_at,
            "accepted_at": self.accepted_at,
            "ended_at": self.ended_at,
            "accept": self.accept,
            "reject_status": self.reject_status,
            "refer_target": self.refer_target,
            "control_requests": list(self.control_requests),
            "ended_by": self.ended_by,
            "usage": dict(self.usage),
            "responses": self.responses,
            "attachments": [a.as_json() for a in self.attachments],
            "overlapping_attachments": self.overlapping_attachments(),
            "tool_outputs": list(self.tool_outputs),
            "function_calls": list(self.function_calls),
            "defects": list(self.defects),
            "repeat_decisions": list(self.repeat_decisions),
            "malformed_sent": self.malformed_sent,
            "webhook_deliveries": list(self.webhook_deliveries),
        }
        if include_events:
            body["events_sent"] = list(self.events_sent)
            body["events_received"] = list(self.events_received)
        return body


class CallRegistry:
    """All calls this emulator placed, by id, with ledger totals over them."""

    def __init__(self) -> None:
        self._calls: dict[str, EmulatedCall] = {}

    def add(self, call: EmulatedCall) -> EmulatedCall:
        self._calls[call.call_id] = call
        return call

    def get(self, call_id: str) -> EmulatedCall | None:
        return self._calls.get(call_id)

    def all(self) -> list[EmulatedCall]:
        return list(self._calls.values())

    def live_count(self) -> int:
        return sum(1 for c in self._calls.values() if c.live)

    def ledger(self) -> dict[str, Any]:
        usage = zero_usage()
        by_state: dict[str, int] = {}
        by_ended: dict[str, int] = {}
        tool_outputs = 0
        overlapping = 0
        defects = 0
        responses = 0
        for call in self._calls.values():
            for key in USAGE_FIELDS:
                usage[key] += call.usage[key]
            by_state[call.state] = by_state.get(call.state, 0) + 1
            if call.ended_by:
                by_ended[call.ended_by] = by_ended.get(call.ended_by, 0) + 1
            tool_outputs += len(call.tool_outputs)
            overlapping += int(call.overlapping_attachments())
            defects += len(call.defects)
            responses += call.responses
        return {
            "calls": len(self._calls),
            "by_state": by_state,
            "ended_by": by_ended,
            "usage": usage,
            "responses": responses,
            "tool_outputs": tool_outputs,
            "calls_with_overlapping_attachments": overlapping,
            "defects": defects,
        }
