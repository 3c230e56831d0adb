"""Outgoing webhook signatures, checked by the openai SDK's own verifier."""

from __future__ import annotations

import base64
import time

import openai
import pytest

from shared.errors import ConfigError
from shared.webhook_signature import signed_headers, signing_key

WHSEC = "whsec_" + base64.b64encode(b"0123456789abcdef").decode()


@pytest.mark.parametrize("secret", [WHSEC, "plain-shared-secret"])
def test_the_sdk_accepts_our_signatures(secret: str) -> None:
    body = b'{"type":"call.completed","data":{"call_id":"rtc_1"}}'
    headers = signed_headers(secret, "msg_1", int(time.time()), body)
    client = openai.OpenAI(api_key="unused", webhook_secret=secret)
    try:
        client.webhooks.verify_signature(body, headers)
        with pytest.raises(openai.InvalidWebhookSignatureError):
            client.webhooks.verify_signature(body + b" ", headers)
        with pytest.raises(openai.InvalidWebhookSignatureError):
            client.webhooks.verify_signature(body, headers | {"webhook-id": "msg_2"})
    finally:
        client.close()


def test_the_signature_depends_on_the_timestamp() -> None:
    first = signed_headers(WHSEC, "msg_1", 1_700_000_000, b"{}")
    second = signed_headers(WHSEC, "msg_1", 1_700_000_001, b"{}")
    assert first["webhook-signature"] != second["webhook-signature"]
    assert first["webhook-signature"].startswith("v1,")


@pytest.mark.parametrize("secret", ["", "whsec_", "whsec_not*base64"])
def test_unusable_secrets_are_config_errors(secret: str) -> None:
    with pytest.raises(ConfigError):
        signing_key(secret)
