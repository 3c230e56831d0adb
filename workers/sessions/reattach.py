"""When a call's sideband socket closes or cannot be opened: what it means, what to do.

Pure functions, so the policy is tested with plain tables and the asyncio adapter
(``workers.sessions.connection``) only carries it out:

- a close with code 1000 is the end of the call (the API closes every socket of a call
  that ended: caller hangup, our hangup or transfer);
- any other close (1006 without a close frame, 1011, a ping timeout) is a drop: attach
  again with backoff; if the call really ended, the new attach is refused with 404;
- an attach refused with 404 means the call no longer exists: the caller is gone;
- 401/403 and other 4xx answers cannot get better by retrying: the session fails;
- 5xx, 429, timeouts and connection errors are transient: retry with jittered backoff
  until ``ATTACH_DEADLINE_S`` of failures in a row, then the session fails.
"""

from __future__ import annotations

from typing import Literal

from shared.retry import Backoff, next_delay_s

ATTACH_BACKOFF = Backoff(base_s=0.1, factor=2.0, max_s=2.0, jitter=0.5)
ATTACH_DEADLINE_S = 30.0
"""Longest run of failed attaches before the session gives up on the call."""
NORMAL_CLOSE = 1000

Closed = Literal["caller", "drop"]
Refused = Literal["caller", "error", "retry"]


def on_close(code: int | None) -> Closed:
    """What a closed socket means: the call ended (``caller``) or the socket dropped."""
    return "caller" if code == NORMAL_CLOSE else "drop"


def on_refused(status: int | None) -> Refused:
    """What a failed attach means; ``None`` is no HTTP answer (connection error, timeout)."""
    if status == 404:
        return "caller"
    if status is None or status >= 500 or status in (408, 429):
        return "retry"
    return "error"


def retry_in_s(failures: int, rand: float, failing_for_s: float) -> float | None:
    """The pause before attach attempt ``failures + 1``, or ``None``: give up."""
    return next_delay_s(failures, rand, ATTACH_BACKOFF, ATTACH_DEADLINE_S - failing_for_s)
