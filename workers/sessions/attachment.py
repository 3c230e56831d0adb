"""The sideband of one session worker: attach, read and feed, attach again after drops.

``Attachment.run`` attaches to the call (the first attach also moves the call
``accepting -> active``, fenced), feeds every event to the core, and when the socket
closes feeds ``on_closed`` with what the close means (``workers.sessions.reattach``):
the end of the call returns, a drop attaches again (``fresh`` false). Refused attaches
are retried with backoff while transient; a 404 means the caller is gone. Each attach
and detach is noted in the call's events stream, with its kind: ``first``, ``reattach``
(after a drop on this runner) or ``takeover`` (a call restored from another runner).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import TYPE_CHECKING

from shared.models import TERMINAL_STATES
from shared.outage import through_outage
from workers.sessions import reattach
from workers.sessions.call_effects import OUTAGE_S
from workers.sessions.connection import AttachFailed, Sideband, sideband_url

if TYPE_CHECKING:
    from workers.sessions.session_worker import SessionWorker

logger = logging.getLogger(__name__)

HIGH_WATER = 256
"""Queued effects above which the reader waits for the pump (Redis is slower than us)."""


class Attachment:
    """The attach-read-reattach loop of one call (see the module docstring)."""

    def __init__(self, worker: SessionWorker, *, fresh: bool, activate: bool) -> None:
        self._w = worker
        self._fresh = fresh
        self._activate = activate
        self._attached_before = False
        self.reading = False
        """True from an attach until its socket's events end."""

    async def run(self) -> None:
        """Return when the call is over for this worker (its end fed to the core), or the
        worker lets go of it (``SessionWorker._let_go``)."""
        w = self._w
        services, core = w.services, w.core
        url = sideband_url(services.sideband_base_url, w.call_id)
        failures, failing_since = 0, 0.0
        while not core.state.ended and not w.lost and not w.letting_go:
            try:
                socket = await Sideband.open(url, services.api_key, services.sideband)
            except AttachFailed as exc:
                verdict = reattach.on_refused(exc.status)
                if verdict == "retry":
                    failures += 1
                    failing_since = failing_since or time.monotonic()
                    elapsed_s = time.monotonic() - failing_since
                    delay_s = reattach.retry_in_s(failures, random.random(), elapsed_s)
                    if delay_s is not None:
                        await asyncio.sleep(delay_s)
                        continue
                    verdict = "error"
                logger.info("call %s: %s; the session ends (%s)", w.call_id, exc, verdict)
                if verdict == "caller" and self._activate:
                    # Never attached: the call was over before its session began.
                    w.feed(core.on_closed(time.time(), "gone"))
                    return
                w.feed(core.on_closed(time.time(), verdict))
                return
            failures, failing_since = 0, 0.0
            w.socket = socket
            self.reading = True
            try:
                if not await self._attached():
                    return
                async for event in socket.events():
                    services.metrics.event(event.get("type"))
                    w.on_event(event)
                    if len(w.outbox) > HIGH_WATER:
                        await w.wait_for_room()
            finally:
                self.reading = False
            w.socket = None
            if w.lost or w.letting_go:  # closed by ``SessionWorker._let_go``: not an end
                return
            closed = reattach.on_close(socket.close_code)
            w.feed(core.on_closed(time.time(), closed))
            w.effects.note("detached", close_code=socket.close_code, reason=closed)
            if closed == "caller":
                return

    async def _attached(self) -> bool:
        """Record the attach and feed it to the core; false if the call is over elsewhere."""
        w, now_s = self._w, time.time()
        if self._activate:
            # Through a Redis restart (a compare-and-set, safe to repeat): failing here
            # would drop a socket the API already talks on.
            change = await through_outage(
                lambda: w.services.store.activate(w.lease, now_s), deadline_s=OUTAGE_S
            )
            self._activate = False
            if not change.applied and change.state in TERMINAL_STATES:
                logger.warning("call %s is already %s", w.call_id, change.state)
                w.feed(w.core.on_closed(now_s, "caller"))
                return False
        kind = "first" if self._fresh else ("reattach" if self._attached_before else "takeover")
        self._attached_before = True
        w.services.metrics.attached(kind)
        w.effects.note("attached", kind=kind)
        w.feed(w.core.on_attached(now_s, self._fresh))
        self._fresh = False
        return True
