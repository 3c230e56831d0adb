"""A stand-in for the session runners in benchmarks that stop at the accept.

Without runners, every accepted call would stay ``accepting`` on the pending list,
and the recovery sweep each control worker runs every second would look at all of
them, more at every second of the benchmark: in a deployment, runners take calls off
that list within milliseconds. ``CallTaker`` takes each call off the list as a runner
would, ends it at once (``accepting -> ended``) and gives its admission slot back, as a
runner ending a call does (otherwise the sweep would release every slot itself, one
round trip each), so the sweep sees what it sees beside runners that keep up. It runs
on a thread of the benchmark's own process.
"""

from __future__ import annotations

import threading
from types import TracebackType

import redis

from shared import keys
from shared.models import CallState, EndReason
from shared.store import CallStore
from workers.admission import Admission

POP_TIMEOUT_S = 0.2


class CallTaker:
    """Takes accepted calls off ``keys.PENDING_CALLS`` and ends them, until closed."""

    def __init__(self, redis_url: str) -> None:
        self._client = redis.Redis.from_url(redis_url, decode_responses=True)
        self._store = CallStore(self._client)
        self._admission = Admission(self._client)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="call-taker", daemon=True)
        self.taken = 0

    def __enter__(self) -> CallTaker:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
        self._client.close()

    def _run(self) -> None:
        fields = {"end_reason": EndReason.CALLER_HANGUP.value}
        while not self._stop.is_set():
            popped = self._client.brpop([keys.PENDING_CALLS], timeout=POP_TIMEOUT_S)
            if popped is None:
                continue
            self._store.transition(popped[1], CallState.ACCEPTING, CallState.ENDED, fields)
            self._admission.release(popped[1])
            self.taken += 1
