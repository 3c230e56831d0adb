"""Outgoing webhooks: signed per Standard Webhooks, verified by the SDK, retried, duplicated."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import time

import openai
import pytest

from emulator.webhooks_out import sign, signing_key
from tests.emulator.conftest import WebhookReceiver
from tests.support.emulator import running_emulator

SECRET = "whsec_" + base64.b64encode(b"a test key of thirty-two bytes!!").decode()


def test_signature_matches_an_independent_hmac() -> None:
    body = b'{"object":"event","id":"evt_1"}'
    key = b"a test key of thirty-two bytes!!"
    expected = base64.b64encode(
        hmac.new(key, b"wh_123.1750287078." + body, hashlib.sha256).digest()
    ).decode()

    assert signing_key(SECRET) == key
    assert sign(key, "wh_123", 1750287078, body) == f"v1,{expected}"
    assert signing_key("plain-secret") == b"plain-secret"


def test_signature_verifies_with_the_sdk() -> None:
    body = b'{"hello": "world"}'
    timestamp = str(int(time.time()))
    headers = {
        "webhook-id": "wh_abc",
        "webhook-timestamp": timestamp,
        "webhook-signature": sign(signing_key(SECRET), "wh_abc", timestamp, body),
    }
    openai.OpenAI(api_key="k", webhook_secret=SECRET).webhooks.verify_signature(body, headers)


def test_receiver_gets_a_webhook_the_sdk_unwraps(receiver: WebhookReceiver) -> None:
    with running_emulator(webhook_url=receiver.url, webhook_secret=SECRET) as emu:
        extra = [{"name": "X-Customer-Tier", "value": "gold"}]
        call_id = emu.place_call(from_="+14155550100", to="+18005550199", sip_headers=extra)
        [(body, headers)] = receiver.wait_for(1)

    client = openai.OpenAI(api_key="k", webhook_secret=SECRET)
    event = client.webhooks.unwrap(body, headers)
    assert event.type == "realtime.call.incoming"
    assert event.data.call_id == call_id
    names = [h.name for h in event.data.sip_headers]
    assert names == ["From", "To", "Call-ID", "X-Customer-Tier"]
    from_value = event.data.sip_headers[0].value
    assert "sip:+14155550100@sip.example.com" in from_value
    assert "+18005550199" in event.data.sip_headers[1].value
    assert event.data.sip_headers[3].value == "gold"

    raw = json.loads(body)
    assert set(raw) == {"object", "id", "type", "created_at", "data"}
    assert raw["object"] == "event"
    assert raw["id"].startswith("evt_")
    assert isinstance(raw["created_at"], int)
    assert raw["data"]["sip_media_security"] == "srtp"
    assert headers["webhook-id"].startswith("wh_")
    assert headers["content-type"] == "application/json"

    tampered = body.replace(call_id.encode(), b"rtc_somebody_else")
    with pytest.raises(openai.InvalidWebhookSignatureError):
        client.webhooks.unwrap(tampered, headers)


def test_failed_deliveries_are_retried_with_the_same_webhook_id(
    receiver: WebhookReceiver,
) -> None:
    receiver.statuses = [500, 503]
    with running_emulator(
        webhook_url=receiver.url, webhook_secret=SECRET, webhook_retry_schedule_s=[0.05, 0.05, 0.05]
    ) as emu:
        call_id = emu.place_call()
        deliveries = receiver.wait_for(3)
        truth = emu.wait_for_call(call_id, lambda c: len(c["webhook_deliveries"]) >= 3)

    ids = {headers["webhook-id"] for _, headers in deliveries}
    assert len(ids) == 1
    assert len({body for body, _ in deliveries}) == 1
    client = openai.OpenAI(api_key="k", webhook_secret=SECRET)
    for body, headers in deliveries:
        client.webhooks.verify_signature(body, headers)
    statuses = [d["status"] for d in truth["webhook_deliveries"]]
    assert statuses == [500, 503, 200]
    assert [d["attempt"] for d in truth["webhook_deliveries"]] == [1, 2, 3]


def test_retries_stop_after_the_schedule(receiver: WebhookReceiver) -> None:
    receiver.statuses = [500] * 10
    with running_emulator(webhook_url=receiver.url, webhook_retry_schedule_s=[0.02, 0.02]) as emu:
        call_id = emu.place_call()
        receiver.wait_for(3)
        truth = emu.wait_for_call(call_id, lambda c: len(c["webhook_deliveries"]) >= 3)
        # Once three attempts are recorded, nothing queued or timed means no fourth.
        assert emu.app is not None
        assert emu.app.state.dialer.webhooks.pending() == 0
    assert len(receiver.received) == 3
    assert [d["status"] for d in truth["webhook_deliveries"]] == [500, 500, 500]


def test_unreachable_receiver_is_recorded_as_an_error() -> None:
    # A bound socket that never listens: connections are refused, and no other
    # process can take the port meanwhile.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}/nobody-listens"
        with running_emulator(webhook_url=url, webhook_retry_schedule_s=[0.01]) as emu:
            call_id = emu.place_call()
            truth = emu.wait_for_call(call_id, lambda c: len(c["webhook_deliveries"]) >= 2)
    deliveries = truth["webhook_deliveries"]
    assert [(d["status"], d["error"]) for d in deliveries] == [(None, "ConnectError")] * 2


def test_duplicate_fault_delivers_twice_with_one_id(receiver: WebhookReceiver) -> None:
    with running_emulator(webhook_url=receiver.url) as emu:
        emu.set_faults(webhook_duplicate_rate=1.0)
        call_id = emu.place_call()
        deliveries = receiver.wait_for(2)
        truth = emu.wait_for_call(call_id, lambda c: len(c["webhook_deliveries"]) >= 2)

    assert len(deliveries) == 2
    assert deliveries[0][1]["webhook-id"] == deliveries[1][1]["webhook-id"]
    assert deliveries[0][0] == deliveries[1][0]
    assert sorted(d["duplicate"] for d in truth["webhook_deliveries"]) == [False, True]


def test_delay_fault_holds_the_webhook_back(receiver: WebhookReceiver) -> None:
    with running_emulator(webhook_url=receiver.url) as emu:
        emu.set_faults(webhook_delay_ms=300)
        placed_s = time.monotonic()
        emu.place_call()
        receiver.wait_for(1)
        assert time.monotonic() - placed_s >= 0.3
