"""Webhook signature verification: tables of deliveries, and parity with the official SDK."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Iterator

import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingress.verify import Delivery, Failure, VerificationError, sign, signing_key, verify

RAW_KEY = b"switchboard-test-key-0123456789"
WHSEC = "whsec_" + base64.b64encode(RAW_KEY).decode()
NOW = 1_750_287_078
BODY = b'{"type":"realtime.call.incoming","data":{"call_id":"rtc_1","sip_headers":[]}}'


def sdk_signature(secret: str, webhook_id: str, timestamp: str, body: bytes) -> str:
    """The signature exactly as openai/lib/_webhooks.py computes it."""
    key = base64.b64decode(secret[6:]) if secret.startswith("whsec_") else secret.encode()
    signed = f"{webhook_id}.{timestamp}.{body.decode('utf-8')}"
    return base64.b64encode(hmac.new(key, signed.encode(), hashlib.sha256).digest()).decode()


def headers(
    signature: str, *, webhook_id: str = "wh_1", timestamp: int | str = NOW
) -> dict[str, str]:
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
    }


def good_signature(timestamp: int | str = NOW, body: bytes = BODY) -> str:
    return "v1," + sdk_signature(WHSEC, "wh_1", str(timestamp), body)


def test_a_signed_delivery_verifies_and_reports_its_id() -> None:
    result = verify(headers(good_signature()), BODY, signing_key(WHSEC), now_s=NOW)
    assert result == Delivery(webhook_id="wh_1", timestamp_s=NOW)


@pytest.fixture(scope="module")
def sdk() -> Iterator[openai.OpenAI]:
    with openai.OpenAI(api_key="unused", webhook_secret=WHSEC) as client:
        yield client


def test_our_signature_is_accepted_by_the_official_sdk(sdk: openai.OpenAI) -> None:
    now = int(time.time())
    signature = "v1," + sign(signing_key(WHSEC), "wh_sdk", str(now), BODY)
    sdk_headers = headers(signature, webhook_id="wh_sdk", timestamp=now)
    sdk.webhooks.verify_signature(BODY, sdk_headers)  # raises if it disagrees
    with pytest.raises(openai.InvalidWebhookSignatureError):
        sdk.webhooks.verify_signature(BODY + b" ", sdk_headers)


def test_a_raw_secret_is_used_as_utf8_bytes() -> None:
    secret = "plain-secret-ü"
    signature = "v1," + sdk_signature(secret, "wh_1", str(NOW), BODY)
    verify(headers(signature), BODY, signing_key(secret), now_s=NOW)
    with pytest.raises(VerificationError):
        verify(headers(signature), BODY, signing_key(WHSEC), now_s=NOW)


@pytest.mark.parametrize(
    "signature_header",
    [
        pytest.param(f"v1,AAAA {good_signature()}", id="second-of-two"),
        pytest.param(f"{good_signature()} v1,AAAA", id="first-of-two"),
        pytest.param(f"v1,bad1  v1,bad2\t{good_signature()}", id="third-of-three-odd-spacing"),
        pytest.param(good_signature()[3:], id="bare-without-v1-prefix"),
    ],
)
def test_any_listed_signature_may_match(signature_header: str) -> None:
    verify(headers(signature_header), BODY, signing_key(WHSEC), now_s=NOW)


@pytest.mark.parametrize(
    ("now_s", "expected"),
    [
        pytest.param(NOW + 300, None, id="exactly-300s-old-ok"),
        pytest.param(NOW + 300.999, None, id="fractional-now-truncates-like-sdk"),
        pytest.param(NOW + 301, Failure.TOO_OLD, id="301s-old"),
        pytest.param(NOW - 300, None, id="exactly-300s-ahead-ok"),
        pytest.param(NOW - 301, Failure.TOO_NEW, id="301s-ahead"),
        pytest.param(NOW + 86_400, Failure.TOO_OLD, id="a-day-old"),
    ],
)
def test_replay_window_is_300s_both_ways(now_s: float, expected: Failure | None) -> None:
    if expected is None:
        verify(headers(good_signature()), BODY, signing_key(WHSEC), now_s=now_s)
        return
    with pytest.raises(VerificationError) as err:
        verify(headers(good_signature()), BODY, signing_key(WHSEC), now_s=now_s)
    assert err.value.failure is expected


def _without(name: str) -> dict[str, str]:
    all_headers = headers(good_signature())
    del all_headers[name]
    return all_headers


@pytest.mark.parametrize(
    ("given_headers", "body", "expected"),
    [
        pytest.param(_without("webhook-id"), BODY, Failure.MISSING_HEADER, id="no-id"),
        pytest.param(_without("webhook-timestamp"), BODY, Failure.MISSING_HEADER, id="no-ts"),
        pytest.param(_without("webhook-signature"), BODY, Failure.MISSING_HEADER, id="no-sig"),
        pytest.param(headers(good_signature(), timestamp="soon"), BODY, Failure.BAD_TIMESTAMP),
        pytest.param(headers(good_signature(), timestamp=""), BODY, Failure.BAD_TIMESTAMP),
        pytest.param(headers(good_signature(), timestamp="-5"), BODY, Failure.BAD_TIMESTAMP),
        pytest.param(headers(good_signature(), timestamp="1_750"), BODY, Failure.BAD_TIMESTAMP),
        pytest.param(headers(good_signature(), timestamp="١٢٣"), BODY, Failure.BAD_TIMESTAMP),
        pytest.param(headers(good_signature()), BODY + b"\n", Failure.MISMATCH, id="tampered"),
        pytest.param(headers(good_signature(), webhook_id="wh_2"), BODY, Failure.MISMATCH),
        pytest.param(headers("v1,AAAA v2,BBBB"), BODY, Failure.MISMATCH, id="all-wrong"),
        pytest.param(headers(""), BODY, Failure.MISMATCH, id="empty-signature"),
        pytest.param(headers("v1,ünïcödé"), BODY, Failure.MISMATCH, id="non-ascii"),
        pytest.param(
            headers("v2," + good_signature()[3:]), BODY, Failure.MISMATCH, id="other-version"
        ),
    ],
)
def test_refused_deliveries_say_why(
    given_headers: dict[str, str], body: bytes, expected: Failure
) -> None:
    with pytest.raises(VerificationError) as err:
        verify(given_headers, body, signing_key(WHSEC), now_s=NOW)
    assert err.value.failure is expected


def test_a_timestamp_signed_with_a_different_value_does_not_match() -> None:
    signature = good_signature(timestamp=NOW - 1)
    with pytest.raises(VerificationError) as err:
        verify(headers(signature), BODY, signing_key(WHSEC), now_s=NOW)
    assert err.value.failure is Failure.MISMATCH


def test_header_names_are_case_insensitive() -> None:
    mixed = {name.upper(): value for name, value in headers(good_signature()).items()}
    verify(mixed, BODY, signing_key(WHSEC), now_s=NOW)


def test_errors_never_reveal_the_secret_or_the_expected_signature() -> None:
    expected = good_signature()[3:]
    with pytest.raises(VerificationError) as err:
        verify(headers("v1,AAAA"), BODY, signing_key(WHSEC), now_s=NOW)
    assert expected not in str(err.value)
    assert WHSEC not in str(err.value)


@pytest.mark.parametrize("secret", ["", "whsec_", "whsec_not*base64!"])
def test_unusable_secrets_are_refused_without_echoing_them(secret: str) -> None:
    with pytest.raises(ValueError, match="webhook secret") as err:
        signing_key(secret)
    if secret:
        assert secret not in str(err.value)


@settings(max_examples=60, deadline=None)
@given(
    secret=st.one_of(
        st.binary(min_size=1, max_size=40).map(lambda b: "whsec_" + base64.b64encode(b).decode()),
        st.text(min_size=1, max_size=30).filter(lambda s: not s.startswith("whsec_")),
    ),
    webhook_id=st.text(
        alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40
    ),
    body=st.text(max_size=200).map(str.encode),
    # Ages right at the edges are left out: the SDK reads its own clock a moment later.
    age_s=st.integers(min_value=-400, max_value=400).filter(lambda a: abs(abs(a) - 300) > 2),
    tamper=st.booleans(),
)
def test_verdicts_match_the_official_sdk(
    sdk: openai.OpenAI, secret: str, webhook_id: str, body: bytes, age_s: int, tamper: bool
) -> None:
    now = int(time.time())
    timestamp = str(now - age_s)
    signature = "v1," + sdk_signature(secret, webhook_id, timestamp, body)
    sent = body + b"x" if tamper else body
    delivery = headers(signature, webhook_id=webhook_id, timestamp=timestamp)
    try:
        sdk.webhooks.verify_signature(sent, delivery, secret=secret)
        sdk_ok = True
    except openai.InvalidWebhookSignatureError:
        sdk_ok = False
    try:
        verify(delivery, sent, signing_key(secret), now_s=now)
        ours_ok = True
    except VerificationError:
        ours_ok = False
    assert ours_ok == sdk_ok
