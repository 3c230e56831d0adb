"""Retry timing as pure functions: exponential backoff with jitter, deadlines, Retry-After.

Nothing here sleeps or reads a clock: the caller passes the attempt number, a random
draw in [0, 1) and the time left, and gets back how long to wait (or ``None``: give
up). The same arithmetic therefore serves the sync REST client, the async one and the
Celery tasks, and is tested with plain tables.
"""

from __future__ import annotations

import email.utils
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: ``base_s * factor**(attempt-1)`` capped at ``max_s``.

    ``jitter`` is the share of that delay that is randomised: 1.0 is "full jitter"
    (uniform in ``[0, delay]``), 0.0 is none. Full jitter spreads a crowd of clients that
    failed together, which is exactly the crowd a 429 or 503 burst creates.
    """

    base_s: float = 0.05
    factor: float = 2.0
    max_s: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.base_s < 0 or self.max_s < 0:
            raise ValueError("backoff delays must not be negative")
        if self.factor < 1:
            raise ValueError("backoff factor must be at least 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("backoff jitter must be within [0, 1]")


def backoff_delay_s(attempt: int, rand: float, backoff: Backoff) -> float:
    """The pause after failed attempt number ``attempt`` (1-based), given ``rand`` in [0, 1)."""
    if attempt < 1:
        raise ValueError("attempt numbers start at 1")
    if not 0 <= rand < 1:
        raise ValueError("rand must be within [0, 1)")
    # Cap the exponent first so that a long streak of failures cannot overflow a float.
    exponent = min(attempt - 1, 64)
    ceiling_s = min(backoff.max_s, backoff.base_s * backoff.factor**exponent)
    return ceiling_s * (1 - backoff.jitter * rand)


def next_delay_s(
    attempt: int,
    rand: float,
    backoff: Backoff,
    remaining_s: float,
    retry_after_s: float | None = None,
) -> float | None:
    """The pause before the next attempt, or ``None`` when the deadline leaves no room.

    A server's ``Retry-After`` is a floor: waiting less would only earn another 429.
    If the pause would end at or after the deadline, there is no point in waiting: the
    caller gives up now instead of sleeping into certain failure.
    """
    delay_s = backoff_delay_s(attempt, rand, backoff)
    if retry_after_s is not None and retry_after_s > delay_s:
        delay_s = retry_after_s
    if delay_s >= remaining_s:
        return None
    return delay_s


def parse_retry_after_s(
    value: str | None, now_unix_s: float, value_ms: str | None = None
) -> float | None:
    """Seconds to wait from ``Retry-After`` (delta-seconds or HTTP-date) or ``retry-after-ms``.

    The millisecond header, which OpenAI sends beside the standard one, wins when it
    parses. Unparseable values are ignored (``None``) rather than trusted; dates in the
    past mean "now" (0.0).
    """
    if value_ms is not None:
        try:
            millis = float(value_ms.strip())
        except ValueError:
            pass
        else:
            if math.isfinite(millis):
                return max(0.0, millis / 1000.0)
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            return None
        return max(0.0, seconds)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now_unix_s)


def remaining_s(deadline_at_s: float, now_s: float) -> float:
    """Time left until ``deadline_at_s`` on the same clock as ``now_s`` (never negative)."""
    return max(0.0, deadline_at_s - now_s)
