"""Carrying out a session core's effects for one call, in the order the core gave them.

``CallEffects.carry_out`` takes a batch from the worker's outbox. Redis writes of the
batch (transcript lines, lifecycle notes) are collected and sent as one fenced script
before anything that acts outside Redis (a REST request, the end of the call) and at
the end of the batch. What each effect becomes:

- ``Send``: one frame on the sideband (lost if the socket just closed: the core holds
  events only while it knows it is detached). A ``function_call_output`` is first
  marked ``answered`` in the tool ledger (fenced), and not sent if it already was (a
  resend after a takeover only if it was never ``delivered``), so no tool-call id is
  answered twice; one that certainly did not go out (the socket had closed) is
  unmarked and handed back to the core, which sends it on the next attach;
- ``OutputDelivered``: the ledger notes the API has the output (no one sends it again);
- ``AppendTranscript``: ``XADD`` to the capped transcript stream, and the record's turn
  count of the role in the same script;
- ``AccrueUsage``: ``shared.accounting`` (once per response id; it also keeps the call
  record's ``cost_usd`` and ``usage``), counted beside the pump by the call's
  ``Biller``, so that a tool's output never waits behind its response's bill. It needs
  no lease: usage reported on a socket this worker held is counted whatever became of
  its lease, and an accrual once started is never abandoned; ``EndCall`` and the end
  of the session (``settle_bills``) wait for it, so the final record holds every bill;
- ``RunTool``: claim the tool-call id in the Redis ledger (through a short outage),
  run the tool in the background, feed its outcome back, then record it; a claimed id
  is never run again. The worker starts it as soon as the core asks (``start_tool``),
  not in turn: it only starts a task, and the claim need not wait for the batch ahead
  of it. A worker that stops without seeing its function calls through leaves them to
  the call's next holder (``pass_on``);
- ``ClaimControl``: the call's Refer or Hangup claimed in Redis
  (``SessionStore.claim_control``), in the fenced write just before the request;
- ``Refer`` / ``Hangup``: the REST call-control endpoints, only after this worker's
  own claim: a call already claimed (or a lost lease) sends nothing;
- ``EndCall``: the final record (fenced compare-and-set to ``ended``), the admission slot
  released, the outcome counted, the post-call task queued, the socket closed soon;
- ``Observe``: runner metrics; ``ClaimCommand``: the command's claim, written before
  anything it causes; ``CommandDone``: the command's result; ``Persist``: the worker
  saves a snapshot soon.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import redis

from shared.accounting import AsyncAccounting
from shared.errors import CallGone, SwitchboardError
from shared.outage import TRANSIENT_ERRORS, through_outage
from workers.sessions.biller import Biller
from workers.sessions.client_events import tool_output_id
from workers.sessions.effects import (
    AccrueUsage,
    AppendTranscript,
    ClaimCommand,
    ClaimControl,
    CommandDone,
    Effect,
    EndCall,
    Hangup,
    Observe,
    OutputDelivered,
    Persist,
    Refer,
    RunTool,
    Send,
)
from workers.sessions.lease import Op, Stale
from workers.sessions.session_store import Answer
from workers.sessions.tools import UNKNOWN_OUTCOME, FunctionCall

if TYPE_CHECKING:
    from workers.sessions.session_worker import SessionWorker

logger = logging.getLogger(__name__)

T = TypeVar("T")

OUTAGE_S = 30.0
"""How long Redis work of an effect (records, usage, the end) is retried while Redis is
unreachable (``shared.outage``): a restart must not cost a bill or a call's end."""


@dataclass(frozen=True, slots=True)
class Note:
    """A lifecycle event of the session (attached, detached, ended) for the events stream."""

    kind: str
    fields: Mapping[str, object]


