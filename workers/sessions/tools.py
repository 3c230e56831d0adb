"""Tool calls of one call: what to do with each, and the ledger that runs each id once.

``decide`` reads a ``response.function_call_arguments.done`` (``call_id``, ``name``,
``arguments``) against the plan. Built-ins act on the call itself: ``transfer_call``
(``{"target": name or URI}``) and ``end_call`` (``{"reason"?: text}``). Configured
tools run in the adapter. A tool the plan does not offer, arguments that are not a JSON
object, or a bad transfer target are refused: the model gets an error output (a JSON
string ``{"error": ...}``) instead of silence, so it can tell the caller.

The ``ToolDesk`` remembers every tool-call id with its outcome, so a re-delivered event
never runs a tool twice; the adapter also keeps a Redis ledger (``LedgerEntry`` per id:
requested, running, done with its outcome, answered, or delivered), which covers the
gap between the last snapshot and a failover: a runner taking the call over answers
every id the ledger or the snapshot left open, and sends again an output that was sent
but never echoed (with the same item id, which the API keeps once). A worker that stops
without seeing a function call it heard through (its lease lost while Redis was away)
leaves it ``requested`` (``FunctionCall``, as heard): whoever holds the call handles it
as if it had heard it itself.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from workers.sessions.plan import SessionPlan, ToolSpec

UNKNOWN_OUTCOME = "the tool was started before a failover and its outcome is unknown"
"""What the model is told about a tool whose run was cut short by a failover."""

LedgerState = Literal["requested", "running", "done", "answered", "delivered"]
FUNCTION_CALL_DONE = "response.function_call_arguments.done"


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """What the Redis ledger holds for one tool-call id.

    ``requested``: a function call a worker heard and left to whoever holds the call
    (``arguments`` as the model sent them), nothing claimed yet; ``running``: claimed,
    its outcome unknown; ``done``: the tool's outcome (``ok``, ``output``), not known to
    have reached the model; ``answered``: an output for the id was sent (``output`` is
    what was sent), not yet known to have arrived; ``delivered``: the API echoed it.
    """

    state: LedgerState
    name: str = ""
    ok: bool | None = None
    output: str | None = None
    arguments: str | None = None

    @property
    def outcome(self) -> tuple[bool, str] | None:
        """The tool's recorded outcome, if it has one."""
        if self.state in ("requested", "running") or self.ok is None:
            return None
        return self.ok, self.output or ""


@dataclass(frozen=True, slots=True)
class FunctionCall:
    """One function call as the model made it: its id, tool name and raw arguments."""

    call_id: str
    name: str
    arguments: str

    @classmethod
    def of(cls, event: Mapping[str, Any]) -> FunctionCall | None:
        """The function call a ``response.function_call_arguments.done`` carries, if any
        (a field of the wrong type counts as empty; no ``call_id``, no function call)."""
        if event.get("type") != FUNCTION_CALL_DONE:
            return None
        call_id, name, arguments = (event.get(k) for k in ("call_id", "name", "arguments"))
        if not isinstance(call_id, str) or not call_id:
            return None
        return cls(
            call_id,
            name if isinstance(name, str) else "",
            arguments if isinstance(arguments, str) else "",
        )

    def event(self) -> dict[str, Any]:
        """The server event it came in, as the session core reads it."""
        return {
            "type": FUNCTION_CALL_DONE,
            "call_id": self.call_id,
            "name": self.name,
            "arguments": self.arguments,
        }


@dataclass(frozen=True, slots=True)
class Refuse:
    """Answer the model with this error message; nothing runs."""

    message: str


@dataclass(frozen=True, slots=True)
class RunConfigured:
    """Run a configured tool with these arguments."""

    spec: ToolSpec
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class TransferCall:
    """Built-in ``transfer_call``: refer the caller to ``target_uri``."""

    target_uri: str


@dataclass(frozen=True, slots=True)
class EndCallTool:
    """Built-in ``end_call``: hang up once the agent's goodbye has played."""

    reason: str | None


ToolDecision = Refuse | RunConfigured | TransferCall | EndCallTool


