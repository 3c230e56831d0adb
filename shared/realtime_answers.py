"""How an answer of the Realtime REST API is read: success, retryable or fatal.

This is the REST boundary's one decision, kept apart from the transport so that it is
plain data in, error out:

- 2xx is success;
- 5xx, 408, 409 (a race with a concurrent change) and 429 are retryable, with the
  server's ``Retry-After``/``retry-after-ms`` hint; so is an answer that never came
  (connection error, timeout);
- an ``x-should-retry`` header from the API overrides the status rule, as in OpenAI's
  own SDKs: a 409 about the call's state ("already accepted") never clears by waiting;
- 404 on a call is ``CallGone`` (the caller hung up); any other 4xx ``RealtimeRejected``.

Messages carry the endpoint, call id, status and the API's own message, scrubbed of the
API key (OpenAI echoes a mistyped key in its 401 message).
"""

from __future__ import annotations

import httpx

from shared.errors import (
    CallGone,
    RealtimeRejected,
    RealtimeUnavailable,
    RetryableError,
    SwitchboardError,
)
from shared.retry import parse_retry_after_s

RETRYABLE_STATUS = frozenset({408, 409, 429})
"""4xx answers that are transient; 409 is a race with a concurrent change."""
MAX_MESSAGE_CHARS = 300


def _scrub(text: str, secret: str | None) -> str:
    if secret:
        text = text.replace(secret, "[redacted]")
    return text[:MAX_MESSAGE_CHARS]


def _api_error(response: httpx.Response) -> tuple[str, str | None]:
    """The API's error message and code from an OpenAI-shaped error body."""
    try:
        payload = response.json()
    except ValueError:
        return response.text.strip(), None
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        error = payload["error"]
        code = error.get("code")
        return str(error.get("message") or ""), code if isinstance(code, str) else None
    return "", None


def _worth_retrying(status: int, should_retry: str | None) -> bool:
    # The API's own ``x-should-retry`` overrides the status rule, as in OpenAI's SDKs:
    # a 409 about the call's state ("already accepted") never clears by waiting.
    if should_retry == "true":
        return True
    if should_retry == "false":
        return False
    return status >= 500 or status in RETRYABLE_STATUS


def classify(
    endpoint: str, call_id: str, response: httpx.Response, now_unix_s: float, secret: str | None
) -> SwitchboardError | None:
    """``None`` for a 2xx answer, otherwise the error it stands for."""
    status = response.status_code
    if 200 <= status < 300:
        return None
    text, api_code = _api_error(response)
    detail = _scrub(text, secret)
    message = f"{endpoint} {call_id}: HTTP {status}" + (f": {detail}" if detail else "")
    headers = response.headers
    if _worth_retrying(status, headers.get("x-should-retry")):
        retry_after_s = parse_retry_after_s(
            headers.get("retry-after"), now_unix_s, headers.get("retry-after-ms")
        )
        return RealtimeUnavailable(
            message, endpoint=endpoint, status_code=status, retry_after_s=retry_after_s
        )
    if status == 404:
        return CallGone(message, endpoint=endpoint, status_code=status, api_code=api_code)
    return RealtimeRejected(message, endpoint=endpoint, status_code=status, api_code=api_code)


def transport_error(endpoint: str, call_id: str, exc: httpx.TransportError) -> RetryableError:
    """The retryable error for a request that got no HTTP answer."""
    kind = type(exc).__name__
    return RealtimeUnavailable(f"{endpoint} {call_id}: {kind}", endpoint=endpoint, status_code=None)
