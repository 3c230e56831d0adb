"""Everything the session core needs to know about one call, fixed when it is attached.

A ``SessionPlan`` is built from the routing policy's profile by whoever hands the call
to a runner; it does not depend on the policy file's schema. Texts named ``*_instructions``
are instructions for one response (``response.create.response.instructions``), so they
say what the agent should do ("Greet the caller ..."); literal texts to be spoken (DTMF
``SayText``, the ``say`` command, announcements) are wrapped by the core instead.

Building a plan validates it: the model must be priced, every transfer target must be a
``sip:``/``tel:`` URI or a named target, and so on; a bad plan raises ``ConfigError``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from shared.errors import ConfigError
from shared.pricing import PriceTable, default_price_table

BUILTIN_TOOLS = frozenset({"transfer_call", "end_call"})
DTMF_KEYS = frozenset("0123456789*#ABCD")

_SIP_URI = re.compile(r"sip:([^\s@<>\"]+@)?[^\s@<>\"]+")
_TEL_URI = re.compile(r"tel:\+?[0-9][0-9().-]*(;[^\s;<>\"]+)*")


def is_transfer_uri(target: str) -> bool:
    """Whether ``target`` is a ``sip:`` or ``tel:`` URI usable as a SIP ``Refer-To``."""
    return bool(_SIP_URI.fullmatch(target) or _TEL_URI.fullmatch(target))


def resolve_target(target: object, named: Mapping[str, str]) -> str | None:
    """The URI for a named target or a literal URI; ``None`` when it is neither."""
    if not isinstance(target, str):
        return None
    if target in named:
        return named[target]
    return target if is_transfer_uri(target) else None


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool the model may call: a built-in (``transfer_call``, ``end_call``) or configured."""

    name: str
    timeout_s: float = 10.0


@dataclass(frozen=True, slots=True)
class TransferTo:
    """DTMF action: blind-transfer the caller to a named target or URI."""

    target: str


@dataclass(frozen=True, slots=True)
class HangUp:
    """DTMF action: end the call (recorded as the caller's hangup)."""


@dataclass(frozen=True, slots=True)
class SayText:
    """DTMF action: have the agent say this text."""

    text: str


DtmfAction = TransferTo | HangUp | SayText


@dataclass(frozen=True, slots=True)
class IdlePolicy:
    """What to do on ``input_audio_buffer.timeout_triggered`` (the caller is silent)."""

    prompt_instructions: str
    max_prompts: int = 2
    """Prompts before the call ends with reason ``idle``; caller speech resets the count."""
    goodbye_instructions: str | None = None


@dataclass(frozen=True, slots=True)
class WrapUp:
    """How a call that reaches a limit (duration, budget) is brought to an end.

    The wrap-up (``goodbye_instructions``, then a transfer or a hangup) has ``grace_s``
    to happen: the max-duration wrap-up starts ``grace_s`` before ``max_duration_s``,
    so the call never runs past it; the budget wrap-up starts when the cost reaches the
    budget and the hard stop comes ``grace_s`` later (or at the max duration, if sooner).
    """

    goodbye_instructions: str | None = None
    transfer_to: str | None = None
    """A named target or URI: transfer instead of hanging up."""
    grace_s: float = 15.0
    """Time the wrap-up has before the hard stop, however the goodbye is going."""
    end_when_spoken: bool = True
    """End as soon as the goodbye has played; false: let the conversation run the grace."""


@dataclass(frozen=True, slots=True)
class SessionPlan:
    """One call's configuration for the session core (see the module docstring)."""

    call_id: str
    model: str
    profile: str
    price_table: PriceTable = field(default_factory=default_price_table)
    greeting_instructions: str | None = None
    tools: tuple[ToolSpec, ...] = ()
    dtmf: Mapping[str, DtmfAction] = field(default_factory=dict)
    idle: IdlePolicy | None = None
    max_duration_s: float | None = None
    max_duration_wrap_up: WrapUp = field(default_factory=WrapUp)
    budget_usd: Decimal | None = None
    budget_wrap_up: WrapUp = field(default_factory=WrapUp)
    transfer_targets: Mapping[str, str] = field(default_factory=dict)
    started_at: float | None = None
    """Wall-clock start of the call (accept time); defaults to the first attach."""
    finale_timeout_s: float = 10.0
    """Longest wait for the agent's last words before a transfer or hangup goes ahead."""

    def __post_init__(self) -> None:
        problems = list(self._problems())
        if problems:
            raise ConfigError(f"invalid session plan for {self.call_id}: " + "; ".join(problems))

    def tool(self, name: object) -> ToolSpec | None:
        """The tool called ``name``, if the plan offers it."""
        return next((spec for spec in self.tools if spec.name == name), None)

    def resolve(self, target: object) -> str | None:
        return resolve_target(target, self.transfer_targets)

    def _problems(self) -> list[str]:
        found: list[str] = []
        try:
            self.price_table.resolve(self.model)
        except ValueError as exc:
            found.append(str(exc))
        for name, uri in self.transfer_targets.items():
            if not is_transfer_uri(uri):
                found.append(f"transfer target {name!r} is not a sip:/tel: URI: {uri!r}")
        names = [spec.name for spec in self.tools]
        if len(set(names)) != len(names):
            found.append(f"duplicate tool names in {names}")
        found += [f"tool {s.name!r} needs timeout_s > 0" for s in self.tools if s.timeout_s <= 0]
        for key, action in self.dtmf.items():
            if key not in DTMF_KEYS:
                found.append(f"DTMF key {key!r} is not one of 0-9 * # A-D")
            if isinstance(action, TransferTo) and self.resolve(action.target) is None:
                found.append(f"DTMF {key!r} transfers to unknown target {action.target!r}")
            if isinstance(action, SayText) and not action.text.strip():
                found.append(f"DTMF {key!r} says nothing")
        if self.idle is not None and self.idle.max_prompts < 0:
            found.append("idle.max_prompts must be >= 0")
        if self.max_duration_s is not None and self.max_duration_s <= 0:
            found.append("max_duration_s must be > 0")
        if self.budget_usd is not None and self.budget_usd <= 0:
            found.append("budget_usd must be > 0")
        for label, wrap in (
            ("max_duration", self.max_duration_wrap_up),
            ("budget", self.budget_wrap_up),
        ):
            if wrap.transfer_to is not None and self.resolve(wrap.transfer_to) is None:
                found.append(f"{label} wrap-up transfers to unknown target {wrap.transfer_to!r}")
            if wrap.grace_s < 0:
                found.append(f"{label} wrap-up grace_s must be >= 0")
        if self.finale_timeout_s < 0:
            found.append("finale_timeout_s must be >= 0")
        return found
