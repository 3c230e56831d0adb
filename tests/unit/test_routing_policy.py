"""``decide``: routes, schedules in time zones, capacity, waiting — as tables."""

from __future__ import annotations

import datetime as dt
import textwrap
from zoneinfo import ZoneInfo

import pytest

from shared.models import CallRecord, SipHeader
from shared.policy import Policy
from shared.policy_file import parse_policy
from workers.policy import (
    Accept,
    CallFacts,
    Decision,
    Load,
    Reject,
    Wait,
    decide,
    is_open,
    sip_user,
)

POLICY = parse_policy(
    textwrap.dedent(
        """\
        schedules:
          office:
            timezone: America/New_York
            windows:
              - {days: [mon, tue, wed, thu, fri], start: "09:00", end: "17:00"}
            closed_dates: [2026-12-25]
          nights:
            timezone: Asia/Tokyo
            windows:
              - {days: [fri], start: "22:00", end: "06:00"}
        profiles:
          support: {instructions: Support}
          vip: {instructions: VIP}
          sales: {instructions: Sales}
          japan: {instructions: Japan night desk}
        routes:
          - name: blocked
            match: {caller: ["+1 (555) 000-6660", "+15550006661"]}
            action: {type: reject, code: 603, reason: blocked}
          - name: vip header
            match: {sip_headers: {X-Tier: [gold, platinum]}}
            action: {type: accept, profile: vip}
          - name: sales after hours
            match: {called: "+18005550199", outside: office}
            action: {type: reject, code: 480, reason: after_hours}
          - name: sales
            match: {called: "+18005550199"}
            action: {type: accept, profile: sales}
          - name: japan nights
            match: {called_prefix: "+81", during: nights}
            action: {type: accept, profile: japan}
          - name: toll free
            match: {called_prefix: ["+1800", "+1888"], caller_prefix: "+1"}
            action: {type: accept, profile: support}
        default: {type: reject, code: 404, reason: no_route}
        capacity:
          max_calls: 10
          per_profile: {sales: 2}
          when_full: {code: 486, max_wait_s: 5, poll_s: 0.5}
        """
    ),
    "policy.yaml",
)

NY = ZoneInfo("America/New_York")
WED_NOON_NY = dt.datetime(2026, 11, 18, 12, 0, tzinfo=NY)


def call(
    caller: str = "+14155550100",
    called: str = "+18005550100",
    headers: dict[str, str] | None = None,
    received_at: float | None = None,
) -> CallFacts:
    return CallFacts(
        call_id="rtc_1",
        caller=sip_user(caller),
        called=sip_user(called),
        received_at=WED_NOON_NY.timestamp() if received_at is None else received_at,
        sip_headers={k.lower(): (v,) for k, v in (headers or {}).items()},
    )


SALES = "+18005550199"
TOKYO = ZoneInfo("Asia/Tokyo")
BLOCKED = Reject(603, "blocked", "blocked")
AFTER_HOURS = Reject(480, "after_hours", "sales after hours")
NO_ROUTE = Reject(404, "no_route", None)
OPEN_SALES = Accept("sales", "sales")
JAPAN = call(caller="+81312345678", called="+81300000000")


def at(zone: dt.tzinfo, *parts: int) -> dt.datetime:
    year, month, day, hour, minute = parts
    return dt.datetime(year, month, day, hour, minute, tzinfo=zone)


@pytest.mark.parametrize(
    ("facts", "now", "expected"),
    [
        # blocked caller, whatever the number format and whatever else matches
        (call(caller="+15550006660", headers={"X-Tier": "gold"}), WED_NOON_NY, BLOCKED),
        (call(caller="sip:+15550006661@carrier.example"), WED_NOON_NY, BLOCKED),
        # SIP header match, any of the listed values, header name in any case
        (call(headers={"x-tier": "platinum"}), WED_NOON_NY, Accept("vip", "vip header")),
        (call(headers={"X-Tier": "silver"}), WED_NOON_NY, Accept("support", "toll free")),
        # first match wins: a VIP calling sales gets the VIP profile
        (call(called=SALES, headers={"X-Tier": "gold"}), WED_NOON_NY, Accept("vip", "vip header")),
        # opening hours in New York time
        (call(called=SALES), WED_NOON_NY, OPEN_SALES),
        (call(called=SALES), at(NY, 2026, 11, 18, 17, 0), AFTER_HOURS),
        (call(called=SALES), at(NY, 2026, 11, 18, 8, 59), AFTER_HOURS),
        (call(called=SALES), at(NY, 2026, 11, 21, 12, 0), AFTER_HOURS),  # Saturday
        # instants given in UTC: 14:00 UTC is 09:00 in New York in winter (EST)...
        (call(called=SALES), at(dt.UTC, 2026, 11, 18, 14, 0), OPEN_SALES),
        # ...13:30 UTC is 09:30 in summer (EDT), open, but 08:30 in winter, closed
        (call(called=SALES), at(dt.UTC, 2026, 7, 15, 13, 30), OPEN_SALES),
        (call(called=SALES), at(dt.UTC, 2026, 11, 18, 13, 30), AFTER_HOURS),
        # a closed date closes the whole local day
        (call(called=SALES), at(NY, 2026, 12, 25, 12, 0), AFTER_HOURS),
        # an overnight window in Tokyo: Friday 22:00 to Saturday 06:00 local time
        (JAPAN, at(TOKYO, 2026, 11, 20, 23, 0), Accept("japan", "japan nights")),
        (JAPAN, at(TOKYO, 2026, 11, 21, 5, 59), Accept("japan", "japan nights")),
        (JAPAN, at(TOKYO, 2026, 11, 21, 6, 0), NO_ROUTE),
        (JAPAN, at(TOKYO, 2026, 11, 20, 21, 59), NO_ROUTE),
        # prefixes on both numbers
        (call(called="+18885551234"), WED_NOON_NY, Accept("support", "toll free")),
        (call(caller="+447700900000", called="+18005550100"), WED_NOON_NY, NO_ROUTE),
        # no route matches: the default action
        (call(called="+15555550000"), WED_NOON_NY, NO_ROUTE),
    ],
)
def test_routes(facts: CallFacts, now: dt.datetime, expected: Decision) -> None:
    assert decide(facts, POLICY, now, Load()) == expected


