"""The session plan of one call, built from its record and the routing policy's profile.

The control worker accepted the call with a profile (``record.profile``) and wrote the
rendered greeting into the record; this module turns that profile into the
``SessionPlan`` the session core runs on. Texts the profile gives as words to speak
(greeting, idle prompt and goodbye, DTMF ``say``, the limits' wrap-up goodbyes) become
response instructions that speak them verbatim. Every named transfer target of the
policy is known to the plan, so an operator may transfer to any of them; the model is
offered only the profile's own (in the accept body).

A call whose profile is no longer in the policy (a reload removed it) keeps running on
a bare plan: the model of its snapshot (or the default model), only the built-in tools.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from shared.models import CallRecord
from shared.policy import Policy
from shared.profile import BUILTIN_TOOLS, Profile
from shared.profile import DtmfAction as ProfileDtmf
from shared.profile import WrapUp as ProfileWrapUp
from workers.sessions.client_events import say_instructions
from workers.sessions.plan import (
    DtmfAction,
    HangUp,
    IdlePolicy,
    SayText,
    SessionPlan,
    ToolSpec,
    TransferTo,
    WrapUp,
)

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "gpt-realtime"
TOOL_TIMEOUT_MARGIN_S = 0.5
"""The core waits this much beyond a handler's own timeout, so the handler reports first."""


def build_plan(
    record: CallRecord, policy: Policy, snapshot: Mapping[str, Any] | None = None
) -> SessionPlan:
    """The plan for ``record``'s call under ``policy`` (see the module docstring)."""
    profile = policy.profiles.get(record.profile or "")
    if profile is None:
        logger.warning(
            "call %s: profile %r is not in the policy; running without tools or limits",
            record.id,
            record.profile,
        )
        model = snapshot.get("model") if snapshot is not None else None
        return SessionPlan(
            call_id=record.id,
            model=model if isinstance(model, str) else DEFAULT_MODEL,
            profile=record.profile or "",
            price_table=policy.prices,
            tools=(ToolSpec("end_call"),),
            transfer_targets=dict(policy.transfer_targets),
            started_at=record.accepted_at,
        )
    greeting = (record.model_extra or {}).get("greeting")
    return SessionPlan(
        call_id=record.id,
        model=profile.model,
        profile=record.profile or "",
        price_table=policy.prices,
        greeting_instructions=say_instructions(greeting) if greeting else None,
        tools=_tools(profile, policy),
        dtmf={key: _dtmf(action) for key, action in profile.dtmf.items()},
        idle=_idle(profile),
        max_duration_s=profile.max_duration_s,
        max_duration_wrap_up=_wrap_up(profile.max_duration_wrap_up),
        budget_usd=Decimal(str(profile.budget_usd)) if profile.budget_usd is not None else None,
        budget_wrap_up=_wrap_up(profile.budget_wrap_up),
        transfer_targets=dict(policy.transfer_targets),
        started_at=record.accepted_at,
    )


def _tools(profile: Profile, policy: Policy) -> tuple[ToolSpec, ...]:
    specs = []
    for name in profile.tools:
        if name in BUILTIN_TOOLS:
            specs.append(ToolSpec(name))
        else:
            handler_timeout_s = policy.tools[name].handler.timeout_s
            specs.append(ToolSpec(name, handler_timeout_s + TOOL_TIMEOUT_MARGIN_S))
    return tuple(specs)


def _dtmf(action: ProfileDtmf) -> DtmfAction:
    if action.action == "transfer":
        return TransferTo(action.target or "")
    if action.action == "hangup":
        return HangUp()
    return SayText(action.text or "")


def _idle(profile: Profile) -> IdlePolicy | None:
    idle = profile.idle
    if idle is None:
        return None
    return IdlePolicy(
        prompt_instructions=say_instructions(idle.prompt),
        max_prompts=idle.max_prompts,
        goodbye_instructions=say_instructions(idle.goodbye) if idle.goodbye else None,
    )


def _wrap_up(wrap: ProfileWrapUp) -> WrapUp:
    return WrapUp(
        goodbye_instructions=say_instructions(wrap.goodbye) if wrap.goodbye else None,
        transfer_to=wrap.transfer,
        grace_s=wrap.grace_s,
    )