class CallEffects:
    """The hands of one session worker (see the module docstring)."""

    def __init__(self, worker: SessionWorker) -> None:
        self._w = worker
        self._tools: set[asyncio.Task[None]] = set()
        self._bills: dict[str, asyncio.Task[None]] = {}
        self.resend: set[str] = set()
        """Tool-call ids whose output a previous worker sent and the API never echoed:
        their output may go out again (``SessionStore.answer_tool(again=True)``)."""
        self._biller: Biller[AccrueUsage] = Biller(self._accrue, f"bills of {worker.call_id}")
        self._closing: asyncio.TimerHandle | None = None
        self._claimed: ClaimControl | None = None
        self._control_failed: dict[str, str] = {}
        """Operator commands whose Refer or Hangup the API refused: command id -> why."""
        """The control claim this worker just wrote, for the Refer or Hangup after it."""
        self._accounting = AsyncAccounting(worker.services.redis, worker.plan.price_table)

    def note(self, event: str, **fields: object) -> None:
        self._w.queue(Note(event, fields))

    async def carry_out(self, batch: list[Effect | Note]) -> None:
        w = self._w
        services, store = w.services, w.services.store
        ops: list[Op] = []
        for effect in batch:
            if isinstance(effect, Send):
                await self._send(effect.event)
            elif isinstance(effect, AppendTranscript):
                ops += store.transcript_op(w.call_id, effect.role, effect.text, effect.at)
            elif isinstance(effect, Note):
                ops += store.event_op(w.call_id, effect.kind, time.time(), effect.fields)
            elif isinstance(effect, Persist):
                w.outbox.mark_dirty()
            elif isinstance(effect, Observe):
                services.metrics.observe(effect.kind, effect.value)
            elif isinstance(effect, AccrueUsage):
                self._biller.put(effect)
            elif isinstance(effect, ClaimCommand):
                # Written before anything the command causes (the next effects).
                ops += store.command_claim_op(w.call_id, effect.command_id, w.lease.token)
                await self._write(ops)
                ops = []
            elif isinstance(effect, ClaimControl):
                # The write that precedes the request (the next effect) carries the claim.
                self._claimed = effect if await self._claim_control(ops, effect) else None
                ops = []
            elif isinstance(effect, CommandDone):
                # Command results live in a script of their own (first answer wins);
                # checking the lease just before keeps a stale worker out of them.
                await self._write(ops, check=True)
                ops = []
                # The core acknowledges a transfer or hangup with its request; the result
                # says so only if the API carried the request out.
                failed = self._control_failed.pop(effect.command_id, None)
                ok, detail = (False, failed) if failed is not None else (effect.ok, effect.detail)
                await self._patiently(
                    services.commands.record_result, w.call_id, effect.command_id, ok, detail
                )
            elif isinstance(effect, OutputDelivered):
                call = w.core.state.tools.get(effect.tool_call_id)
                if call is not None:
                    ops += store.tool_delivered_op(
                        w.call_id, effect.tool_call_id, call.name, call.ok, call.output
                    )
            elif isinstance(effect, RunTool):
                self.start_tool(effect)
            else:
                await self._write(ops)
                ops = []
                if isinstance(effect, EndCall):
                    await self._end(effect)
                else:
                    await self._control(effect)
        await self._write(ops)

    async def _patiently(self, op: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``op(*args)``, through a short Redis outage (it must be safe to repeat; a
        fenced write's ``Stale`` is never retried)."""
        return await through_outage(lambda: op(*args), deadline_s=OUTAGE_S)

    async def _write(self, ops: list[Op], *, check: bool = False) -> None:
        """A fenced batch of Redis writes (a lost lease raises ``Stale``, never retried)."""
        store, lease = self._w.services.store, self._w.lease
        await through_outage(lambda: store.write(lease, ops, check=check), deadline_s=OUTAGE_S)

    async def _send(self, event: dict[str, Any]) -> None:
        w = self._w
        tool_call_id = tool_output_id(event)
        socket = w.socket
        if tool_call_id is not None and socket is not None and socket.is_open:
            answer = await self._answer_tool(tool_call_id, event)
            if not answer.sent:
                logger.info("call %s: %s was answered already", w.call_id, tool_call_id)
                return
            if await self._send_now(event):
                return
            # Certainly not sent: unmark it, and the core sends it on the next attach.
            await self._patiently(w.services.store.unanswer_tool, w.lease, tool_call_id, answer)
            w.feed(w.core.on_unsent(event, time.time()))
        elif tool_call_id is not None:
            logger.info("call %s: output of %s held, the socket closed", w.call_id, tool_call_id)
            w.feed(w.core.on_unsent(event, time.time()))
        elif not await self._send_now(event):
            logger.info("call %s: %s not sent, the socket closed", w.call_id, event["type"])

    async def _send_now(self, event: dict[str, Any]) -> bool:
        socket = self._w.socket
        return socket is not None and await socket.send(event)

    async def _answer_tool(self, tool_call_id: str, event: dict[str, Any]) -> Answer:
        w = self._w
        call = w.core.state.tools.get(tool_call_id)
        name, ok = (call.name, call.ok) if call is not None else ("", None)
        output = str(event["item"].get("output", ""))
        again = tool_call_id in self.resend
        self.resend.discard(tool_call_id)
        answer = functools.partial(w.services.store.answer_tool, again=again)
        return await self._patiently(answer, w.lease, tool_call_id, name, ok, output)

    async def settle_bills(self, pending: list[Effect | Note]) -> None:
        """Count the usage among effects a stopped session left undone, and wait for the
        accruals already started.

        The usage of a response is reported once, to this worker alone, and counting it
        is idempotent per response id and needs no lease: so even a worker that lost its
        lease (Redis was away too long) or crashed still counts what it was told, the
        biller's queue first.
        """
        await self._biller.counted()
        bills = [effect for effect in pending if isinstance(effect, AccrueUsage)]
        if bills:
            logger.info("call %s: counting %d bills left undone", self._w.call_id, len(bills))
        await asyncio.gather(*(self._accrue(bill) for bill in bills))
        await asyncio.gather(*self._bills.values())

    async def _accrue(self, effect: AccrueUsage) -> None:
        """Count one bill; shielded, so a stopped pump never leaves an accrual half done
        (a second one of the same response joins the first)."""
        task = self._bills.get(effect.response_id)
        if task is None:
            task = asyncio.ensure_future(self._count(effect))
            self._bills[effect.response_id] = task
            task.add_done_callback(lambda _: self._bills.pop(effect.response_id, None))
        await asyncio.shield(task)

    async def _count(self, effect: AccrueUsage) -> None:
        # A response's usage is reported once and never again, so a Redis that is away
        # for a moment must not cost it (``AsyncAccounting.accrue_retrying``).
        w = self._w
        try:
            await self._accounting.accrue_retrying(
                w.call_id,
                w.plan.profile or None,
                effect.model,
                effect.response_id,
                effect.usage,
                deadline_s=OUTAGE_S,
            )
        except (SwitchboardError, ValueError, *TRANSIENT_ERRORS) as exc:
            logger.error("call %s: usage of %s not counted: %s", w.call_id, effect.response_id, exc)

    async def _claim_control(self, ops: list[Op], claim: ClaimControl) -> bool:
        w = self._w
        store, lease = w.services.store, w.lease
        value = store.control_json(claim, lease.token, time.time())
        claimed = await through_outage(
            lambda: store.claim_control(lease, ops, value), deadline_s=OUTAGE_S
        )
        if not claimed:
            logger.warning("call %s: its %s was claimed already", w.call_id, claim.action)
        return claimed

    async def _finish_pending_bills(self) -> None:
        """Put into the cluster totals the bills of this call that a runner killed between
        an accrual's two steps left half counted, waiting for marks too young to take over
        (``AsyncAccounting.finish_pending_when_due``)."""
        call_id = self._w.call_id
        try:
            finished = await through_outage(
                lambda: self._accounting.finish_pending_when_due(call_id), deadline_s=OUTAGE_S
            )
        except TRANSIENT_ERRORS as exc:
            logger.error("call %s: half-counted bills not finished: %s", call_id, exc)
            return
        if finished:
            logger.info("call %s: finished %d half-counted bills", call_id, finished)

    async def _control(self, effect: Refer | Hangup) -> None:
        w = self._w
        claim, self._claimed = self._claimed, None
        if claim is None:
            logger.warning("call %s: %s not sent, unclaimed", w.call_id, type(effect).__name__)
            return
        try:
            if isinstance(effect, Refer):
                await w.services.realtime.refer(w.call_id, effect.target_uri)
            else:
                await w.services.realtime.hangup(w.call_id)
        except CallGone:
            logger.info("call %s was already gone for %s", w.call_id, type(effect).__name__)
        except SwitchboardError as exc:
            action = type(effect).__name__.lower()
            logger.error("call %s: %s failed: %s", w.call_id, action, exc)
            self.note("control_failed", action=action, error=str(exc))
            if claim.command_id is not None:
                self._control_failed[claim.command_id] = f"{action} refused by the API: {exc}"

    async def _end(self, effect: EndCall) -> None:
        w = self._w
        await self._biller.counted()  # the final record and the post-call summary hold them
        await self._finish_pending_bills()
        services, state, now_s = w.services, w.core.state, time.time()
        started_at = state.started_at or w.plan.started_at or now_s
        duration_s = round(max(0.0, now_s - started_at), 3)
        # The turn counts are the record's own: each transcript line counts its turn.
        fields = {"ended_at": now_s, "duration_s": duration_s, "end_detail": effect.detail}
        change = await self._patiently(services.store.finish, w.lease, effect.reason, fields, now_s)
        await self._patiently(services.admission.release, w.call_id)
        if change.applied:
            reason = effect.reason.value
            try:
                profile = w.plan.profile or None
                await through_outage(
                    lambda: self._accounting.count_outcome(
                        "ended", profile, reason, call_id=w.call_id
                    ),
                    deadline_s=OUTAGE_S,
                )
            except ValueError as exc:
                logger.error("call %s: outcome not counted: %s", w.call_id, exc)
            await self._patiently(services.post_call, w.call_id)
            services.metrics.ended(reason)
            services.metrics.call_duration_s.observe(duration_s)
            services.metrics.call_cost_usd.observe(float(state.cost.total_usd))
            self.note("ended", reason=reason, detail=effect.detail)
        # The API closes the socket of an ended call; if it does not, we do.
        self._closing = asyncio.get_running_loop().call_later(
            services.timing.after_end_s, lambda: self._w.close_socket_soon()
        )

    def start_tool(self, effect: RunTool) -> None:
        """Run a tool in the background; its outcome is fed back to the worker."""
        task = asyncio.create_task(self._run_tool(effect))
        self._tools.add(task)
        task.add_done_callback(self._tools.discard)

    async def _run_tool(self, effect: RunTool) -> None:
        w = self._w
        store = w.services.store
        ran = False
        try:
            # Through a short outage: a tool the model asked for is worth the wait (a
            # repeated claim is still this grant's own), and a worker that loses its
            # lease meanwhile leaves the call to the next one (``pass_on``).
            claim = await self._patiently(
                store.claim_tool, w.lease, effect.tool_call_id, effect.name
            )
            outcome = claim.entry.outcome if claim.entry is not None else None
            if claim.run:
                ok, output = await w.services.run_tool(
                    effect.name, effect.arguments, effect.timeout_s
                )
                ran = True
            elif outcome is not None:
                ok, output = outcome
            else:
                ok, output = False, UNKNOWN_OUTCOME
        except Stale:
            w.lose()
            return
        except (SwitchboardError, OSError, redis.RedisError) as exc:
            logger.error("call %s: tool %s failed to run: %s", w.call_id, effect.name, exc)
            ok, output = False, f"{effect.name} could not be run"
        # The output goes to the model first; the ledger records the outcome meanwhile
        # (the claim above already keeps the tool from running twice, and the answer
        # mark, which this record never overwrites, keeps its output from going twice).
        w.on_tool_result(effect.tool_call_id, ok, output)
        if ran:
            try:
                await store.record_tool(w.lease, effect.tool_call_id, effect.name, ok, output)
            except Stale:
                w.lose()
            except redis.RedisError as exc:
                logger.error("call %s: outcome of %s not recorded: %s", w.call_id, effect.name, exc)

    async def pass_on(self, calls: list[FunctionCall]) -> None:
        """Leave the function calls this worker heard to whoever holds the call now or
        next (``SessionStore.request_tool``: only ids nothing else is recorded for), and
        wake the holder of the moment, who may have loaded the call before."""
        w = self._w
        store, commands = w.services.store, w.services.commands
        for call in calls:
            try:
                written, holder = await self._patiently(
                    store.request_tool, w.call_id, call, w.services.runner_id
                )
                if not written:
                    continue
                if holder is None or holder == w.lease:  # whoever takes it on loads it
                    logger.info("call %s: %s left to its next runner", w.call_id, call.call_id)
                    continue
                logger.info("call %s: %s left to %s", w.call_id, call.call_id, holder.runner_id)
                await self._patiently(commands.wake, holder.runner_id, w.call_id)
            except (redis.RedisError, *TRANSIENT_ERRORS) as exc:
                logger.error("call %s: %s not passed on: %s", w.call_id, call.call_id, exc)

    @property
    def tools_running(self) -> bool:
        return bool(self._tools)

    async def wait_tools(self, timeout_s: float) -> None:
        if self._tools:
            await asyncio.wait(set(self._tools), timeout=timeout_s)

    async def cancel_tools(self) -> None:
        if self._closing is not None:
            self._closing.cancel()
        tasks = set(self._tools)
        for task in tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*tasks, return_exceptions=True)
