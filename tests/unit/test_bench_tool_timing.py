"""The tool-overhead benchmark's pairing of the emulator's clocks (``bench.tool_timing``)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from bench.tool_timing import tool_timings


def output(tool_call_id: str, own_ms: float | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"status": "shipped"}
    if own_ms is not None:
        body["own_ms"] = own_ms
    text = orjson.dumps(body).decode()
    item = {"type": "function_call_output", "call_id": tool_call_id, "output": text}
    return {"type": "conversation.item.create", "item": item}


CREATE = {"type": "response.create"}


def test_an_output_is_timed_to_the_response_create_after_it_minus_the_tools_own_time() -> None:
    sent = {("rtc_1", "call_a"): 100.0}
    received = {"rtc_1": [(100.004, output("call_a", own_ms=1.0)), (100.005, CREATE)]}
    [timing], unanswered = tool_timings(sent, received)
    assert unanswered == 0
    assert timing.overhead_s == pytest.approx(0.004)
    assert timing.to_output_s == pytest.approx(0.004)


def test_outputs_of_one_response_share_its_single_response_create() -> None:
    sent = {("rtc_1", "call_a"): 10.0, ("rtc_1", "call_b"): 10.0}
    received = {"rtc_1": [(10.002, output("call_a")), (10.003, output("call_b")), (10.004, CREATE)]}
    timings, _ = tool_timings(sent, received)
    assert sorted(t.tool_call_id for t in timings) == ["call_a", "call_b"]
    assert {round(t.overhead_s, 6) for t in timings} == {0.004}


def test_a_create_before_the_output_does_not_count_and_a_missing_one_is_reported() -> None:
    sent = {("rtc_1", "call_a"): 10.0, ("rtc_2", "call_b"): 10.0}
    received = {
        "rtc_1": [(9.0, CREATE), (10.002, output("call_a")), (10.010, CREATE)],
        "rtc_2": [(10.002, output("call_b"))],
    }
    [timing], unanswered = tool_timings(sent, received)
    assert timing.call_id == "rtc_1"
    assert timing.overhead_s == pytest.approx(0.010)
    assert unanswered == 1


def test_outputs_of_tool_calls_not_stamped_are_ignored() -> None:
    received = {"rtc_1": [(10.0, output("call_x")), (10.1, CREATE)]}
    assert tool_timings({}, received) == ([], 0)


@pytest.mark.parametrize("text", ["not json", '"a string"', '{"own_ms": "fast"}', "{}"])
def test_an_output_without_a_usable_own_time_counts_as_zero(text: str) -> None:
    event = output("call_a")
    event["item"]["output"] = text
    sent = {("rtc_1", "call_a"): 1.0}
    [timing], _ = tool_timings(sent, {"rtc_1": [(1.5, event), (2.0, CREATE)]})
    assert timing.own_s == 0.0
    assert timing.overhead_s == pytest.approx(1.0)
