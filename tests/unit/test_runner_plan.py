"""The session plan built from a call's record and profile, and the re-attach policy."""

from __future__ import annotations

from decimal import Decimal

import pytest

from shared.models import CallRecord
from shared.policy_file import demo_policy
from shared.profile import DEFAULT_LIMIT_GOODBYE, DtmfAction
from workers.sessions import reattach
from workers.sessions.client_events import say_instructions
from workers.sessions.plan import HangUp, SayText, ToolSpec, TransferTo, WrapUp
from workers.sessions.plan_builder import TOOL_TIMEOUT_MARGIN_S, build_plan


def _record(profile: str | None, **extra: object) -> CallRecord:
    return CallRecord.model_validate(
        {"id": "rtc_1", "created_at": 1.0, "accepted_at": 2.0, "profile": profile, **extra}
    )


def test_the_support_profile_becomes_its_plan() -> None:
    policy = demo_policy()
    plan = build_plan(_record("support", greeting="Hi there."), policy)

    assert (plan.call_id, plan.model, plan.profile) == ("rtc_1", "gpt-realtime", "support")
    assert plan.greeting_instructions == say_instructions("Hi there.")
    lookup_s = policy.tools["lookup_order"].handler.timeout_s + TOOL_TIMEOUT_MARGIN_S
    assert plan.tools == (
        ToolSpec("lookup_order", lookup_s),
        ToolSpec("transfer_call"),
        ToolSpec("end_call"),
    )
    assert plan.dtmf == {"0": TransferTo("human")}
    assert plan.idle is not None
    assert plan.idle.max_prompts == 2
    assert plan.idle.prompt_instructions == say_instructions("Are you still there?")
    assert plan.budget_usd == Decimal("2.0")
    assert plan.max_duration_s == 900
    support = policy.profiles["support"]
    assert support.max_duration_wrap_up.goodbye is not None
    assert support.budget_wrap_up.goodbye is not None
    assert plan.max_duration_wrap_up == WrapUp(
        goodbye_instructions=say_instructions(support.max_duration_wrap_up.goodbye),
        transfer_to="human",
        grace_s=20,
    )
    assert plan.budget_wrap_up == WrapUp(
        goodbye_instructions=say_instructions(support.budget_wrap_up.goodbye), grace_s=15
    )
    assert plan.started_at == 2.0
    assert plan.transfer_targets == dict(policy.transfer_targets)
    assert plan.price_table == policy.prices


def test_a_profile_without_greeting_or_limits_has_none() -> None:
    plan = build_plan(_record("sales"), demo_policy())
    assert plan.model == "gpt-realtime-mini"
    assert plan.greeting_instructions is None
    assert plan.idle is None
    assert plan.budget_usd is None
    # Limits always end with words: the default goodbye when the profile names none.
    assert plan.max_duration_wrap_up == WrapUp(say_instructions(DEFAULT_LIMIT_GOODBYE))


def test_dtmf_hangup_and_say_actions_are_mapped() -> None:
    policy = demo_policy()
    dtmf = {
        "1": DtmfAction(action="hangup"),
        "2": DtmfAction(action="say", text="Our hours are nine to five."),
    }
    profile = policy.profiles["support"].model_copy(update={"dtmf": dtmf})
    policy = policy.model_copy(update={"profiles": {**policy.profiles, "support": profile}})
    plan = build_plan(_record("support"), policy)
    assert plan.dtmf == {"1": HangUp(), "2": SayText("Our hours are nine to five.")}


@pytest.mark.parametrize(
    ("snapshot", "model"),
    [(None, "gpt-realtime"), ({"model": "gpt-realtime-mini"}, "gpt-realtime-mini")],
)
def test_a_call_whose_profile_is_gone_runs_on_a_bare_plan(
    snapshot: dict[str, str] | None, model: str
) -> None:
    plan = build_plan(_record("removed"), demo_policy(), snapshot)
    assert plan.model == model
    assert plan.tools == (ToolSpec("end_call"),)
    assert plan.greeting_instructions is None


@pytest.mark.parametrize(
    ("code", "meaning"), [(1000, "caller"), (1006, "drop"), (1011, "drop"), (None, "drop")]
)
def test_a_close_means_the_end_only_when_normal(code: int | None, meaning: str) -> None:
    assert reattach.on_close(code) == meaning


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (404, "caller"),
        (None, "retry"),
        (500, "retry"),
        (503, "retry"),
        (429, "retry"),
        (408, "retry"),
        (401, "error"),
        (403, "error"),
        (400, "error"),
    ],
)
def test_a_refused_attach_is_retried_only_when_transient(status: int | None, verdict: str) -> None:
    assert reattach.on_refused(status) == verdict


def test_attach_retries_back_off_and_stop_at_the_deadline() -> None:
    first = reattach.retry_in_s(1, 0.0, 0.0)
    later = reattach.retry_in_s(6, 0.0, 5.0)
    assert first is not None
    assert later is not None
    assert first < later <= reattach.ATTACH_BACKOFF.max_s
    assert reattach.retry_in_s(3, 0.0, reattach.ATTACH_DEADLINE_S) is None
