"""Standard Webhooks signature verification, as OpenAI signs its webhooks.

The same algorithm as the official SDK's ``webhooks.verify_signature``: HMAC-SHA256 over
``<webhook-id>.<webhook-timestamp>.<raw body>`` keyed with the base64-decoded part of a
``whsec_`` secret (or the secret's UTF-8 bytes otherwise), base64 encoded; the
``webhook-signature`` header lists one or more space-separated ``v1,<sig>`` entries and
any match is enough; the timestamp must lie within ``tolerance_s`` of now, both ways.

Pure: the clock is a parameter, and nothing here logs. Error messages never contain
the secret, the key or the expected signature.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_TOLERANCE_S = 300
"""The SDK's replay window, in seconds, both into the past and into the future."""

_WHSEC = "whsec_"


class Failure(enum.StrEnum):
    """Why a delivery failed verification; also the metric label."""

    MISSING_HEADER = "missing_header"
    BAD_TIMESTAMP = "bad_timestamp"
    TOO_OLD = "too_old"
    TOO_NEW = "too_new"
    MISMATCH = "mismatch"


class VerificationError(ValueError):
    """A delivery that must be refused; ``failure`` says why."""

    def __init__(self, failure: Failure, message: str) -> None:
        super().__init__(message)
        self.failure = failure


@dataclass(frozen=True)
class Delivery:
    """The verified identity of one delivery."""

    webhook_id: str
    timestamp_s: int


def signing_key(secret: str) -> bytes:
    """The HMAC key for a ``whsec_...`` secret or a raw secret; decode once at start."""
    if not secret:
        raise ValueError("the webhook secret is empty")
    if secret.startswith(_WHSEC):
        try:
            key = base64.b64decode(secret[len(_WHSEC) :], validate=True)
        except binascii.Error:
            raise ValueError("the webhook secret is not valid whsec_ base64") from None
        if not key:
            raise ValueError("the webhook secret is empty")
        return key
    return secret.encode()


def sign(key: bytes, webhook_id: str, timestamp: str, body: bytes) -> str:
    """The base64 signature of one delivery (without the ``v1,`` prefix)."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None:
        # Case-insensitive fallback for plain dicts; Starlette's Headers already are.
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    if value is None:
        raise VerificationError(Failure.MISSING_HEADER, f"missing {name} header")
    return value


def verify(
    headers: Mapping[str, str],
    body: bytes,
    key: bytes,
    *,
    now_s: float,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
) -> Delivery:
    """Check one delivery; return its id and timestamp or raise ``VerificationError``."""
    signature_header = _header(headers, "webhook-signature")
    timestamp = _header(headers, "webhook-timestamp")
    webhook_id = _header(headers, "webhook-id")
    # Plain ASCII digits only: int() would also take " 1", "+1" or "1_0".
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        raise VerificationError(Failure.BAD_TIMESTAMP, "invalid webhook-timestamp")
    timestamp_s = int(timestamp)
    now = int(now_s)
    if now - timestamp_s > tolerance_s:
        raise VerificationError(Failure.TOO_OLD, "webhook timestamp is too old")
    if timestamp_s > now + tolerance_s:
        raise VerificationError(Failure.TOO_NEW, "webhook timestamp is too new")
    expected = sign(key, webhook_id, timestamp, body).encode()
    matched = False
    for part in signature_header.split():
        candidate = part[3:] if part.startswith("v1,") else part
        # No early exit: every entry costs the same whether or not an earlier one matched.
        matched |= hmac.compare_digest(expected, candidate.encode())
    if not matched:
        raise VerificationError(Failure.MISMATCH, "webhook signature does not match")
    return Delivery(webhook_id=webhook_id, timestamp_s=timestamp_s)
