"""Session plans: transfer targets and the validation done when a plan is built."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from shared.errors import ConfigError
from tests.support.session_driver import TARGETS, make_plan
from workers.sessions.plan import (
    IdlePolicy,
    SayText,
    ToolSpec,
    TransferTo,
    WrapUp,
    is_transfer_uri,
    resolve_target,
)


@pytest.mark.parametrize(
    ("target", "uri"),
    [
        ("sales", "sip:sales@example.com"),
        ("sip:agent@example.com", "sip:agent@example.com"),
        (
            "sip:+14155550123@sip.example.com;transport=tls",
            "sip:+14155550123@sip.example.com;transport=tls",
        ),
        ("sip:pbx.example.com", "sip:pbx.example.com"),
        ("tel:+14155550123", "tel:+14155550123"),
        ("tel:+1-415-555-0123;ext=12", "tel:+1-415-555-0123;ext=12"),
        ("Sales", None),
        ("sip:", None),
        ("sip:a@", None),
        ("sip:agent @example.com", None),
        ("sips:agent@example.com", None),
        ("tel:", None),
        ("tel:abc", None),
        ("https://example.com", None),
        ("", None),
        (None, None),
        (["sales"], None),
    ],
)
def test_resolve_target(target: Any, uri: str | None) -> None:
    assert resolve_target(target, TARGETS) == uri


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"model": "gpt-5"}, "no price for model 'gpt-5'"),
        ({"transfer_targets": {"x": "http://x"}}, "transfer target 'x' is not a sip:/tel: URI"),
        ({"tools": (ToolSpec("a"), ToolSpec("a"))}, "duplicate tool names"),
        ({"tools": (ToolSpec("a", 0),)}, "tool 'a' needs timeout_s > 0"),
        ({"dtmf": {"X": SayText("hi")}}, "DTMF key 'X'"),
        ({"dtmf": {"1": TransferTo("mars")}}, "transfers to unknown target 'mars'"),
        ({"dtmf": {"1": SayText("  ")}}, "says nothing"),
        ({"idle": IdlePolicy("x", max_prompts=-1)}, "max_prompts"),
        ({"max_duration_s": 0}, "max_duration_s must be > 0"),
        ({"budget_usd": Decimal(0)}, "budget_usd must be > 0"),
        ({"budget_wrap_up": WrapUp(transfer_to="mars")}, "budget wrap-up transfers to unknown"),
        ({"max_duration_wrap_up": WrapUp(grace_s=-1)}, "grace_s must be >= 0"),
    ],
)
def test_bad_plans_are_refused_with_the_reason(overrides: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError, match="invalid session plan for rtc_test") as caught:
        make_plan(**overrides)
    assert problem in str(caught.value)


def test_a_dated_snapshot_model_is_a_valid_plan() -> None:
    plan = make_plan(model="gpt-realtime-mini-2025-12-15")
    assert plan.price_table.resolve(plan.model) == "gpt-realtime-mini"
    assert is_transfer_uri("tel:+1555")
