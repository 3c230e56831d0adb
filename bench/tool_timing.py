"""Pairing the emulator's clocks into tool-call overheads (pure: no I/O, no clock).

The target: ``response.function_call_arguments.done`` out of the API -> the
``function_call_output`` and the ``response.create`` that follows it back in, minus the
tool's own time. The emulator stamps when it sent each ``arguments.done`` (per call and
tool-call id) and when it received each client event (per call, in order); the tool
reports its own time in its output (``own_ms``, see ``bench.bench_tools``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

OUTPUT_ITEM = "conversation.item.create"
RESPONSE_CREATE = "response.create"


@dataclass(frozen=True, slots=True)
class ToolTiming:
    """One tool call as the emulator saw it (Unix seconds)."""

    call_id: str
    tool_call_id: str
    arguments_done_at: float
    output_at: float
    response_create_at: float
    own_s: float

    @property
    def overhead_s(self) -> float:
        """arguments.done -> response.create, minus the tool's own time."""
        return self.response_create_at - self.arguments_done_at - self.own_s

    @property
    def to_output_s(self) -> float:
        """arguments.done -> function_call_output (the tool's time included)."""
        return self.output_at - self.arguments_done_at


def own_s(output: object) -> float:
    """The tool's own time from its output's ``own_ms``; 0 when it reports none."""
    if not isinstance(output, str):
        return 0.0
    try:
        body = orjson.loads(output)
    except orjson.JSONDecodeError:
        return 0.0
    own_ms = body.get("own_ms") if isinstance(body, dict) else None
    return float(own_ms) / 1000 if isinstance(own_ms, int | float) else 0.0


def tool_output(event: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The ``function_call_output`` item a client event creates, if it creates one."""
    item = event.get("item")
    if event.get("type") != OUTPUT_ITEM or not isinstance(item, Mapping):
        return None
    return item if item.get("type") == "function_call_output" else None


def tool_timings(
    sent_at: Mapping[tuple[str, str], float],
    received: Mapping[str, Sequence[tuple[float, Mapping[str, Any]]]],
) -> tuple[list[ToolTiming], int]:
    """Every answered tool call, and how many outputs no ``response.create`` followed.

    ``sent_at``: ``(call_id, tool_call_id) -> when arguments.done was sent``;
    ``received``: ``call_id -> [(when, client event)]`` in the order received. An output
    is paired with the first ``response.create`` received after it on the same call (one
    create follows all the outputs of a response). Outputs of tool calls whose
    ``arguments.done`` was not stamped are ignored.
    """
    timings: list[ToolTiming] = []
    unanswered = 0
    for call_id, events in received.items():
        waiting: list[tuple[str, float, float, float]] = []
        for at, event in events:
            item = tool_output(event)
            if item is not None:
                tool_call_id = str(item.get("call_id"))
                done_at = sent_at.get((call_id, tool_call_id))
                if done_at is not None:
                    waiting.append((tool_call_id, done_at, at, own_s(item.get("output"))))
            elif event.get("type") == RESPONSE_CREATE and waiting:
                timings += [ToolTiming(call_id, t, d, o, at, s) for t, d, o, s in waiting]
                waiting = []
        unanswered += len(waiting)
    return timings, unanswered
