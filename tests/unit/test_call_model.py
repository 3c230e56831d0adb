"""Call states, transitions, record <-> hash mapping, and the key shapes that hold them."""

from __future__ import annotations

import pytest

from shared import keys
from shared.models import (
    LIVE_STATES,
    TERMINAL_STATES,
    TRANSITIONS,
    CallRecord,
    CallState,
    InvalidTransitionError,
    SipHeader,
    check_transition,
)

S = CallState

ALLOWED = {
    (S.INCOMING, S.ACCEPTING),
    (S.INCOMING, S.REJECTED),
    (S.INCOMING, S.FAILED),
    (S.ACCEPTING, S.ACTIVE),
    (S.ACCEPTING, S.REJECTED),
    (S.ACCEPTING, S.FAILED),
    (S.ACCEPTING, S.ENDED),
    (S.ACTIVE, S.TRANSFERRING),
    (S.ACTIVE, S.ENDED),
    (S.TRANSFERRING, S.ENDED),
    (S.TRANSFERRING, S.ACTIVE),
}


@pytest.mark.parametrize("source", list(CallState))
@pytest.mark.parametrize("target", list(CallState))
def test_exactly_the_documented_transitions_are_allowed(source: S, target: S) -> None:
    if (source, target) in ALLOWED:
        check_transition(frozenset({source}), target)
        assert target in TRANSITIONS[source]
    else:
        with pytest.raises(InvalidTransitionError):
            check_transition(frozenset({source}), target)


def test_terminal_states_lead_nowhere_and_live_ones_somewhere() -> None:
    assert {S.ENDED, S.REJECTED, S.FAILED} == TERMINAL_STATES
    assert all(not TRANSITIONS[state] for state in TERMINAL_STATES)
    assert all(TRANSITIONS[state] for state in LIVE_STATES)


def test_one_bad_source_among_several_refuses_the_request() -> None:
    with pytest.raises(InvalidTransitionError, match="active -> accepting"):
        check_transition(frozenset({S.INCOMING, S.ACTIVE}), S.ACCEPTING)
    with pytest.raises(InvalidTransitionError):
        check_transition(frozenset(), S.ENDED)


def full_record() -> CallRecord:
    return CallRecord.model_validate(
        {
            "id": "rtc_1",
            "state": "active",
            "from": "+14155550100",
            "to": "sip:desk@example.com",
            "profile": "support",
            "sip_headers": [{"name": "From", "value": '"A" <sip:+1@h>'}],
            "sip_media_security": "srtp",
            "webhook_id": "wh_1",
            "event_id": "evt_1",
            "created_at": 1.25,
            "accepted_at": 2.5,
            "end_reason": "caller_hangup",
            "reject_code": 486,
            "owner": "runner-1",
            "cost_usd": "0.012345678901234567890123",
            "usage": {"input_text_tokens": 10, "output_audio_tokens": 20},
            "queue_position": "3",
        }
    )


def test_a_record_survives_the_trip_through_a_hash() -> None:
    record = full_record()
    flat = record.to_hash()
    assert all(isinstance(v, str) for v in flat.values())
    assert flat["from"] == "+14155550100"
    assert flat["state"] == "active"
    assert flat["reject_code"] == "486"
    assert flat["cost_usd"] == "0.012345678901234567890123"  # exact, never a float
    assert "ended_at" not in flat  # absent values are absent fields
    assert flat["queue_position"] == "3"  # unknown fields are kept
    assert CallRecord.from_hash(flat) == record
    as_bytes = {k.encode(): v.encode() for k, v in flat.items()}
    assert CallRecord.from_hash(as_bytes) == record


def test_sip_headers_are_looked_up_case_insensitively() -> None:
    record = full_record()
    assert record.sip_header("FROM") == '"A" <sip:+1@h>'
    assert record.sip_header("x-missing") is None
    assert record.sip_headers == [SipHeader(name="From", value='"A" <sip:+1@h>')]


def test_every_key_of_a_call_shares_one_hash_slot() -> None:
    call_keys = [
        keys.call_record("rtc_1"),
        keys.webhook_dedupe("rtc_1", "wh_1"),
        keys.call_transcript("rtc_1"),
        keys.call_events("rtc_1"),
        keys.call_commands("rtc_1"),
        keys.call_tools("rtc_1"),
        keys.call_command_results("rtc_1"),
        keys.call_command_claims("rtc_1"),
        keys.call_control("rtc_1"),
        keys.call_lease("rtc_1"),
        keys.call_fence("rtc_1"),
    ]
    assert {keys.hash_slot_tag(key) for key in call_keys} == {"rtc_1"}
    assert len(set(call_keys)) == len(call_keys)
    assert all(key.startswith(keys.PREFIX) for key in call_keys)


def test_admission_keys_share_one_slot() -> None:
    tags = {
        keys.hash_slot_tag(keys.ADMISSION_ACTIVE),
        keys.hash_slot_tag(keys.admission_profile("p")),
    }
    assert tags == {"admission"}


@pytest.mark.parametrize("call_id", ["", "a{b", "a}b", "{x}"])
def test_call_ids_that_would_move_the_hash_tag_are_refused(call_id: str) -> None:
    with pytest.raises(ValueError, match="call id"):
        keys.call_record(call_id)


def test_the_record_outlives_the_webhook_dedupe_window() -> None:
    assert keys.CALL_TTL_S > keys.WEBHOOK_DEDUPE_TTL_S >= 72 * 3600
