"""A minimal agent for sideband tests: accepts a call, attaches with the official SDK, and
answers tool calls; plus the SDK's server-event union as the conformance oracle."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pydantic
from openai import AsyncOpenAI
from openai.types.realtime import RealtimeServerEvent

from tests.support.emulator import EmulatorHandle, running_emulator

TIME_SCALE = 0.02
SERVER_EVENT: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(RealtimeServerEvent)

LOOKUP_ORDER = {
    "type": "function",
    "name": "lookup_order",
    "description": "Find an order's status by its number.",
    "parameters": {
        "type": "object",
        "properties": {"order_id": {"type": "string"}},
        "required": ["order_id"],
    },
}
TRANSFER_CALL = {
    "type": "function",
    "name": "transfer_call",
    "description": "Transfer the caller to a named target.",
    "parameters": {
        "type": "object",
        "properties": {"target": {"type": "string"}},
        "required": ["target"],
    },
}
TOOLS = [LOOKUP_ORDER, TRANSFER_CALL]
ORDER_OUTPUT = '{"order_id": "12345", "status": "shipped"}'


def validate(event: dict[str, Any]) -> Any:
    """Validate ``event`` against the SDK's server-event union (not merely construct it)."""
    model = SERVER_EVENT.validate_python(event)
    assert model.type == event["type"], (model.type, event)
    return model


@contextmanager
def fast_emulator(**config: Any) -> Iterator[EmulatorHandle]:
    """An emulator in a thread on a fast clock; ``config`` overrides its fields."""
    config.setdefault("time_scale", TIME_SCALE)
    with running_emulator(**config) as emu:
        yield emu


def sdk(emu: EmulatorHandle, api_key: str | None = None) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=emu.api_url, api_key=api_key or emu.api_key, max_retries=0)


async def place_and_accept(
    emu: EmulatorHandle, client: AsyncOpenAI, scenario: str, **session: Any
) -> str:
    call_id = emu.place_call(scenario=session.pop("scenario", scenario))
    session.setdefault("model", "gpt-realtime")
    await client.realtime.calls.accept(call_id, type="realtime", **session)
    return call_id


async def run_agent(
    client: AsyncOpenAI,
    call_id: str,
    *,
    tool_output: Callable[[str, str], str] | None = lambda _name, _args: ORDER_OUTPUT,
    first: list[dict[str, Any]] | None = None,
    timeout_s: float = 15.0,
) -> list[Any]:
    """Attach with ``connect(call_id=...)`` until the socket closes; returns every event.

    ``first`` is sent right after attaching; ``tool_output`` answers each function call
    (None leaves them unanswered, like a hung tool).
    """
    received: list[Any] = []
    async with asyncio.timeout(timeout_s), client.realtime.connect(call_id=call_id) as conn:
        for client_event in first or []:
            await conn.send(client_event)  # type: ignore[arg-type]
        async for server_event in conn:
            received.append(server_event)
            if server_event.type == "response.function_call_arguments.done" and tool_output:
                output = tool_output(server_event.name, server_event.arguments)
                await conn.conversation.item.create(
                    item={
                        "type": "function_call_output",
                        "call_id": server_event.call_id,
                        "output": output,
                    }
                )
                await conn.response.create()
    return received


def types_of(events: list[Any]) -> list[str]:
    return [event["type"] if isinstance(event, dict) else event.type for event in events]
