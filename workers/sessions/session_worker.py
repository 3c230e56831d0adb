"""One call's session worker: the asyncio adapter around its ``SessionProtocol`` core.

The worker reads the sideband, feeds the core (events, ticks at ``next_deadline()``,
operator commands, tool results, attach and close) and queues the effects each feed
returns; one pump task carries them out in order (``workers.sessions.call_effects``).
Feeds are synchronous, so any coroutine may feed; ordering lives in the outbox.

Lifecycle (``run`` returns how it ended):

- ``ended``: the call is over; the last effects are carried out, a final snapshot is
  saved and the lease released.
- ``handed_over`` (``hand_over()``, while the runner drains): at a quiet moment if one
  comes soon, the worker stops reading, lets running tools finish, carries out every
  queued effect, saves the snapshot, and only then detaches and releases the lease.
- ``lost`` (``lose()``, or a fenced write found the lease gone): another worker owns
  the call; this one detaches at once and writes nothing more.

Whatever the outcome, a socket is never just dropped: the worker closes it and reads it
to its end (``_let_go``, bounded by the close timeout), because the API may have sent a
bill (``response.done``) before it saw the close. Usage reported on a socket this worker
held is counted, whatever became of the lease (``CallEffects.settle_bills``). So is every
function call it heard: a worker that stops without its final snapshot (lost, failed)
leaves each one ``requested`` in the tool ledger where nothing else is recorded for its
id (``CallEffects.pass_on``), for whoever holds the call to handle; the model waits for
its output, and the next worker cannot hear it again.

The sideband itself (attach, read, re-attach) is ``workers.sessions.attachment``; the
ordering of effects and the batching of snapshots is ``workers.sessions.outbox``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from typing import Any

from shared.commands import QueuedCommand
from workers.sessions.attachment import Attachment
from workers.sessions.call_effects import OUTAGE_S, CallEffects, Note
from workers.sessions.commands import Command
from workers.sessions.connection import Sideband
from workers.sessions.effects import AccrueUsage, Effect, RunTool
from workers.sessions.lease import Lease, Stale
from workers.sessions.outbox import Outbox
from workers.sessions.plan import SessionPlan
from workers.sessions.protocol import SessionProtocol
from workers.sessions.services import SessionServices
from workers.sessions.tools import FunctionCall

logger = logging.getLogger(__name__)

LET_GO_MARGIN_S = 1.0
"""Beyond the sideband's close timeout, how long a close may take before it is aborted
(the closing socket is read until then)."""
LET_GO_DRAIN_S = 10.0
"""Once a socket is closed, how long its reader may take to feed what it had received:
a safety bound, never reached unless the loop stalls for that long."""


class Outcome(enum.StrEnum):
    """How a session worker stopped."""

    ENDED = "ended"
    HANDED_OVER = "handed_over"
    LOST = "lost"


class SessionWorker:
    """The session of one call on this runner (see the module docstring)."""

    def __init__(
        self,
        services: SessionServices,
        lease: Lease,
        plan: SessionPlan,
        core: SessionProtocol,
        *,
        fresh: bool,
        cursor: str,
        activate: bool,
    ) -> None:
        self.services = services
        self.call_id = lease.call_id
        self.lease = lease
        self.plan = plan
        self.core = core
        self.cursor = cursor
        self.renewed_at = time.monotonic()
        self.socket: Sideband | None = None
        self._closer: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._quiet: asyncio.Event | None = None
        self._stop: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._letting_go = asyncio.Event()
        self._late_bills: list[Effect] = []
        self.heard: dict[str, FunctionCall] = {}
        """Every function call read on this worker's sockets, by tool-call id."""
        self._saved_final = False
        self.effects = CallEffects(self)
        self.attachment = Attachment(self, fresh=fresh, activate=activate)
        self.outbox: Outbox[Effect | Note] = Outbox(
            self.effects.carry_out, self._save, services.timing.snapshot_every_s
        )

    # Feeding the core ---------------------------------------------------------------

    def feed(self, effects: list[Effect]) -> None:
        """Queue the effects of one feed and re-arm the core's deadline.

        Tools start at once rather than in turn: starting one is only a task, and the
        model waits for its output.
        """
        if self.outbox.frozen:
            # Stopping: nothing more is carried out, but usage the API reported to us is
            # still counted (``CallEffects.settle_bills``).
            self._late_bills += [e for e in effects if isinstance(e, AccrueUsage)]
            return
        queued: list[Effect] = []
        for effect in effects:
            if isinstance(effect, RunTool):
                self.effects.start_tool(effect)  # a tool's latency starts here
            else:
                queued.append(effect)
        self.outbox.put(queued)
        if self._quiet is not None and not self._busy():
            self._quiet.set()
        deadline = self.core.next_deadline()
        if deadline != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer, self._timer_at = None, deadline
            if deadline is not None:
                delay_s = max(0.0, deadline - time.time())
                self._timer = asyncio.get_running_loop().call_later(delay_s, self._tick)

    def on_event(self, event: dict[str, Any]) -> None:
        """A server event read on the sideband (also while letting go of it)."""
        call = FunctionCall.of(event)
        if call is not None:
            self.heard.setdefault(call.call_id, call)
        self.feed(self.core.on_event(event, time.time()))

    def on_requested_tools(self, calls: list[FunctionCall]) -> None:
        """Function calls another worker heard and left to this one (the ledger's
        ``requested`` entries)."""
        for call in calls:
            if not self.outbox.frozen:
                self.feed(self.core.on_requested_tool(call, time.time()))

    def queue(self, item: Effect | Note) -> None:
        """Queue one item for the pump without feeding the core (lifecycle notes)."""
        self.outbox.put((item,))

    def close_socket_soon(self) -> None:
        """Close the sideband in the background (the call ended, the API did not close it)."""
        if self.socket is not None and self._closer is None:
            self._closer = asyncio.create_task(self._detach())

    def _tick(self) -> None:
        self._timer, self._timer_at = None, None
        self.feed(self.core.on_tick(time.time()))

    def on_command(self, queued: QueuedCommand) -> None:
        """An operator command read from the call's stream (at least once)."""
        if self.outbox.frozen:
            return
        command = Command(queued.command_id, queued.kind, queued.args, queued.issued_at)
        self.cursor = queued.entry_id
        self.feed(self.core.on_command(command, time.time()))

    def on_tool_result(self, tool_call_id: str, ok: bool, output: str) -> None:
        self.feed(self.core.on_tool_result(tool_call_id, output, ok, time.time()))

    @property
    def takes_commands(self) -> bool:
        return not self.outbox.frozen and not self._stop.done()

    # Stopping -------------------------------------------------------------------------

    def hand_over(self) -> None:
        """Detach and release the call for another runner (see the module docstring)."""
        if not self._stop.done():
            self._stop.set_result(Outcome.HANDED_OVER)

    def lose(self) -> None:
        """The lease is gone: stop at once, writing nothing."""
        if not self._stop.done():
            self._stop.set_result(Outcome.LOST)
        elif self._stop.result() is not Outcome.LOST:
            self.outbox.frozen = True  # a hand-over in progress must not write either

    @property
    def lost(self) -> bool:
        return self._stop.done() and self._stop.result() is Outcome.LOST

    @property
    def letting_go(self) -> bool:
        """The worker is closing its sideband for good: a close is not the call's end."""
        return self._letting_go.is_set()

    async def wait_for_room(self) -> None:
        """Until the outbox has caught up, or the worker lets go of the sideband (then
        the socket must be read to its end, whatever the outbox holds)."""
        if self.letting_go:
            return
        waits = {
            asyncio.ensure_future(self.outbox.idle.wait()),
            asyncio.ensure_future(self._letting_go.wait()),
        }
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    async def run(self) -> Outcome:
        pump = asyncio.create_task(self._pump(), name=f"pump-{self.call_id}")
        connection = asyncio.create_task(self.attachment.run(), name=f"sideband-{self.call_id}")
        try:
            racing: set[asyncio.Future[Any]] = {connection, pump, self._stop}
            await asyncio.wait(racing, return_when=asyncio.FIRST_COMPLETED)
            if pump.done():
                pump.result()  # it only stops on an error: the session cannot go on
            outcome = self._stop.result() if self._stop.done() else Outcome.ENDED
            if outcome is Outcome.HANDED_OVER:
                outcome = await self._hand_over(connection)
            if outcome is Outcome.ENDED:
                await self._finish(connection, pump)
        except Stale:
            outcome = Outcome.LOST
        finally:
            # Over for this worker: from now on only bills count (``feed``).
            self.outbox.frozen = True
            await self._let_go(connection)
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
            await self.effects.settle_bills([*self.outbox.pending(), *self._late_bills])
            await self.effects.cancel_tools()
            if not self._saved_final and not self.core.state.ended:
                await self.effects.pass_on(list(self.heard.values()))
            if self._timer is not None:
                self._timer.cancel()
            await self._detach()
            if self._closer is not None:
                await asyncio.gather(self._closer, return_exceptions=True)
        if self.lost:
            self.services.metrics.leases_lost.inc()
            return Outcome.LOST
        return outcome

    async def _finish(self, connection: asyncio.Task[None], pump: asyncio.Task[None]) -> None:
        """The call is over: let the last effects and bills through, save, release.

        A pump that fails meanwhile (Redis away for longer than the effects wait) makes
        the session fail: its lease lapses and another runner takes the call on from the
        last snapshot, which describes only what was carried out.
        """
        timing = self.services.timing
        drained = asyncio.ensure_future(self._drained(connection))
        try:
            await asyncio.wait(
                {drained, pump},
                timeout=timing.finish_wait_s + timing.after_end_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if pump.done():
                pump.result()
            if drained.done():
                drained.result()
        finally:
            drained.cancel()
            await asyncio.gather(drained, return_exceptions=True)
        await self._release()

    async def _let_go(self, connection: asyncio.Task[None]) -> None:
        """Stop reading the sideband without losing what the API had already sent.

        The socket is closed and read until the close completes (the server answers our
        close frame, or the close timeout ends the connection), so events sent before
        the server saw the close, a ``response.done`` above all, are still fed. Between
        attaches there is nothing to read: the attach loop just stops.
        """
        self._letting_go.set()
        if connection.done():
            return
        if self.attachment.reading:
            closing = asyncio.ensure_future(self._detach())
            # The close ends within its bound (aborting a connection the server does not
            # close); what was read by then is finite, and the reader feeds it all, even
            # on a loop slowed down by many calls letting go at once.
            await asyncio.wait({closing}, timeout=self._close_within_s() + LET_GO_MARGIN_S)
            await asyncio.wait({connection}, timeout=LET_GO_DRAIN_S)
            await asyncio.gather(closing, return_exceptions=True)
        if not connection.done():
            connection.cancel()
        await asyncio.gather(connection, return_exceptions=True)

    async def _drained(self, connection: asyncio.Task[None]) -> None:
        await connection
        await self.outbox.idle.wait()

    async def _hand_over(self, connection: asyncio.Task[None]) -> Outcome:
        timing = self.services.timing
        if self._busy():
            self._quiet = asyncio.Event()
            quiet = asyncio.create_task(self._quiet.wait())
            racing: set[asyncio.Future[Any]] = {connection, quiet}
            await asyncio.wait(racing, timeout=timing.quiet_wait_s, return_when="FIRST_COMPLETED")
            quiet.cancel()
        if connection.done() or self.core.state.ended:
            return Outcome.ENDED
        await self._let_go(connection)
        # Detached: what the core sends from now on (a tool's output) is held in the
        # snapshot for the next runner to send.
        self.feed(self.core.on_closed(time.time(), "drop"))
        await self.effects.wait_tools(timing.handover_tool_wait_s)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timing.finish_wait_s):
                await self.outbox.idle.wait()
        await self._release()
        self.services.metrics.handovers.inc()
        return Outcome.HANDED_OVER

    def _busy(self) -> bool:
        state = self.core.state
        return state.gate.busy(time.time()) or bool(state.playing)

    async def _release(self) -> None:
        """Final snapshot (nothing is fed after it), detach, then give the lease up."""
        self.outbox.frozen = True
        if self.outbox.idle.is_set():
            await self._save()
            self._saved_final = not self.lost
        else:  # a snapshot must not describe effects that were never carried out
            logger.warning(
                "call %s: effects still pending at release; its last snapshot stands",
                self.call_id,
            )
        await self._detach()
        await self.services.leases.release(self.lease)

    async def _detach(self) -> None:
        socket, self.socket = self.socket, None
        if socket is not None:
            with contextlib.suppress(Exception):
                await socket.close(self._close_within_s())

    def _close_within_s(self) -> float:
        return self.services.sideband.close_timeout_s + LET_GO_MARGIN_S

    # The pump -----------------------------------------------------------------------

    async def _pump(self) -> None:
        try:
            await self.outbox.run()
        except Stale:
            self.lose()

    async def _save(self) -> None:
        """Save the snapshot now: taken synchronously, so it matches what was written."""
        if self.lost:
            return
        # Through a Redis restart, as every other write of the pump.
        await self.services.store.save_snapshot(
            self.lease, self.core.snapshot(), self.cursor, time.time(), outage_s=OUTAGE_S
        )
