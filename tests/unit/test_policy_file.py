"""Loading the routing policy: error locations, the YAML dialect, reload on change."""

from __future__ import annotations

import datetime as dt
import logging
import os
import textwrap
from pathlib import Path

import pytest

from shared.errors import PolicyError
from shared.policy import AcceptAction, RejectAction
from shared.policy_file import PolicySource, demo_policy, load_policy, parse_policy

MINIMAL = """\
profiles:
  support:
    instructions: Hello {caller}
routes:
  - action: {type: accept, profile: support}
"""


def issues_of(text: str) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        parse_policy(textwrap.dedent(text), "policy.yaml")
    return [str(issue) for issue in caught.value.issues]


def test_the_demo_policy_is_valid_and_covers_the_demo_scenarios() -> None:
    policy = demo_policy()
    support = policy.profiles["support"]
    assert support.tools == ["lookup_order", "transfer_call", "end_call"]
    assert support.transcription is not None
    assert support.greeting
    codes = {r.action.code for r in policy.routes if isinstance(r.action, RejectAction)}
    assert {603, 480} <= codes
    assert policy.capacity.when_full.code == 486


def test_a_minimal_policy_gets_named_defaults() -> None:
    policy = parse_policy(MINIMAL, "policy.yaml")
    assert policy.profiles["support"].model == "gpt-realtime"
    assert policy.profiles["support"].voice == "marin"
    assert isinstance(policy.routes[0].action, AcceptAction)
    assert isinstance(policy.default, RejectAction)
    assert policy.default.code == 404
    assert policy.capacity.max_calls is None
    assert policy.prices.prices_for("gpt-realtime") is not None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            """\
            routes:
              - action: {type: reject, code: 603}
              - action: {type: reject, code: 603}
              - action:
                  type: reject
                  code: 800
            """,
            "policy.yaml:6: routes[2].action.code: Input should be less than or equal to 699",
        ),
        (
            """\
            routes:
              - action: {type: transfer}
            """,
            "policy.yaml:2: routes[0].action: Input tag 'transfer' found using 'type'",
        ),
        (
            """\
            routes:
              - action: {type: reject, colour: red}
            """,
            "policy.yaml:2: routes[0].action.colour: Extra inputs are not permitted",
        ),
        (
            """\
            profiles:
              support:
                voice: marin
            """,
            "policy.yaml:3: profiles.support.instructions: Field required",
        ),
        (
            """\
            profiles:
              support:
                instructions: "Hi {name}"
            """,
            "policy.yaml:3: profiles.support.instructions: unknown variable {name}",
        ),
        (
            """\
            schedules:
              office:
                timezone: Mars/Olympus
                windows: [{days: [mon]}]
            """,
            "policy.yaml:3: schedules.office.timezone: unknown time zone 'Mars/Olympus'",
        ),
        (
            """\
            capacity:
              when_full: {code: 486, max_wait_s: -1}
            """,
            "policy.yaml:2: capacity.when_full.max_wait_s: Input should be greater than or equal",
        ),
        (
            """\
            transfer_targets:
              human: http://example.com
            """,
            "policy.yaml:2: transfer_targets.human: must be a sip: or tel: URI",
        ),
    ],
)
def test_errors_name_the_line_and_the_field(text: str, expected: str) -> None:
    assert any(issue.startswith(expected) for issue in issues_of(text)), issues_of(text)


def test_cross_references_are_checked_with_their_location() -> None:
    issues = issues_of(
        """\
        profiles:
          support:
            instructions: Hi
            model: gpt-unpriced
            tools: [lookup, transfer_call]
        routes:
          - match: {during: nights}
            action: {type: accept, profile: sales}
        capacity:
          per_profile: {ghost: 3}
        """
    )
    assert issues == [
        "policy.yaml:4: profiles.support.model: no price for model 'gpt-unpriced' in price table "
        + issues[0].split("in price table ", 1)[1],
        "policy.yaml:5: profiles.support.tools[0]: unknown tool 'lookup' (known: end_call, "
        "transfer_call)",
        "policy.yaml:5: profiles.support.tools: transfer_call needs at least one transfer target",
        "policy.yaml:7: routes[0].match.during: unknown schedule 'nights' (known: none defined)",
        "policy.yaml:8: routes[0].action.profile: unknown profile 'sales' (known: support)",
        "policy.yaml:10: capacity.per_profile.ghost: unknown profile 'ghost' (known: support)",
    ]


def test_yaml_syntax_errors_and_duplicate_keys_have_lines() -> None:
    assert issues_of("routes:\n  - action: {type: reject\n")[0].startswith(
        "policy.yaml:3: invalid YAML"
    )
    assert issues_of(MINIMAL + "routes: []\n") == ["policy.yaml:6: routes: duplicate key"]
    assert issues_of("- just\n- a list\n") == ["policy.yaml:1: the policy must be a YAML mapping"]
    assert issues_of("") == ["policy.yaml:1: the policy must be a YAML mapping"]


