"""The state of one call's session core, and its JSON snapshot for failover.

A runner saves ``SessionState.to_json()`` whenever the core emits ``Persist``; another
runner that takes the call over rebuilds the core from it (``SessionProtocol.restore``)
and goes on with cost, ledgers and limits intact. Snapshot format (version 1)::

    {"version": 1, "call_id", "model", "started_at": unix s | null, "greeted": bool,
     "end_reason": str | null, "caller_turns", "agent_turns", "transcript_count",
     "cost_usd": "decimal string", "cost": {component: "decimal", ..., "tokens": {...}},
     "usage": {token counts by component and totals},
     "priced_response_ids": [the last PRICED_IDS_KEPT ids],
     "tools": {tool_call_id: {name, started_at, deadline_at, ok, output, arguments}},
     "needs_follow_up": bool, "commands": {command_id: {"ok", "detail"}},
     "idle_prompts", "limits_fired": ["max_duration" | "budget"],
     "finale": {...} | null, "queued_responses": [event], "response_seq": int,
     "held_sends": [event]}

What the socket was doing (responses in flight, audio playing, a pending turn
measurement) is not kept: after a re-attach the server's state is unknown anyway.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.errors import FatalError
from shared.models import EndReason
from shared.pricing import Cost
from workers.sessions.finale import Finale
from workers.sessions.responses import ResponseGate
from workers.sessions.tools import ToolDesk

SNAPSHOT_VERSION = 1
PRICED_IDS_KEPT = 128
"""Response ids remembered against re-delivery; a re-sent ``response.done`` is recent."""


class SnapshotError(FatalError, ValueError):
    """A snapshot that cannot be restored (wrong call, unknown version, malformed)."""


@dataclass(slots=True)
class SessionState:
    """Everything the core knows about its call; the protocol's only mutable data."""

    call_id: str
    started_at: float | None = None
    greeted: bool = False
    end_reason: EndReason | None = None
    caller_turns: int = 0
    agent_turns: int = 0
    cost: Cost = field(default_factory=Cost)
    priced: dict[str, None] = field(default_factory=dict)
    tools: ToolDesk = field(default_factory=ToolDesk)
    needs_follow_up: bool = False
    commands: dict[str, tuple[bool, str]] = field(default_factory=dict)
    idle_prompts: int = 0
    limits_fired: set[str] = field(default_factory=set)
    finale: Finale | None = None
    gate: ResponseGate = field(default_factory=ResponseGate)
    held: list[dict[str, Any]] = field(default_factory=list)
    # Not persisted: the socket's momentary state.
    attached: bool = False
    playing: set[str] = field(default_factory=set)
    speech_stopped_at: float | None = None

    @property
    def ended(self) -> bool:
        return self.end_reason is not None

    def remember_priced(self, response_id: str) -> None:
        self.priced[response_id] = None
        if len(self.priced) > PRICED_IDS_KEPT:
            del self.priced[next(iter(self.priced))]

    def to_json(self, model: str) -> dict[str, Any]:
        return {
            "version": SNAPSHOT_VERSION,
            "call_id": self.call_id,
            "model": model,
            "started_at": self.started_at,
            "greeted": self.greeted,
            "end_reason": self.end_reason.value if self.end_reason is not None else None,
            "caller_turns": self.caller_turns,
            "agent_turns": self.agent_turns,
            "transcript_count": self.caller_turns + self.agent_turns,
            "cost_usd": str(self.cost.total_usd),
            "cost": self.cost.to_json(),
            "usage": self.cost.tokens.as_dict(),
            "priced_response_ids": list(self.priced),
            "tools": self.tools.to_json(),
            "needs_follow_up": self.needs_follow_up,
            "commands": {cid: {"ok": ok, "detail": d} for cid, (ok, d) in self.commands.items()},
            "idle_prompts": self.idle_prompts,
            "limits_fired": sorted(self.limits_fired),
            "finale": self.finale.to_json() if self.finale is not None else None,
            "queued_responses": self.gate.queued,
            "response_seq": self.gate.seq,
            "held_sends": list(self.held),
        }

    @classmethod
    def from_json(cls, call_id: str, data: Mapping[str, Any]) -> SessionState:
        """Rebuild from ``to_json``; raises ``SnapshotError`` when that is not possible."""
        if not isinstance(data, Mapping) or data.get("version") != SNAPSHOT_VERSION:
            raise SnapshotError(f"unsupported snapshot for {call_id}: version mismatch")
        if data.get("call_id") != call_id:
            raise SnapshotError(f"snapshot of {data.get('call_id')!r} offered to {call_id}")
        try:
            return cls._parse(call_id, data)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SnapshotError(f"malformed snapshot for {call_id}: {exc}") from exc

    @classmethod
    def _parse(cls, call_id: str, data: Mapping[str, Any]) -> SessionState:
        end_reason = data["end_reason"]
        finale = data["finale"]
        started_at = data["started_at"]
        state = cls(
            call_id=call_id,
            started_at=float(started_at) if started_at is not None else None,
            greeted=bool(data["greeted"]),
            end_reason=EndReason(end_reason) if end_reason is not None else None,
            caller_turns=int(data["caller_turns"]),
            agent_turns=int(data["agent_turns"]),
            cost=Cost.from_json(data["cost"]),
            tools=ToolDesk.from_json(data["tools"]),
            needs_follow_up=bool(data["needs_follow_up"]),
            commands={
                str(cid): (bool(c["ok"]), str(c["detail"])) for cid, c in data["commands"].items()
            },
            idle_prompts=int(data["idle_prompts"]),
            limits_fired={str(name) for name in data["limits_fired"]},
            finale=Finale.from_json(finale) if finale is not None else None,
            gate=ResponseGate(
                [dict(event) for event in data["queued_responses"]], int(data["response_seq"])
            ),
            held=[dict(event) for event in data["held_sends"]],
        )
        for response_id in data["priced_response_ids"]:
            state.remember_priced(str(response_id))
        return state
