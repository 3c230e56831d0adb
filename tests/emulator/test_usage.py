"""Usage accounting: the fixed token rules, the cache rule, and that ground truth equals
the sum of the usage blocks a client received."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from emulator.state import USAGE_FIELDS
from emulator.usage import (
    ContextEntry,
    UsageMeter,
    caller_audio_tokens,
    model_audio_tokens,
    speech_s,
    text_tokens,
)
from tests.emulator.sideband_agent import TOOLS, fast_emulator, place_and_accept, run_agent, sdk


@pytest.mark.parametrize(
    ("text", "tokens"),
    [("", 0), ("Hi, Ann!", 4), ("order 12345", 2), ('{"order_id":"1"}', 9), ("  a  b ", 2)],
)
def test_text_tokens_rule(text: str, tokens: int) -> None:
    assert text_tokens(text) == tokens


def test_speech_and_audio_rates() -> None:
    assert speech_s("one two three four five") == 2.0  # 2.5 words per second
    assert speech_s("hi") == 0.4  # never shorter than the minimum
    assert caller_audio_tokens(2.0) == 20  # 10 tokens per second of caller audio
    assert model_audio_tokens(2.0) == 40  # 20 tokens per second of model audio
    assert caller_audio_tokens(0.25) == 3  # rounded half up


def test_cached_tokens_are_the_prefix_shared_with_the_previous_input() -> None:
    meter = UsageMeter()
    header = ContextEntry("hdr:a", text_tokens=50)
    user = ContextEntry("item_1", audio_tokens=30)
    reply = ContextEntry("item_2", audio_tokens=80)
    first = meter.bill([header, user], output_text_tokens=5, output_audio_tokens=80)
    assert (first.cached_text_tokens, first.cached_audio_tokens) == (0, 0)
    assert (first.input_tokens, first.output_tokens) == (80, 85)
    second = meter.bill([header, user, reply, ContextEntry("item_3", 7)], 5, 60)
    assert (second.cached_text_tokens, second.cached_audio_tokens) == (50, 30)
    assert (second.input_text_tokens, second.input_audio_tokens) == (57, 110)
    busted = meter.bill([ContextEntry("hdr:b", 60), user, reply], 1, 0)
    assert busted.cached_text_tokens + busted.cached_audio_tokens == 0


def test_event_and_ledger_shapes_agree() -> None:
    usage = UsageMeter().bill([ContextEntry("h", 10, 20)], 3, 40)
    body: dict[str, Any] = usage.as_event()
    flat = usage.as_ledger()
    assert set(flat) == set(USAGE_FIELDS)
    assert body["total_tokens"] == flat["total_tokens"] == 73
    assert body["input_token_details"]["audio_tokens"] == flat["input_audio_tokens"] == 20
    assert body["output_token_details"] == {"text_tokens": 3, "audio_tokens": 40}


def flatten(usage: Any) -> dict[str, int]:
    """The ground-truth keys of one SDK ``response.done.response.usage``."""
    cached = usage.input_token_details.cached_tokens_details
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "input_text_tokens": usage.input_token_details.text_tokens,
        "input_audio_tokens": usage.input_token_details.audio_tokens,
        "cached_tokens": usage.input_token_details.cached_tokens,
        "cached_text_tokens": cached.text_tokens,
        "cached_audio_tokens": cached.audio_tokens,
        "output_text_tokens": usage.output_token_details.text_tokens,
        "output_audio_tokens": usage.output_token_details.audio_tokens,
    }


async def test_ground_truth_equals_the_sum_of_received_usage() -> None:
    with fast_emulator() as emu:
        async with sdk(emu) as client:
            call_id = await place_and_accept(
                emu, client, "order-status", tools=TOOLS, instructions="You answer order calls."
            )
            received = await run_agent(client, call_id)
        truth = emu.call(call_id, events=False)
        ledger = emu.ledger()
    usages = [flatten(e.response.usage) for e in received if e.type == "response.done"]
    assert len(usages) == 3  # tool call, answer with the output, goodbye
    totals = {key: sum(u[key] for u in usages) for key in USAGE_FIELDS}
    assert truth["usage"] == totals
    assert ledger["usage"] == totals
    for usage in usages:
        assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
        assert usage["cached_tokens"] == usage["cached_text_tokens"] + usage["cached_audio_tokens"]
        assert usage["cached_tokens"] <= usage["input_tokens"]
    assert usages[0]["cached_tokens"] == 0
    assert all(u["cached_tokens"] > 0 for u in usages[1:])
    # The function call speaks no audio; the spoken answers do, at 20 tokens a second.
    assert usages[0]["output_audio_tokens"] == 0
    assert usages[1]["output_audio_tokens"] > 0
    # Instructions and tool definitions are read as text by every response.
    header = text_tokens("You answer order calls.")
    assert usages[0]["input_text_tokens"] > header
    # The whole conversation so far is input: it only grows.
    inputs = [u["input_tokens"] for u in usages]
    assert inputs == sorted(inputs)


TWO_TURNS = """\
description: Two turns of known length and wording.
steps:
  - say: Do you deliver on Sundays?
    seconds: 2.5
    reply: Yes, we deliver on Sundays.
  - say: Great, bye.
    seconds: 1.2
    reply: Goodbye!
"""


async def test_usage_of_a_scripted_call_is_exact(tmp_path: Path) -> None:
    (tmp_path / "two-turns.yaml").write_text(TWO_TURNS, encoding="utf-8")
    with fast_emulator(scenario_dirs=[tmp_path]) as emu:
        async with sdk(emu) as client:
            call_id = await place_and_accept(emu, client, "two-turns", instructions="Be brief.")
            received = await run_agent(client, call_id)
        truth = emu.call(call_id, events=False)
    first, second = [flatten(e.response.usage) for e in received if e.type == "response.done"]
    # Input: the instructions "Be brief." (3 text tokens) and 2.5 s of caller audio at
    # 10 tokens/s. Output: "Yes, we deliver on Sundays." is 7 text tokens, and its five
    # words take 2 s to say (2.5 words/s) at 20 tokens/s.
    assert first == {
        "input_tokens": 28,
        "output_tokens": 47,
        "total_tokens": 75,
        "input_text_tokens": 3,
        "input_audio_tokens": 25,
        "cached_tokens": 0,
        "cached_text_tokens": 0,
        "cached_audio_tokens": 0,
        "output_text_tokens": 7,
        "output_audio_tokens": 40,
    }
    # Input: the same header and first turn (cached), the spoken reply (40 audio tokens)
    # and 1.2 s of caller audio. Output: "Goodbye!" is 2 text tokens; one word lasts the
    # 0.4 s minimum, 8 audio tokens.
    assert second == {
        "input_tokens": 80,
        "output_tokens": 10,
        "total_tokens": 90,
        "input_text_tokens": 3,
        "input_audio_tokens": 77,
        "cached_tokens": 28,
        "cached_text_tokens": 3,
        "cached_audio_tokens": 25,
        "output_text_tokens": 2,
        "output_audio_tokens": 8,
    }
    assert truth["usage"] == {key: first[key] + second[key] for key in USAGE_FIELDS}