def test_phone_numbers_times_and_words_keep_their_meaning() -> None:
    # YAML 1.1 would read +14155550100 as an int, 0800123 as octal, 09:00 as 540, no as False.
    policy = parse_policy(
        textwrap.dedent(
            """\
            schedules:
              office:
                timezone: Europe/London
                windows: [{days: [mon], start: 09:00, end: 17:30}]
            routes:
              - match:
                  caller: +14155550100
                  called_prefix: [0800123, 44]
                  sip_headers: {X-Vip: no}
                action: {type: reject, code: 603}
            profiles:
              support:
                instructions: Hi
                dtmf: {0: {action: hangup}}
            """
        ),
        "policy.yaml",
    )
    match = policy.routes[0].match
    assert match.caller == ["+14155550100"]
    assert match.called_prefix == ["0800123", "44"]
    assert match.sip_headers == {"X-Vip": "no"}
    window = policy.schedules["office"].windows[0]
    assert (window.start, window.end) == (dt.time(9, 0), dt.time(17, 30))
    assert "0" in policy.profiles["support"].dtmf


def test_an_unreadable_file_is_a_policy_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "missing.yaml")


def _replace(path: Path, text: str) -> None:
    # Editors and config managers write a new file and rename it over the old one.
    temp = path.with_suffix(".tmp")
    temp.write_text(text)
    os.replace(temp, path)


def test_the_source_reloads_a_changed_file_and_keeps_the_last_good_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(MINIMAL)
    source = PolicySource(path)
    first = source.current()
    assert source.current() is first  # unchanged file: no reparse

    _replace(path, MINIMAL.replace("Hello {caller}", "Welcome {caller}"))
    second = source.current()
    assert second.profiles["support"].instructions == "Welcome {caller}"

    with caplog.at_level(logging.ERROR, logger="shared.policy_file"):
        _replace(path, MINIMAL.replace("type: accept", "type: maybe"))
        assert source.current() is second
        assert source.current() is second
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1  # logged once per bad version, not once per use
    assert "routes[0].action" in errors[0].getMessage()

    _replace(path, MINIMAL.replace("Hello {caller}", "Fixed {caller}"))
    assert source.current().profiles["support"].instructions == "Fixed {caller}"


def test_the_source_refuses_to_start_on_a_broken_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("routes: [{action: {type: nope}}]\n")
    with pytest.raises(PolicyError, match=r"policy\.yaml:1: routes"):
        PolicySource(path)


def test_without_a_path_the_source_serves_the_demo_policy() -> None:
    assert PolicySource(None).current() == demo_policy()


def test_limits_and_idle_handling_are_checked_where_they_are_written() -> None:
    issues = issues_of(
        """\
        profiles:
          no_vad:
            instructions: Hi
            idle: {timeout_s: 8}
          semantic:
            instructions: Hi
            turn_detection: {type: semantic_vad}
            idle: {timeout_s: 8}
          twice:
            instructions: Hi
            turn_detection: {type: server_vad, idle_timeout_ms: 6000}
            idle: {timeout_s: 8}
          too_short:
            instructions: Hi
            turn_detection: {type: server_vad}
            idle: {timeout_s: 3}
          long_grace:
            instructions: Hi
            max_duration_s: 10
            max_duration_wrap_up: {goodbye: Bye, grace_s: 10}
          typo:
            instructions: Hi
            budget_wrap_up: {say: Bye, grace_s: -1}
        """
    )
    assert issues == [
        "policy.yaml:4: profiles.no_vad.idle: needs turn_detection: {type: server_vad} (this "
        "profile has none): the API's idle timeout, idle_timeout_ms, exists only with server_vad",
        "policy.yaml:8: profiles.semantic.idle: needs turn_detection: {type: server_vad} (this "
        "profile has semantic_vad): the API's idle timeout, idle_timeout_ms, exists only with "
        "server_vad",
        "policy.yaml:12: profiles.twice.idle: the idle timeout is set once, by idle.timeout_s "
        "(sent as idle_timeout_ms): remove turn_detection.idle_timeout_ms",
        "policy.yaml:16: profiles.too_short.idle.timeout_s: Input should be greater than or "
        "equal to 5",
        "policy.yaml:20: profiles.long_grace.max_duration_wrap_up: grace_s (10) must be shorter "
        "than max_duration_s (10): the wrap-up starts grace_s before the limit",
        "policy.yaml:23: profiles.typo.budget_wrap_up.grace_s: Input should be greater than or "
        "equal to 0",
        "policy.yaml:23: profiles.typo.budget_wrap_up.say: Extra inputs are not permitted",
    ]


def test_a_wrap_up_transfers_only_to_a_named_target() -> None:
    issues = issues_of(
        """\
        transfer_targets: {human: "sip:agent@pbx.example.com"}
        profiles:
          support:
            instructions: Hi
            max_duration_wrap_up: {transfer: human}
            budget_wrap_up:
              goodbye: Bye
              transfer: sip:someone@example.com
        """
    )
    assert issues == [
        "policy.yaml:8: profiles.support.budget_wrap_up.transfer: unknown transfer target "
        "'sip:someone@example.com' (known: human)"
    ]


def test_limits_without_a_wrap_up_get_a_spoken_default() -> None:
    profile = parse_policy(MINIMAL, "policy.yaml").profiles["support"]
    for wrap in (profile.max_duration_wrap_up, profile.budget_wrap_up):
        assert wrap.goodbye
        assert wrap.transfer is None
        assert 0 < wrap.grace_s < profile.max_duration_s
