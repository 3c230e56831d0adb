"""The reconciliation's judgement of tool calls left without an output, on ground truths
shaped like the emulator's."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.reconcile import ANSWER_WITHIN_S, unanswered_tool_calls

T0 = 1_750_000_000.0


def _truth(
    name: str,
    *,
    ended_after_s: float,
    ended_by: str = "caller",
    answered: bool = False,
    delivered: bool = True,
) -> dict[str, Any]:
    """A call whose model made one function call at ``T0``."""
    call = {"type": "response.function_call_arguments.done", "call_id": "call_1", "name": name}
    outputs = [{"call_id": "call_1", "name": name, "output": "{}", "at": T0 + 0.1}]
    return {
        "events_sent": [{"type": "response.created"}, call],
        "function_calls": [{"call_id": "call_1", "name": name, "at": T0, "delivered": delivered}],
        "tool_outputs": outputs if answered else [],
        "ended_at": T0 + ended_after_s,
        "ended_by": ended_by,
    }


def test_a_tool_call_the_call_outlived_without_an_output_is_flagged() -> None:
    assert unanswered_tool_calls(_truth("lookup_order", ended_after_s=30.0)) == ["call_1"]
    late = _truth("transfer_call", ended_after_s=30.0)  # the transfer never came either
    assert unanswered_tool_calls(late) == ["call_1"]


@pytest.mark.parametrize(
    "truth",
    [
        _truth("lookup_order", ended_after_s=30.0, answered=True),
        _truth("lookup_order", ended_after_s=ANSWER_WITHIN_S - 1.0),  # hung up meanwhile
        _truth("lookup_order", ended_after_s=30.0, delivered=False),  # no runner saw it
        _truth("transfer_call", ended_after_s=30.0, ended_by="refer"),  # ended by it
        _truth("end_call", ended_after_s=30.0, ended_by="hangup"),
    ],
    ids=["answered", "ended soon after", "never delivered", "transferred", "hung up"],
)
def test_a_tool_call_whose_output_could_not_matter_is_not_flagged(truth: dict[str, Any]) -> None:
    assert unanswered_tool_calls(truth) == []
