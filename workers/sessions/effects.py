"""What the per-call session core asks its adapter to do.

The core (``workers.sessions.protocol``) never performs I/O: every feed method returns
a list of these small values, in the order they must be carried out. The adapter sends
``Send`` events on the sideband, calls the REST endpoints for ``Refer`` and ``Hangup``,
runs tools for ``RunTool`` and feeds their outcome back, writes transcripts, usage and
call records, records metrics for ``Observe``, notes a command it starts applying on
``ClaimCommand`` and the call's Refer or Hangup on ``ClaimControl``, acknowledges
commands on ``CommandDone`` and saves
``SessionProtocol.snapshot()`` when it sees ``Persist``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from shared.models import EndReason
from shared.pricing import Cost

Role = Literal["caller", "agent"]

ObserveKind = Literal[
    "turn_latency_s",
    "tool_latency_s",
    "command_latency_s",
    "tool_timeouts",
    "usage_rejected",
    "server_errors",
]
"""Latencies (``*_s``, seconds) and counters (value 1.0 per occurrence)."""


@dataclass(frozen=True, slots=True)
class Send:
    """Send one client event (a GA event dict) on the call's sideband websocket."""

    event: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AppendTranscript:
    """Append one finished turn to the call's transcript."""

    role: Role
    text: str
    at: float


@dataclass(frozen=True, slots=True)
class AccrueUsage:
    """Add one response's usage and its exact cost to the call, profile and cluster."""

    response_id: str
    model: str
    usage: Mapping[str, Any]
    cost: Cost


@dataclass(frozen=True, slots=True)
class RunTool:
    """Run a configured tool once; report back with ``on_tool_result(tool_call_id, ...)``.

    ``timeout_s`` is informational: the core enforces the deadline itself and answers
    the model with an error output when it passes.
    """

    tool_call_id: str
    name: str
    arguments: dict[str, Any]
    timeout_s: float


@dataclass(frozen=True, slots=True)
class OutputDelivered:
    """The API has the output for this tool-call id (it echoed the item): note it in the
    ledger, so that no runner ever sends it again."""

    tool_call_id: str


@dataclass(frozen=True, slots=True)
class Refer:
    """``POST /realtime/calls/{id}/refer`` with this ``target_uri`` (a blind transfer)."""

    target_uri: str


@dataclass(frozen=True, slots=True)
class Hangup:
    """``POST /realtime/calls/{id}/hangup``."""


@dataclass(frozen=True, slots=True)
class EndCall:
    """The call is over for this core: record the end reason (emitted at most once)."""

    reason: EndReason
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class Observe:
    """One metric observation."""

    kind: ObserveKind
    value: float


@dataclass(frozen=True, slots=True)
class ClaimCommand:
    """Note that this command is being applied, before any of its effects: a runner that
    takes the call over finds the note and never applies the command again."""

    command_id: str


@dataclass(frozen=True, slots=True)
class ClaimControl:
    """Note the call's Refer or Hangup (the next effect) and how the call ends by it,
    before the request: the request goes out only if this is the call's first such note,
    and a runner that takes the call over finds it and ends the call as it says, never
    sending the request again."""

    action: Literal["refer", "hangup"]
    reason: EndReason
    detail: str | None = None
    target_uri: str | None = None
    command_id: str | None = None
    """The operator command the Refer or Hangup carries out, if any."""

    @property
    def done(self) -> str:
        """The outcome of the command it carries out."""
        return f"referred to {self.target_uri}" if self.action == "refer" else "hung up"


@dataclass(frozen=True, slots=True)
class CommandDone:
    """Acknowledge an operator command with its outcome (``ok`` false: nothing was done)."""

    command_id: str
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class Persist:
    """State worth a snapshot changed: save ``snapshot()`` after the effects before this."""


Effect = (
    Send
    | AppendTranscript
    | AccrueUsage
    | RunTool
    | OutputDelivered
    | Refer
    | Hangup
    | EndCall
    | Observe
    | ClaimCommand
    | ClaimControl
    | CommandDone
    | Persist
)
