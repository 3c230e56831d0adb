"""Fault injection decisions: what goes wrong, drawn from the current ``FaultSettings``.

Pure functions of the settings and a random source, so the REST guard, the webhook
sender and tests share one definition of each fault. The settings themselves live on
the context and change at run time through ``POST /_emulator/faults``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from emulator.context import FaultSettings


@dataclass(frozen=True)
class InjectedFault:
    """An error answer the REST surface gives instead of acting."""

    status: int
    type: str
    code: str
    message: str
    headers: dict[str, str]


class FaultUpdateError(ValueError):
    """A fault update that names an unknown setting or gives a bad value."""

    def __init__(self, message: str, param: str | None) -> None:
        super().__init__(message)
        self.param = param


def rest_latency_s(faults: FaultSettings, rng: random.Random) -> float:
    """The delay before answering one REST request, in seconds."""
    low_ms, high_ms = faults.rest_latency_ms_min, faults.rest_latency_ms_max
    if high_ms <= 0:
        return 0.0
    return rng.uniform(low_ms, high_ms) / 1000.0


def retry_after_headers(retry_after_s: float) -> dict[str, str]:
    # Fractional seconds in Retry-After are non-standard but common; retry-after-ms
    # carries the exact value for clients (like the OpenAI SDK) that prefer it.
    seconds = f"{retry_after_s:.3f}".rstrip("0").rstrip(".") or "0"
    return {"retry-after": seconds, "retry-after-ms": str(round(retry_after_s * 1000))}


def draw_rest_fault(faults: FaultSettings, rng: random.Random) -> InjectedFault | None:
    """A 503 or 429 answer at the configured rates, or None to let the request through."""
    if faults.rest_5xx_rate > 0 and rng.random() < faults.rest_5xx_rate:
        return InjectedFault(
            status=503,
            type="server_error",
            code="service_unavailable",
            message="The server is overloaded or not ready yet.",
            headers=retry_after_headers(faults.retry_after_s),
        )
    if faults.rest_429_rate > 0 and rng.random() < faults.rest_429_rate:
        return InjectedFault(
            status=429,
            type="requests",
            code="rate_limit_exceeded",
            message="Rate limit reached for requests. Please try again shortly.",
            headers=retry_after_headers(faults.retry_after_s),
        )
    return None


def duplicate_webhook(faults: FaultSettings, rng: random.Random) -> bool:
    """Whether this webhook delivery is also sent a second time (same webhook-id)."""
    return faults.webhook_duplicate_rate > 0 and rng.random() < faults.webhook_duplicate_rate


def webhook_delay_s(faults: FaultSettings) -> float:
    return faults.webhook_delay_ms / 1000.0


def updated_faults(current: FaultSettings, patch: Any) -> FaultSettings:
    """``current`` with the fields of ``patch`` replaced, validated as a whole.

    Raises ``FaultUpdateError`` (and changes nothing) for unknown fields, bad values or
    a latency range whose minimum exceeds its maximum.
    """
    if not isinstance(patch, dict):
        raise FaultUpdateError("The fault update must be a JSON object.", None)
    try:
        merged = FaultSettings.model_validate({**current.model_dump(), **patch})
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        raise FaultUpdateError(f"Invalid fault setting '{param}': {first['msg']}", param) from None
    if merged.rest_latency_ms_min > merged.rest_latency_ms_max:
        raise FaultUpdateError(
            "rest_latency_ms_min must not exceed rest_latency_ms_max.", "rest_latency_ms_min"
        )
    return merged
