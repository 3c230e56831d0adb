"""A test driver for the pure session core: a clock, event builders and effect filters."""

from __future__ import annotations

from typing import Any, TypeVar

from workers.sessions.commands import Command
from workers.sessions.effects import Effect, Persist, Send
from workers.sessions.plan import SessionPlan, ToolSpec
from workers.sessions.protocol import ClosedReason, SessionProtocol

E = TypeVar("E")

T0 = 1_750_000_000.0

TARGETS = {"sales": "sip:sales@example.com", "desk": "tel:+14155550123"}


def make_plan(**overrides: Any) -> SessionPlan:
    fields: dict[str, Any] = {
        "call_id": "rtc_test",
        "model": "gpt-realtime",
        "profile": "support",
        "tools": (ToolSpec("lookup", 5.0), ToolSpec("transfer_call"), ToolSpec("end_call")),
        "transfer_targets": TARGETS,
    }
    fields.update(overrides)
    return SessionPlan(**fields)


class Driver:
    """Feeds one core at a controllable time and keeps every effect it returned."""

    def __init__(
        self, plan: SessionPlan | None = None, *, core: SessionProtocol | None = None
    ) -> None:
        self.plan = plan or make_plan()
        self.core = core or SessionProtocol(self.plan)
        self.now = T0
        self.log: list[Effect] = []

    def at(self, offset_s: float) -> Driver:
        self.now = T0 + offset_s
        return self

    def _keep(self, effects: list[Effect]) -> list[Effect]:
        self.log.extend(effects)
        return effects

    def attach(self, fresh: bool = True) -> list[Effect]:
        return self._keep(self.core.on_attached(self.now, fresh))

    def event(self, type_: str, **fields: Any) -> list[Effect]:
        return self._keep(self.core.on_event({"type": type_, **fields}, self.now))

    def raw(self, event: Any) -> list[Effect]:
        return self._keep(self.core.on_event(event, self.now))

    def tick(self) -> list[Effect]:
        return self._keep(self.core.on_tick(self.now))

    def command(
        self, command_id: str, kind: str, issued_at: float | None = None, **args: Any
    ) -> list[Effect]:
        command = Command(command_id, kind, args, issued_at)
        return self._keep(self.core.on_command(command, self.now))

    def tool_result(self, call_id: str, output: str, ok: bool = True) -> list[Effect]:
        return self._keep(self.core.on_tool_result(call_id, output, ok, self.now))

    def closed(self, reason: ClosedReason = "caller") -> list[Effect]:
        return self._keep(self.core.on_closed(self.now, reason))

    # Server event shorthands.

    def created(self, response_id: str, tag: str | None = None) -> list[Effect]:
        response: dict[str, Any] = {"id": response_id, "object": "realtime.response"}
        if tag is not None:
            response["metadata"] = {"switchboard_tag": tag}
        return self.event("response.created", response=response)

    def done(self, response_id: str, usage: dict[str, Any] | None = None) -> list[Effect]:
        response: dict[str, Any] = {"id": response_id, "status": "completed"}
        if usage is not None:
            response["usage"] = usage
        return self.event("response.done", response=response)

    def function_call(
        self, call_id: str, name: str, arguments: str = "{}", response_id: str = "resp_tool"
    ) -> list[Effect]:
        return self.event(
            "response.function_call_arguments.done",
            call_id=call_id,
            name=name,
            arguments=arguments,
            response_id=response_id,
            item_id="item_1",
            output_index=0,
        )


def sends(effects: list[Effect]) -> list[dict[str, Any]]:
    return [effect.event for effect in effects if isinstance(effect, Send)]


def creates(effects: list[Effect]) -> list[dict[str, Any]]:
    return [event for event in sends(effects) if event["type"] == "response.create"]


def instructions(effects: list[Effect]) -> list[str | None]:
    return [event.get("response", {}).get("instructions") for event in creates(effects)]


def without_persist(effects: list[Effect]) -> list[Effect]:
    return [effect for effect in effects if not isinstance(effect, Persist)]


def of_type(effects: list[Effect], kind: type[E]) -> list[E]:
    return [effect for effect in effects if isinstance(effect, kind)]
