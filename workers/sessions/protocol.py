"""The pure per-call session core (sans-I/O): feed it what happened, carry out its effects.

One ``SessionProtocol`` per live call. Its adapter feeds decoded server events, clock
ticks, operator commands, tool results and socket attach/close; every feed returns the
``workers.sessions.effects`` to carry out, in order, and ``next_deadline()`` says when
to tick next. Times are wall-clock Unix seconds, so deadlines and the call's start
survive a failover to another machine (``snapshot()`` / ``restore()``).

Decisions worth knowing:

- The greeting is spoken on the first attach of a fresh call only, never on a re-attach.
- Each ``response.done`` is priced once per response id (kept for the last
  ``PRICED_IDS_KEPT`` ids), also after the call ended, so that cost reconciles with what
  the API billed; a response without an id is not priced; usage that cannot be priced
  (malformed, cached > input) is counted as ``Observe("usage_rejected")`` and skipped.
- Malformed events never raise and never end the call: a field of the wrong type makes
  the event count as if the field were absent, and unknown event types are ignored.
- All ``response.create`` go through the ``ResponseGate``; tool outputs, after all
  pending calls of a response are answered and that response is done, are followed by a
  single ``response.create``.
- A decided end goes through a ``Finale`` (the agent's last words first, then Refer or
  Hangup, then ``EndCall``); ``EndCall`` is emitted at most once. A caller hangup ends
  the call with ``caller_hangup``, or with the pending hangup's own reason.
- Limits: the max-duration wrap-up starts its grace before the limit, so the call is
  over by ``started_at + max_duration_s`` (the hard stop: a pending finale goes ahead
  then, else the call is hung up with ``max_duration``); the budget wrap-up starts when
  the cost reaches the budget and stops the call its grace later, at the latest at the
  same hard stop.
- While the socket is detached, client events are held and sent on the next attach; so
  is a tool output the adapter could not send (``on_unsent``).
- A call taken over from another worker learns from Redis what its snapshot may not
  know yet (``on_taken_over``): commands with a recorded outcome or a claim are never
  applied again; every tool-call id the ledger or the snapshot left open is answered
  (the recorded output, or an error when the outcome is unknown), a tool never claimed
  is run, and an output sent but never echoed by the API is sent again (same item id).
  A function call the ledger holds as ``requested`` (heard by a worker that stopped
  before seeing it through) is handled as if heard now, unless the core knows it
  already; so is one requested after the takeover (``on_requested_tool``).
  A Refer or Hangup the previous worker claimed (``ClaimControl``) is never sent again:
  the call ends at once as the claim says, and the command it carried out, if any, is
  acknowledged as done.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from shared.models import EndReason
from workers.sessions.client_events import error_output
from workers.sessions.commands import Command
from workers.sessions.control import CallControl
from workers.sessions.effects import ClaimControl, CommandDone, Effect, RunTool
from workers.sessions.events import ServerEvents
from workers.sessions.plan import SessionPlan
from workers.sessions.state import SessionState
from workers.sessions.tools import UNKNOWN_OUTCOME, FunctionCall, LedgerEntry, ToolCall

INTERRUPTED = "interrupted by a failover; not applied again"
"""The outcome of a command a previous worker started applying and never finished."""

ClosedReason = Literal["caller", "gone", "drop", "error"]
"""How the sideband closed. ``caller``: the call is over (the caller hung up); ``gone``:
the API had no such call when the session first attached (the caller left before it
started); ``drop``: the socket was lost and will be re-attached; ``error``: the session
failed and cannot go on."""


class SessionProtocol:
    """The decisions of one call's session worker, with no I/O (see the module docstring)."""

    def __init__(self, plan: SessionPlan, state: SessionState | None = None) -> None:
        self._plan = plan
        self._s = state if state is not None else SessionState(plan.call_id, plan.started_at)
        self._c = CallControl(plan, self._s)
        self._events = ServerEvents(plan, self._s, self._c)

    @classmethod
    def restore(cls, plan: SessionPlan, snapshot: Mapping[str, Any]) -> SessionProtocol:
        """Continue a call from another runner's ``snapshot()``; raises ``SnapshotError``."""
        return cls(plan, SessionState.from_json(plan.call_id, snapshot))

    def snapshot(self) -> dict[str, Any]:
        """JSON-serialisable state for ``restore`` (format in ``workers.sessions.state``)."""
        return self._s.to_json(self._plan.model)

    @property
    def state(self) -> SessionState:
        return self._s

    # Feeds -------------------------------------------------------------------------

    def on_attached(self, now_s: float, fresh: bool) -> list[Effect]:
        s = self._s
        if s.ended:
            return []
        s.attached = True
        if s.started_at is None:
            s.started_at = now_s
        s.gate.reset(now_s)
        s.playing.clear()
        if fresh and not s.greeted and self._plan.greeting_instructions:
            s.gate.request(self._plan.greeting_instructions)
        s.greeted = True
        held, s.held = s.held, []
        for event in held:
            self._c.send(event)
        self._c.dirty = True
        return self._c.drain(now_s)

    def on_event(self, event: Mapping[str, Any], now_s: float) -> list[Effect]:
        if not self._events.handle(event, now_s):
            return []
        return self._c.drain(now_s)

    def on_tick(self, now_s: float) -> list[Effect]:
        s = self._s
        if s.ended:
            return []
        for call_id, timeout_s in s.tools.overdue(now_s):
            call = s.tools.finish(call_id, False, "")
            if call is not None:
                call.output = error_output(f"{call.name} timed out after {timeout_s:g} s")
                self._c.answer_tool(call_id, call.output)
                self._c.observe("tool_timeouts", 1.0)
        wrap_up_at = self._wrap_up_at()
        if wrap_up_at is not None and now_s >= wrap_up_at:
            wrap = self._plan.max_duration_wrap_up
            self._c.wrap_up("max_duration", EndReason.MAX_DURATION, wrap, now_s)
        if s.finale is not None and s.finale.due(now_s):
            self._c.fire(now_s)
        stop_at = self._c.hard_stop_at()
        if stop_at is not None and now_s >= stop_at:
            self._c.stop(EndReason.MAX_DURATION, now_s)
        return self._c.drain(now_s)

    def on_command(self, command: Command, now_s: float) -> list[Effect]:
        s, cid = self._s, command.command_id
        if cid in s.commands:
            ok, detail = s.commands[cid]
            self._c.emit(CommandDone(cid, ok, detail))
        elif s.finale is not None and s.finale.command_id == cid:
            return []  # In flight: its CommandDone comes when the transfer or hangup happens.
        elif s.ended:
            self._c.complete(cid, False, "call ended", now_s, None)
        else:
            issued = command.issued_at
            at = issued if issued is not None and _is_number(issued) else now_s
            self._c.apply_command(command, now_s, at)
        return self._c.drain(now_s)

    def on_tool_result(self, call_id: str, output: str, ok: bool, now_s: float) -> list[Effect]:
        call = self._s.tools.finish(call_id, ok, output)
        if call is None:
            return []  # Unknown, already answered, or timed out: never answer twice.
        self._c.observe("tool_latency_s", max(0.0, now_s - call.started_at))
        self._answer(call_id, call, ok, output)
        return self._c.drain(now_s)

    def _answer(self, call_id: str, call: ToolCall, ok: bool, output: str) -> None:
        if not ok:
            call.output = error_output(output.strip() or f"{call.name} failed")
        if not self._s.ended:
            self._c.answer_tool(call_id, call.output or "")
        self._c.dirty = True

    def on_unsent(self, event: Mapping[str, Any], now_s: float) -> list[Effect]:
        """A tool output that could not be sent (the socket had just closed): it goes out
        on the next attach, followed by a response."""
        s = self._s
        if s.ended:
            return []
        s.held.append(dict(event))
        s.needs_follow_up = True
        self._c.dirty = True
        return self._c.drain(now_s)

    def on_requested_tool(self, call: FunctionCall, now_s: float) -> list[Effect]:
        """A function call another worker heard and left ``requested`` in the ledger:
        handled as if heard now, unless this core already knows the id."""
        if self._s.tools.seen(call.call_id):
            return []
        return self.on_event(call.event(), now_s)

    def on_taken_over(
        self,
        results: Mapping[str, tuple[bool, str]],
        claimed: Iterable[str],
        ledger: Mapping[str, LedgerEntry],
        now_s: float,
        control: ClaimControl | None = None,
    ) -> list[Effect]:
        """What Redis knows beyond the restored snapshot, which may be a little older.

        ``results``: the outcome recorded for each command id; ``claimed``: the ids a
        worker started applying; ``ledger``: the tool ledger; ``control``: the call's
        Refer or Hangup, if a worker claimed one. Call it once, before the first attach
        (see the module docstring).
        """
        self._adopt_control(control, results, now_s)
        self._adopt_commands(results, claimed, now_s)
        self._adopt_tools(ledger, now_s)
        return self._c.drain(now_s)

    def _adopt_control(
        self,
        claim: ClaimControl | None,
        results: Mapping[str, tuple[bool, str]],
        now_s: float,
    ) -> None:
        """The Refer or Hangup went out (or was about to): the call is over as it says."""
        s = self._s
        if claim is None or s.ended:
            return
        cid = claim.command_id
        finale = s.finale
        if finale is not None and (finale.command_id == cid or finale.command_id in results):
            s.finale = None  # the finale it came from, or one settled before it
        if cid is not None and cid not in s.commands and cid not in results:
            self._c.complete(cid, True, claim.done, now_s, None)
        self._c.end(claim.reason, claim.detail, now_s)

    def _adopt_commands(
        self, results: Mapping[str, tuple[bool, str]], claimed: Iterable[str], now_s: float
    ) -> None:
        s = self._s
        for cid, outcome in results.items():
            finale = s.finale
            if finale is not None and finale.command_id == cid:
                # The finale went on after the snapshot: it was carried out (its Refer
                # or Hangup went out, then the outcome) or it was called off.
                s.finale = None
                if outcome[0]:
                    s.commands[cid] = outcome
                    self._c.end(finale.reason, finale.detail, now_s)
            if cid not in s.commands:
                s.commands[cid] = outcome
                self._c.dirty = True
        for cid in sorted(set(claimed)):
            in_finale = s.finale is not None and s.finale.command_id == cid
            if cid not in s.commands and not in_finale:
                self._c.complete(cid, False, INTERRUPTED, now_s, None)

    def _adopt_tools(self, ledger: Mapping[str, LedgerEntry], now_s: float) -> None:
        desk = self._s.tools
        for call_id in sorted(set(ledger) | set(desk.pending_ids())):
            entry = ledger.get(call_id)
            known = desk.get(call_id)
            if entry is not None and entry.state in ("answered", "delivered"):
                call = desk.adopt(call_id, entry.name, now_s)
                if call.ok is None:
                    ok = entry.ok if entry.ok is not None else True
                    desk.finish(call_id, ok, entry.output or "")
                if entry.state == "answered" and not self._s.ended:
                    # Sent, never echoed: a runner killed at once may have lost it with
                    # its socket. The same item id again: the API keeps one of the two.
                    self._c.answer_tool(call_id, entry.output or "")
                self._c.dirty = True
            elif known is not None and known.ok is not None:
                continue  # settled before the snapshot (an output not yet sent is held)
            elif entry is not None and entry.state == "requested" and known is None:
                # Heard by a worker that stopped before it claimed or answered it.
                heard = FunctionCall(call_id, entry.name, entry.arguments or "")
                self._events.handle(heard.event(), now_s)
            elif (
                (entry is None or entry.state == "requested")
                and known is not None
                and self._run_again(call_id, known, now_s)
            ):
                continue
            else:
                call = desk.adopt(call_id, entry.name if entry is not None else "", now_s)
                outcome = entry.outcome if entry is not None else None
                ok, output = outcome if outcome is not None else (False, UNKNOWN_OUTCOME)
                desk.finish(call_id, ok, output)
                self._answer(call_id, call, ok, output)

    def _run_again(self, call_id: str, call: ToolCall, now_s: float) -> bool:
        """A pending tool the ledger never saw claimed never started: run it now (its
        claim takes over a ``requested`` entry)."""
        spec = self._plan.tool(call.name)
        if spec is None or call.arguments is None:
            return False
        self._s.tools.start(call_id, spec.name, now_s, spec.timeout_s, call.arguments)
        self._c.emit(RunTool(call_id, spec.name, dict(call.arguments), spec.timeout_s))
        self._c.dirty = True
        return True

    def on_closed(self, now_s: float, reason: ClosedReason) -> list[Effect]:
        s = self._s
        s.attached = False
        finale = s.finale
        if s.ended:
            pass
        elif reason == "caller" and finale is not None and finale.action == "hangup":
            # The hangup we were about to do happened anyway: it keeps its reason.
            s.finale = None
            if finale.command_id is not None:
                self._c.complete(finale.command_id, True, "the caller hung up first", now_s, None)
            self._c.end(finale.reason, finale.detail, now_s)
        elif reason == "caller":
            self._c.end(EndReason.CALLER_HANGUP, None, now_s)
        elif reason == "gone":
            self._c.end(EndReason.CALLER_GONE, "no such call at the API at the first attach", now_s)
        elif reason == "error":
            self._c.end(EndReason.ERROR, "session closed with an error", now_s)
        self._c.dirty = True
        return self._c.drain(now_s)

    def next_deadline(self) -> float | None:
        """When ``on_tick`` must run next (Unix s), or ``None`` if nothing is timed."""
        s = self._s
        if s.ended:
            return None
        deadlines = [
            s.tools.deadline(),
            s.gate.deadline(),
            self._wrap_up_at(),
            self._c.hard_stop_at(),
        ]
        if s.finale is not None:
            deadlines.append(s.finale.deadline_at)
        return min((d for d in deadlines if d is not None), default=None)

    def _wrap_up_at(self) -> float | None:
        """When the max-duration wrap-up starts: its grace before the hard stop."""
        s, max_s = self._s, self._plan.max_duration_s
        if max_s is None or s.started_at is None or s.ended or "max_duration" in s.limits_fired:
            return None
        return s.started_at + max(0.0, max_s - self._plan.max_duration_wrap_up.grace_s)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
