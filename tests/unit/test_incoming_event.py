"""The realtime.call.incoming payload: what is accepted, what is refused, what is recorded."""

from __future__ import annotations

from typing import Any

import pytest

from ingress.incoming import MAX_SIP_HEADERS, PayloadError, parse_incoming
from shared.models import CallRecord, CallState


def event(**data: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"call_id": "rtc_1", "sip_headers": []}
    body.update(data)
    return {"object": "event", "id": "evt_1", "type": "realtime.call.incoming", "data": body}


def test_a_call_is_recorded_with_caller_and_called_party() -> None:
    call = parse_incoming(
        event(
            sip_headers=[
                {"name": "Call-ID", "value": "abc@1.2.3.4"},
                {"name": "from", "value": '"Ann" <sip:+14155550100@a.example;user=phone>;tag=1'},
                {"name": "TO", "value": "<sip:+18005550100@b.example>"},
                {"name": "From", "value": "<sip:+19999999999@c.example>"},
            ],
            sip_media_security="srtp",
        )
    )
    record = call.record("wh_1", 123.5)
    assert record.id == "rtc_1"
    assert record.state is CallState.INCOMING
    assert (record.from_, record.to) == ("+14155550100", "+18005550100")
    # Every header is kept, with repeats and order.
    assert [h.name for h in record.sip_headers] == ["Call-ID", "from", "TO", "From"]
    assert (record.webhook_id, record.event_id) == ("wh_1", "evt_1")
    assert record.sip_media_security == "srtp"
    assert record.created_at == 123.5


def test_missing_from_and_to_give_empty_parties() -> None:
    record = parse_incoming(event()).record("wh_1", 1.0)
    assert (record.from_, record.to) == ("", "")


@pytest.mark.parametrize(
    "incoming",
    [
        pytest.param(event(), id="bare"),
        pytest.param(
            event(
                sip_headers=[
                    {"name": "From", "value": '"Ann \\"A\\"" <sip:+14155550100@a.example>'},
                    {"name": "To", "value": "<tel:+1-800-555-0100>"},
                    {"name": "X-Note", "value": "caf\u00e9 \u2603 <script>"},
                ],
                sip_media_security="srtp",
            ),
            id="full",
        ),
        pytest.param({k: v for k, v in event().items() if k != "id"}, id="no-event-id"),
    ],
)
@pytest.mark.parametrize("now_s", [123.5, 1_795_258_814.5326223, 7])
def test_the_record_hash_is_what_the_model_would_store(
    incoming: dict[str, Any], now_s: float
) -> None:
    call = parse_incoming(incoming)
    modelled = CallRecord.model_validate(
        {
            "id": call.call_id,
            "from": call.record("wh_1", now_s).from_,
            "to": call.record("wh_1", now_s).to,
            "sip_headers": [{"name": n, "value": v} for n, v in call.sip_headers],
            "sip_media_security": call.sip_media_security,
            "webhook_id": "wh_1",
            "event_id": call.event_id,
            "created_at": now_s,
        }
    )
    assert call.record_hash("wh_1", now_s) == modelled.to_hash()


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param({"type": "realtime.call.incoming"}, id="no-data"),
        pytest.param({"data": []}, id="data-not-object"),
        pytest.param(event(call_id=None), id="no-call-id"),
        pytest.param(event(call_id=""), id="empty-call-id"),
        pytest.param(event(call_id=7), id="numeric-call-id"),
        pytest.param(event(call_id="rtc_{x}"), id="braces"),
        pytest.param(event(call_id="rtc x"), id="space"),
        pytest.param(event(call_id="rtc\n1"), id="control-char"),
        pytest.param(event(call_id="r" * 129), id="too-long"),
        pytest.param(event(sip_headers=None), id="no-headers"),
        pytest.param(event(sip_headers={"From": "x"}), id="headers-not-list"),
        pytest.param(event(sip_headers=["From: x"]), id="header-not-object"),
        pytest.param(event(sip_headers=[{"name": "From"}]), id="header-no-value"),
        pytest.param(event(sip_headers=[{"name": 1, "value": "x"}]), id="header-name-int"),
        pytest.param(
            event(sip_headers=[{"name": "X", "value": "y"}] * (MAX_SIP_HEADERS + 1)),
            id="too-many-headers",
        ),
        pytest.param(event(sip_media_security=1), id="media-security-not-string"),
        pytest.param({**event(), "id": 5}, id="event-id-not-string"),
    ],
)
def test_malformed_events_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(PayloadError):
        parse_incoming(bad)