def test_a_route_without_conditions_is_the_default_route() -> None:
    policy = parse_policy(
        "profiles: {p: {instructions: x}}\nroutes:\n  - action: {type: accept, profile: p}\n",
        "policy.yaml",
    )
    facts = call(caller="anonymous", called="sip:whatever@host")
    assert decide(facts, policy, WED_NOON_NY, Load()) == Accept("p", "routes[0]")


@pytest.mark.parametrize(
    ("load", "now_offset_s", "expected"),
    [
        (Load(active=9, per_profile={"sales": 1}), 0.0, Accept("sales", "sales")),
        # the cluster is full: keep ringing, check again after poll_s
        (Load(active=10), 0.0, Wait("sales", 0.5, "sales")),
        # the profile is full although the cluster is not
        (Load(active=3, per_profile={"sales": 2}), 1.0, Wait("sales", 0.5, "sales")),
        # near the end of the wait the next check comes at the deadline
        (Load(active=10), 4.8, Wait("sales", pytest.approx(0.2), "sales")),
        # the wait is over: reject with the configured code
        (Load(active=10), 5.0, Reject(486, "capacity", "sales")),
        (Load(active=10), 60.0, Reject(486, "capacity", "sales")),
    ],
)
def test_capacity(load: Load, now_offset_s: float, expected: Decision) -> None:
    facts = call(called="+18005550199")
    now = WED_NOON_NY + dt.timedelta(seconds=now_offset_s)
    assert decide(facts, POLICY, now, load) == expected


def test_a_full_house_without_waiting_rejects_at_once() -> None:
    when_full = POLICY.capacity.when_full.model_copy(update={"max_wait_s": 0.0, "code": 503})
    capacity = POLICY.capacity.model_copy(update={"when_full": when_full})
    policy = POLICY.model_copy(update={"capacity": capacity})
    expected = Reject(503, "capacity", "toll free")
    assert decide(call(), policy, WED_NOON_NY, Load(active=10)) == expected


def test_rejects_do_not_care_about_capacity() -> None:
    assert decide(call(caller="+15550006660"), POLICY, WED_NOON_NY, Load(active=99)) == Reject(
        603, "blocked", "blocked"
    )


def test_now_must_carry_a_time_zone() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        is_open(POLICY.schedules["office"], dt.datetime(2026, 11, 18, 12, 0))


@pytest.mark.parametrize(
    ("uri", "user"),
    [
        ("+14155550100", "+14155550100"),
        ("sip:+14155550100@sip.example.com", "+14155550100"),
        ("sips:+14155550100@sip.example.com:5061;transport=tls", "+14155550100"),
        ('"Alice" <sip:+1-415-555-0100@host;user=phone>;tag=abc', "+14155550100"),
        ("<tel:+1(415)555-0100;phone-context=example.com>", "+14155550100"),
        ("SIP:alice@example.com", "alice"),
        ("sip:%2B14155550100@host", "+14155550100"),
        ("", ""),
    ],
)
def test_sip_user(uri: str, user: str) -> None:
    assert sip_user(uri) == user


def test_facts_from_a_call_record() -> None:
    record = CallRecord.model_validate(
        {
            "id": "rtc_9",
            "from": "+14155550100",
            "to": "",
            "created_at": 1.5,
            "sip_headers": [
                SipHeader(name="To", value="<sip:+18005550100@sip.example.com>"),
                SipHeader(name="X-Tier", value="gold"),
                SipHeader(name="x-tier", value="silver"),
            ],
        }
    )
    facts = CallFacts.from_record(record)
    assert (facts.caller, facts.called, facts.received_at) == ("+14155550100", "+18005550100", 1.5)
    assert facts.sip_headers["x-tier"] == ("gold", "silver")
    assert facts.header("X-TIER") == "gold"


def test_policy_is_frozen() -> None:
    with pytest.raises(ValueError, match="frozen"):
        POLICY.routes[0].name = "changed"  # type: ignore[misc]
    assert isinstance(POLICY, Policy)