def decide(name: object, arguments: object, plan: SessionPlan) -> ToolDecision:
    """What to do with one function call (see the module docstring)."""
    spec = plan.tool(name)
    if spec is None:
        return Refuse(f"unknown tool {name!r}")
    try:
        parsed = json.loads(arguments) if isinstance(arguments, str) and arguments else {}
    except ValueError:
        return Refuse(f"arguments of {spec.name} are not valid JSON")
    if not isinstance(parsed, dict):
        return Refuse(f"arguments of {spec.name} must be a JSON object")
    if spec.name == "transfer_call":
        uri = plan.resolve(parsed.get("target"))
        if uri is None:
            known = ", ".join(sorted(plan.transfer_targets)) or "none"
            return Refuse(f"unknown transfer target {parsed.get('target')!r} (named: {known})")
        return TransferCall(uri)
    if spec.name == "end_call":
        reason = parsed.get("reason")
        return EndCallTool(reason if isinstance(reason, str) and reason else None)
    return RunConfigured(spec, parsed)


@dataclass(slots=True)
class ToolCall:
    """One tool-call id: pending while ``ok`` is ``None``; a configured tool keeps its
    ``arguments`` until answered, so a runner taking the call over can run it if the
    ledger shows it never started."""

    name: str
    started_at: float
    deadline_at: float | None = None
    ok: bool | None = None
    output: str | None = None
    arguments: dict[str, Any] | None = None


class ToolDesk:
    """Every tool-call id of the call with its outcome; pending ones have a deadline."""

    def __init__(self, calls: dict[str, ToolCall] | None = None) -> None:
        self._calls: dict[str, ToolCall] = calls or {}

    def seen(self, call_id: str) -> bool:
        return call_id in self._calls

    def start(
        self, call_id: str, name: str, now_s: float, timeout_s: float, arguments: dict[str, Any]
    ) -> None:
        self._calls[call_id] = ToolCall(
            name, now_s, deadline_at=now_s + timeout_s, arguments=arguments
        )

    def get(self, call_id: str) -> ToolCall | None:
        return self._calls.get(call_id)

    def adopt(self, call_id: str, name: str, now_s: float) -> ToolCall:
        """Take on a call another worker started (no deadline: it is answered now)."""
        call = self._calls.get(call_id)
        if call is None:
            call = self._calls[call_id] = ToolCall(name, now_s)
        return call

    def pending_ids(self) -> list[str]:
        return [call_id for call_id, call in self._calls.items() if call.ok is None]

    def settle(self, call_id: str, name: str, ok: bool, output: str, now_s: float) -> None:
        """Record a call decided at once (a built-in or a refusal)."""
        self._calls[call_id] = ToolCall(name, now_s, ok=ok, output=output)

    def finish(self, call_id: str, ok: bool, output: str) -> ToolCall | None:
        """Close a pending call; ``None`` if it is unknown or already closed."""
        call = self._calls.get(call_id)
        if call is None or call.ok is not None:
            return None
        call.ok, call.output, call.deadline_at, call.arguments = ok, output, None, None
        return call

    def overdue(self, now_s: float) -> list[tuple[str, float]]:
        """Pending calls past their deadline, with the timeout each was given."""
        return [
            (call_id, call.deadline_at - call.started_at)
            for call_id, call in self._calls.items()
            if call.deadline_at is not None and call.deadline_at <= now_s
        ]

    def pending(self) -> bool:
        return any(call.ok is None for call in self._calls.values())

    def deadline(self) -> float | None:
        deadlines = [c.deadline_at for c in self._calls.values() if c.deadline_at is not None]
        return min(deadlines, default=None)

    def name_of(self, call_id: str) -> str:
        call = self._calls.get(call_id)
        return call.name if call is not None else ""

    def to_json(self) -> dict[str, dict[str, Any]]:
        return {call_id: asdict(call) for call_id, call in self._calls.items()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ToolDesk:
        calls: dict[str, ToolCall] = {}
        for call_id, raw in data.items():
            call = ToolCall(**raw)
            if not isinstance(call.name, str) or not isinstance(call.started_at, int | float):
                raise ValueError(f"malformed tool call {call_id!r}: {raw!r}")
            calls[str(call_id)] = call
        return cls(calls)
