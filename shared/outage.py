"""Riding out a short Redis outage (a restart, a failover) instead of losing the work.

``through_outage(op, deadline_s=...)`` calls ``op`` and, while it fails with a
connection-level error (``TRANSIENT_ERRORS``: refused, reset, timed out, Redis still
loading its data), calls it again with backoff doubling from 50 ms to 1 s until it
succeeds or ``deadline_s`` has passed, when the last error is raised. Only operations
that are safe to repeat belong here: fenced scripts, compare-and-set writes, accruals
keyed by response id. Any other error is raised at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis

from shared.errors import RetryableError

T = TypeVar("T")

TRANSIENT_ERRORS = (RetryableError, redis.ConnectionError, redis.TimeoutError)
"""Errors after which the same operation may simply be offered again."""

FIRST_DELAY_S = 0.05
MAX_DELAY_S = 1.0


async def through_outage(
    op: Callable[[], Awaitable[T]],
    *,
    deadline_s: float,
    on_retry: Callable[[Exception], None] | None = None,
) -> T:
    """``await op()``, retried on ``TRANSIENT_ERRORS`` for up to ``deadline_s`` seconds."""
    deadline = time.monotonic() + deadline_s
    delay_s = FIRST_DELAY_S
    while True:
        try:
            return await op()
        except TRANSIENT_ERRORS as exc:
            if time.monotonic() + delay_s > deadline:
                raise
            if on_retry is not None:
                on_retry(exc)
        await asyncio.sleep(delay_s)
        delay_s = min(delay_s * 2, MAX_DELAY_S)
