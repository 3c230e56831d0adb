"""Signing outgoing webhooks per Standard Webhooks, as OpenAI signs the ones it sends.

A delivery carries three headers: ``webhook-id`` (the same for every attempt at one
message, so receivers can dedupe), ``webhook-timestamp`` (unix seconds of this attempt)
and ``webhook-signature`` (``v1,<base64 HMAC-SHA256>``) over
``"{webhook_id}.{timestamp}.{body}"``. The key is the base64 part of a ``whsec_...``
secret, or the UTF-8 bytes of any other secret: exactly what the ``openai`` SDK's
``webhooks.verify_signature`` and the ``standardwebhooks`` library check.

Pure: no clock, no I/O; the caller passes the timestamp.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from shared.errors import ConfigError

SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)


def signing_key(secret: str) -> bytes:
    """The HMAC key of ``secret``; ``ConfigError`` for an empty or malformed one."""
    if not secret:
        raise ConfigError("the webhook signing secret is empty")
    if not secret.startswith(SECRET_PREFIX):
        return secret.encode()
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except binascii.Error:
        raise ConfigError("a whsec_ webhook secret must be base64 after the prefix") from None
    if not key:
        raise ConfigError("the webhook signing secret is empty")
    return key


def signature(secret: str, webhook_id: str, timestamp_s: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for one delivery attempt."""
    signed = f"{webhook_id}.{timestamp_s}.".encode() + body
    digest = hmac.new(signing_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secret: str, webhook_id: str, timestamp_s: int, body: bytes) -> dict[str, str]:
    """All three Standard Webhooks headers for one delivery attempt."""
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp_s),
        "webhook-signature": signature(secret, webhook_id, timestamp_s, body),
    }
