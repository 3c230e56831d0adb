"""The routing policy: what an operator configures, as validated value objects.

A policy holds ``profiles`` (how the AI agent behaves on a call), ``routes`` (which
calls get which profile, or are rejected), ``schedules`` (opening hours in a time zone),
``capacity`` (how many calls at once, and what a full house answers), named
``transfer_targets`` and ``tools`` that profiles may offer the model. Every model
forbids unknown fields, so a typo in the YAML is an error with its line, not a silently
ignored setting. Cross references (a route naming a profile, a profile naming a tool)
are checked by ``Policy`` itself; ``shared.policy_file`` loads and reloads the file.

The profile parts live in ``shared.profile``; this module holds routing and capacity.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from functools import cached_property
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from shared.errors import ConfigError
from shared.pricing import PriceTable, UnknownModelError, default_price_table
from shared.profile import BUILTIN_TOOLS, Profile, SipUri, ToolDef, valid_tool_name
from shared.webhook_signature import signing_key

Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
SipCode = Annotated[int, Field(ge=400, le=699)]
"""A final SIP failure code; 3xx redirects make no sense without a Contact to send."""
StrList = Annotated[list[str], Field(min_length=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Window(_Strict):
    """Opening hours on some days: ``start`` <= local time < ``end``.

    An ``end`` before ``start`` runs past midnight into the next day (a night shift);
    ``days`` name the day the window starts on. ``end: "24:00"`` means midnight.
    """

    days: list[Day] = Field(default_factory=lambda: list(DAYS), min_length=1)
    start: dt.time = dt.time(0, 0)
    end: dt.time | Literal["24:00"] = "24:00"


class Schedule(_Strict):
    """Named opening hours in one IANA time zone, with optional closed dates."""

    timezone: str
    windows: list[Window] = Field(min_length=1)
    closed_dates: list[dt.date] = Field(default_factory=list)
    """Whole local days (holidays) when no window is open."""

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as err:
            raise ValueError(f"unknown time zone {value!r} (use an IANA name)") from err
        return value


class Match(_Strict):
    """Conditions of a route; all given conditions must hold, an empty match always holds.

    Numbers are compared on the user part of the SIP URI (``+14155550100`` in
    ``sip:+14155550100@host``) with spaces, dashes, dots and parentheses removed.
    Header values match exactly; a list means "any of these".
    """

    called: StrList | None = None
    called_prefix: StrList | None = None
    caller: StrList | None = None
    caller_prefix: StrList | None = None
    sip_headers: dict[str, str | StrList] = Field(default_factory=dict)
    during: str | None = None
    """Name of a schedule that must be open now."""
    outside: str | None = None
    """Name of a schedule that must be closed now (after hours, holidays)."""

    @field_validator("called", "called_prefix", "caller", "caller_prefix", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        # A number written without quotes reads as an integer; numbers are text here.
        if isinstance(value, str | int):
            value = [value]
        if isinstance(value, list):
            return [str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
        return value

    @field_validator("called", "called_prefix", "caller", "caller_prefix", mode="after")
    @classmethod
    def _numbers(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        cleaned = [normalize_number(v) for v in value]
        if any(not v for v in cleaned):
            raise ValueError("numbers must not be empty")
        return cleaned


def normalize_number(value: str | int) -> str:
    """A number as routes compare it: visual separators removed."""
    return "".join(ch for ch in str(value) if ch not in " -.()")


class AcceptAction(_Strict):
    """Answer the call with a profile."""

    type: Literal["accept"]
    profile: str


class RejectAction(_Strict):
    """Refuse the call with a SIP status code (603 Decline unless told otherwise)."""

    type: Literal["reject"]
    code: SipCode = 603
    reason: str = "declined"


Action = Annotated[AcceptAction | RejectAction, Field(discriminator="type")]


class Route(_Strict):
    """One routing rule; the first route whose ``match`` holds decides the call."""

    name: str | None = None
    match: Match = Field(default_factory=Match)
    action: Action


class WhenFull(_Strict):
    """What a call meets when capacity is exhausted: ring up to ``max_wait_s``, then reject."""

    code: SipCode = 486
    reason: str = "capacity"
    max_wait_s: float = Field(default=0.0, ge=0, le=120)
    """0 rejects at once; otherwise the caller keeps ringing while a slot is awaited."""
    poll_s: float = Field(default=0.25, gt=0, le=5)
    """How often a waiting call checks for a free slot."""


class Capacity(_Strict):
    """Concurrent-call caps for the whole cluster and per profile (absent: unlimited)."""

    max_calls: int | None = Field(default=None, ge=0)
    per_profile: dict[str, Annotated[int, Field(ge=0)]] = Field(default_factory=dict)
    when_full: WhenFull = Field(default_factory=WhenFull)


class PostCallWebhook(_Strict):
    """Where the ``call.completed`` webhook of every ended call goes, and its signing secret.

    Deliveries are signed per Standard Webhooks (``shared.webhook_signature``); when the
    policy has none, ``SWITCHBOARD_POST_CALL_WEBHOOK_URL``/``_SECRET`` apply.
    """

    url: str = Field(pattern=r"^https?://")
    secret: SecretStr

    @field_validator("secret")
    @classmethod
    def _usable_secret(cls, value: SecretStr) -> SecretStr:
        try:
            signing_key(value.get_secret_value())
        except ConfigError as err:
            raise ValueError(str(err)) from None
        return value


class Policy(_Strict):
    """A whole routing policy, validated including every cross reference."""

    version: Literal[1] = 1
    profiles: dict[str, Profile] = Field(default_factory=dict)
    routes: list[Route] = Field(default_factory=list)
    default: Action = Field(
        default_factory=lambda: RejectAction(type="reject", code=404, reason="no_route")
    )
    """What happens to a call no route matches."""
    schedules: dict[str, Schedule] = Field(default_factory=dict)
    capacity: Capacity = Field(default_factory=Capacity)
    transfer_targets: dict[str, SipUri] = Field(default_factory=dict)
    tools: dict[str, ToolDef] = Field(default_factory=dict)
    pricing: PriceTable | None = None
    """Price overrides and additions on top of the built-in table (``shared.pricing``)."""
    post_call_webhook: PostCallWebhook | None = None

    @field_validator("tools")
    @classmethod
    def _tool_names(cls, value: dict[str, ToolDef]) -> dict[str, ToolDef]:
        for name in value:
            if name in BUILTIN_TOOLS:
                raise ValueError(f"{name!r} is built in and cannot be redefined")
            if not valid_tool_name(name):
                raise ValueError(f"tool name {name!r} must be 1-64 letters, digits, _ or -")
        return value

    @model_validator(mode="after")
    def _references(self) -> Policy:
        problems = list(self._reference_problems())
        if problems:
            raise ValidationError.from_exception_data(
                "Policy",
                [
                    InitErrorDetails(
                        type=PydanticCustomError("reference", message), loc=loc, input=value
                    )
                    for loc, message, value in problems
                ],
            )
        return self

    def _reference_problems(self) -> list[tuple[tuple[str | int, ...], str, object]]:
        found: list[tuple[tuple[str | int, ...], str, object]] = []

        def need(
            name: str, known: dict[str, object], what: str, loc: tuple[str | int, ...]
        ) -> None:
            if name not in known:
                choices = ", ".join(sorted(known)) or "none defined"
                found.append((loc, f"unknown {what} {name!r} (known: {choices})", name))

        profiles: dict[str, object] = dict(self.profiles)
        schedules: dict[str, object] = dict(self.schedules)
        targets: dict[str, object] = dict(self.transfer_targets)
        tools: dict[str, object] = {**self.tools, **dict.fromkeys(BUILTIN_TOOLS)}
        for i, route in enumerate(self.routes):
            if isinstance(route.action, AcceptAction):
                need(route.action.profile, profiles, "profile", ("routes", i, "action", "profile"))
            for field in ("during", "outside"):
                name = getattr(route.match, field)
                if name is not None:
                    need(name, schedules, "schedule", ("routes", i, "match", field))
        if isinstance(self.default, AcceptAction):
            need(self.default.profile, profiles, "profile", ("default", "profile"))
        for name in self.capacity.per_profile:
            need(name, profiles, "profile", ("capacity", "per_profile", name))
        prices = self.prices
        for pname, profile in self.profiles.items():
            base: tuple[str | int, ...] = ("profiles", pname)
            try:
                prices.resolve(profile.model)
            except UnknownModelError as err:
                found.append(((*base, "model"), f"{err} (add it under pricing)", profile.model))
            for i, tool in enumerate(profile.tools):
                need(tool, tools, "tool", (*base, "tools", i))
            for i, target in enumerate(profile.transfer_targets or ()):
                need(target, targets, "transfer target", (*base, "transfer_targets", i))
            for key, dtmf in profile.dtmf.items():
                if dtmf.action == "transfer" and dtmf.target is not None:
                    need(dtmf.target, targets, "transfer target", (*base, "dtmf", key, "target"))
            for limit in ("max_duration_wrap_up", "budget_wrap_up"):
                transfer = getattr(profile, limit).transfer
                if transfer is not None:
                    need(transfer, targets, "transfer target", (*base, limit, "transfer"))
            if "transfer_call" in profile.tools and not self.targets_for(profile):
                found.append(
                    ((*base, "tools"), "transfer_call needs at least one transfer target", None)
                )
        return found

    @cached_property
    def prices(self) -> PriceTable:
        """The built-in price table, extended by this policy's ``pricing`` if it has one."""
        table = default_price_table()
        return table.extended(self.pricing) if self.pricing is not None else table

    def targets_for(self, profile: Profile) -> dict[str, str]:
        """The named transfer targets ``profile`` may use (all of them unless it lists some)."""
        if profile.transfer_targets is None:
            return dict(self.transfer_targets)
        return {
            n: self.transfer_targets[n]
            for n in profile.transfer_targets
            if n in self.transfer_targets
        }

    def profile_cap(self, profile: str) -> int | None:
        """The per-profile concurrent-call cap, or ``None`` for unlimited."""
        return self.capacity.per_profile.get(profile)
