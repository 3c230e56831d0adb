"""The reconciliation's judgement of tool calls left without an output, on ground truths
shaped like the emulator's."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.reconcile import (
    ANSWER_WITHIN_S,
    LOST_WITH_A_RUNNER_S,
    tool_calls_lost_with_a_runner,
    unanswered_tool_calls,
)

T0 = 1_750_000_000.0


def _span(closed_after_s: float | None, by: str = "client", code: int = 1006) -> dict[str, Any]:
    if closed_after_s is None:
        return {"opened_at": T0 - 5.0, "closed_at": None, "closed_by": None, "close_code": None}
    closed = {"closed_at": T0 + closed_after_s, "closed_by": by, "close_code": code}
    return {"opened_at": T0 - 5.0, **closed}


def _truth(
    name: str,
    *,
    ended_after_s: float,
    ended_by: str = "caller",
    answered: bool = False,
    delivered: bool = True,
    took_it: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A call whose model made one function call at ``T0``, taken by the socket
    ``took_it`` (by default one that lasted to the call's end)."""
    call = {"type": "response.function_call_arguments.done", "call_id": "call_1", "name": name}
    outputs = [{"call_id": "call_1", "name": name, "output": "{}", "at": T0 + 0.1}]
    span = took_it or _span(ended_after_s, by="server", code=1000)
    issued = {"call_id": "call_1", "name": name, "at": T0, "delivered": delivered}
    return {
        "events_sent": [{"type": "response.created"}, call],
        "function_calls": [issued | {"attachments": [0] if delivered else []}],
        "attachments": [span],
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


def test_a_tool_call_whose_runner_died_with_it_is_counted_apart() -> None:
    """Its socket went without a close frame right after the event: the runner's
    process died before it could note the call anywhere the next runner looks."""
    for code in (1005, 1006):  # the web server says 1005 for a connection lost once open
        truth = _truth("lookup_order", ended_after_s=30.0, took_it=_span(0.2, code=code))
        assert tool_calls_lost_with_a_runner(truth) == ["call_1"]
        assert unanswered_tool_calls(truth) == []


@pytest.mark.parametrize(
    "took_it",
    [
        _span(LOST_WITH_A_RUNNER_S + 1.0),  # the runner lived on: it should have noted it
        _span(0.2, code=1000),  # the runner closed it (let go): it heard the call
        _span(0.2, by="server", code=1011),  # the API dropped it: the runner lives on
        _span(None),  # never closed before the end
    ],
    ids=["died later", "closed by the runner", "dropped by the api", "still open"],
)
def test_a_tool_call_a_living_runner_lost_is_flagged(took_it: dict[str, Any]) -> None:
    truth = _truth("lookup_order", ended_after_s=30.0, took_it=took_it)
    assert tool_calls_lost_with_a_runner(truth) == []
    assert unanswered_tool_calls(truth) == ["call_1"]


def test_a_tool_call_is_lost_with_a_runner_only_if_the_call_outlived_the_socket() -> None:
    died_at_the_end = _truth("lookup_order", ended_after_s=30.0, took_it=_span(30.0))
    assert tool_calls_lost_with_a_runner(died_at_the_end) == []
    assert unanswered_tool_calls(died_at_the_end) == ["call_1"]
    answered = _truth("lookup_order", ended_after_s=30.0, answered=True, took_it=_span(0.2))
    assert tool_calls_lost_with_a_runner(answered) == []
