"""Bearer-key authentication as the real API does it, for REST and the sideband alike.

The emulator either knows one key (``EmulatorConfig.api_key``) or, when none is set,
accepts any non-empty key, which suits local demos. Ephemeral ``ek_`` keys issued by
``POST /v1/realtime/client_secrets`` are accepted where the real API accepts them
(creating a WebRTC call) until they expire. Messages never repeat the key sent.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Mapping

MISSING_KEY = (
    "You didn't provide an API key. You need to provide your API key in an "
    "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)
WRONG_KEY = "Incorrect API key provided."
EXPIRED_KEY = "The client secret has expired."


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer ...`` header, or None if there is none."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    return token or None


def key_problem(
    authorization: str | None,
    api_key: str | None,
    client_secrets: Mapping[str, float] | None = None,
    now_s: float | None = None,
) -> str | None:
    """Why the request is not authenticated, or None if it is.

    ``client_secrets`` maps issued ``ek_`` values to their expiry (Unix seconds); pass
    it only where an ephemeral key is a valid credential.
    """
    token = bearer_token(authorization)
    if token is None:
        return MISSING_KEY
    if client_secrets is not None and token.startswith("ek_"):
        expires_at = client_secrets.get(token)
        if expires_at is not None:
            current_s = time.time() if now_s is None else now_s
            return None if current_s < expires_at else EXPIRED_KEY
    if api_key is None:
        return None
    if hmac.compare_digest(token.encode(), api_key.encode()):
        return None
    return WRONG_KEY
