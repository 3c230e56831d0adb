"""Routing decisions as a pure function: who gets which profile, who is turned away.

``decide(call, policy, now, load)`` walks the routes in order; the first whose match
holds decides. An accept then meets capacity: with room it stays an accept, without
it the call either waits (keeps ringing, checked again after ``poll_s``) or is rejected
with the configured code once ``max_wait_s`` since its arrival has passed.

The load given here is a snapshot and only advisory: the atomic word on capacity is
``workers.admission``. When its acquire finds the house full after all (a race with
another worker), the caller asks ``when_full`` what to do, with the same rules.

No I/O and no clock: ``now`` and the load are parameters, so tests are tables.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from urllib.parse import unquote

from shared.models import CallRecord
from shared.policy import AcceptAction, Match, Policy, Schedule, normalize_number


@dataclass(frozen=True)
class CallFacts:
    """What routing may look at: numbers, SIP headers and the arrival time of a call."""

    call_id: str
    caller: str
    """The user part of the From URI, separators removed (``+14155550100``)."""
    called: str
    """The user part of the To URI, separators removed."""
    received_at: float
    """Unix seconds when the call was announced; waiting for capacity counts from here."""
    sip_headers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Lower-cased header name -> every value it had, in order."""

    @classmethod
    def from_record(cls, record: CallRecord) -> CallFacts:
        headers: dict[str, tuple[str, ...]] = {}
        for header in record.sip_headers:
            name = header.name.lower()
            headers[name] = (*headers.get(name, ()), header.value)
        return cls(
            call_id=record.id,
            caller=sip_user(record.from_ or _first(headers, "from")),
            called=sip_user(record.to or _first(headers, "to")),
            received_at=record.created_at,
            sip_headers=headers,
        )

    def header(self, name: str) -> str:
        """The first value of header ``name`` (any case), or an empty string."""
        return _first(self.sip_headers, name.lower())


def _first(headers: Mapping[str, tuple[str, ...]], name: str) -> str:
    values = headers.get(name, ())
    return values[0] if values else ""


def sip_user(uri: str) -> str:
    """The user part of a SIP/tel URI or name-addr, as routes compare numbers."""
    text = uri.strip()
    if "<" in text and ">" in text:
        text = text[text.index("<") + 1 : text.index(">")]
    lowered = text.lower()
    for scheme in ("sips:", "sip:", "tel:"):
        if lowered.startswith(scheme):
            text = text[len(scheme) :]
            break
    text = text.split("@", 1)[0].split(";", 1)[0]
    return normalize_number(unquote(text))


@dataclass(frozen=True)
class Load:
    """Calls holding an admission slot now: cluster-wide and per profile."""

    active: int = 0
    per_profile: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Accept:
    """Answer with ``profile``."""

    profile: str
    route: str | None = None


@dataclass(frozen=True)
class Reject:
    """Refuse with SIP ``code``; ``reason`` is recorded (``blocked``, ``capacity``...)."""

    code: int
    reason: str
    route: str | None = None


@dataclass(frozen=True)
class Wait:
    """No room yet: keep ringing and decide again in ``retry_in_s``."""

    profile: str
    retry_in_s: float
    route: str | None = None


Decision = Accept | Reject | Wait


def decide(call: CallFacts, policy: Policy, now: dt.datetime, load: Load) -> Decision:
    """The decision for ``call`` at ``now`` (timezone-aware) under ``load``."""
    route_name: str | None = None
    action = policy.default
    for index, route in enumerate(policy.routes):
        if matches(route.match, call, policy, now):
            action, route_name = route.action, route.name or f"routes[{index}]"
            break
    if not isinstance(action, AcceptAction):
        return Reject(action.code, action.reason, route_name)
    if has_room(policy, action.profile, load):
        return Accept(action.profile, route_name)
    return when_full(call, policy, action.profile, now, route_name)


def has_room(policy: Policy, profile: str, load: Load) -> bool:
    """Whether one more call fits under the cluster cap and the profile's cap."""
    cap = policy.capacity.max_calls
    if cap is not None and load.active >= cap:
        return False
    profile_cap = policy.profile_cap(profile)
    return profile_cap is None or load.per_profile.get(profile, 0) < profile_cap


def when_full(
    call: CallFacts, policy: Policy, profile: str, now: dt.datetime, route: str | None = None
) -> Wait | Reject:
    """Wait for a slot while the configured ringing time lasts, then reject."""
    rule = policy.capacity.when_full
    left_s = call.received_at + rule.max_wait_s - now.timestamp()
    if left_s <= 0:
        return Reject(rule.code, rule.reason, route)
    return Wait(profile, min(rule.poll_s, left_s), route)


def matches(match: Match, call: CallFacts, policy: Policy, now: dt.datetime) -> bool:
    """Whether every condition of ``match`` holds for ``call`` at ``now``."""
    if match.called is not None and call.called not in match.called:
        return False
    if match.caller is not None and call.caller not in match.caller:
        return False
    if match.called_prefix is not None and not call.called.startswith(tuple(match.called_prefix)):
        return False
    if match.caller_prefix is not None and not call.caller.startswith(tuple(match.caller_prefix)):
        return False
    for name, wanted in match.sip_headers.items():
        accepted = (wanted,) if isinstance(wanted, str) else tuple(wanted)
        if not any(value in accepted for value in call.sip_headers.get(name.lower(), ())):
            return False
    if match.during is not None and not is_open(policy.schedules[match.during], now):
        return False
    return match.outside is None or not is_open(policy.schedules[match.outside], now)


_DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@cache
def _zone(name: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(name)


def is_open(schedule: Schedule, now: dt.datetime) -> bool:
    """Whether ``schedule`` is open at the instant ``now``, in the schedule's own zone."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    local = now.astimezone(_zone(schedule.timezone))
    if local.date() in schedule.closed_dates:
        return False
    today = _DAY_NAMES[local.weekday()]
    yesterday = _DAY_NAMES[(local.weekday() - 1) % 7]
    clock = local.time().replace(tzinfo=None)
    for window in schedule.windows:
        if window.end == "24:00":
            if today in window.days and clock >= window.start:
                return True
        elif window.start < window.end:
            if today in window.days and window.start <= clock < window.end:
                return True
        elif (today in window.days and clock >= window.start) or (
            yesterday in window.days and clock < window.end
        ):
            # Past midnight: the window belongs to the day it started on.
            return True
    return False
