"""Call control: the effects one session core emits and every way its call can end.

``CallControl`` is the session core's hands. It collects effects for the current feed
(``drain`` hands them over, followed by ``Persist`` when state worth a snapshot
changed), holds client events while the socket is detached, answers tools, applies
operator commands, and ends calls through a ``Finale``: the agent's last words first,
then ``Refer`` or ``Hangup``, then ``EndCall`` exactly once. ``SessionProtocol``
decides *when*; this module knows *how*.
"""

from __future__ import annotations

from typing import Any

from shared.models import EndReason
from workers.sessions.client_events import function_call_output, say_instructions
from workers.sessions.commands import Command, DoHangup, DoSay, DoUpdate, parse_command
from workers.sessions.effects import (
    ClaimCommand,
    ClaimControl,
    CommandDone,
    Effect,
    EndCall,
    Hangup,
    Observe,
    ObserveKind,
    Persist,
    Refer,
    Send,
)
from workers.sessions.finale import Finale, FinaleAction
from workers.sessions.plan import SessionPlan, WrapUp
from workers.sessions.state import SessionState


class CallControl:
    """The outbox and the endings of one call (see the module docstring)."""

    def __init__(self, plan: SessionPlan, state: SessionState) -> None:
        self._plan = plan
        self._s = state
        self._out: list[Effect] = []
        self.dirty = False

    def emit(self, effect: Effect) -> None:
        self._out.append(effect)

    def send(self, event: dict[str, Any]) -> None:
        """Send a client event now, or on the next attach while detached."""
        if self._s.attached:
            self._out.append(Send(event))
        else:
            self._s.held.append(event)
            self.dirty = True

    def observe(self, kind: ObserveKind, value: float) -> None:
        self._out.append(Observe(kind, float(value)))

    def drain(self, now_s: float) -> list[Effect]:
        """This feed's effects: first send what is now due, then ``Persist`` if needed."""
        s = self._s
        if s.attached and not s.ended:
            answered = s.needs_follow_up and not s.tools.pending() and s.finale is None
            if answered and not s.gate.busy(now_s):
                s.gate.request()
                s.needs_follow_up = False
            event = s.gate.pump(now_s)
            if event is not None:
                if s.finale is not None:
                    s.finale.on_sent(str(event["event_id"]))
                self.send(event)
                self.dirty = True
        out, self._out = self._out, []
        if self.dirty:
            out.append(Persist())
            self.dirty = False
        return out

    def answer_tool(self, call_id: str, output: str) -> None:
        """Give the model a tool's output; the follow-up response waits for the others."""
        self.send(function_call_output(call_id, output))
        self._s.needs_follow_up = True
        self.dirty = True

    def complete(
        self, command_id: str, ok: bool, detail: str, now_s: float, at: float | None
    ) -> None:
        """Record and acknowledge a command; ``at`` is when it was issued, for latency."""
        self._s.commands[command_id] = (ok, detail)
        self._out.append(CommandDone(command_id, ok, detail))
        if ok and at is not None:
            self.observe("command_latency_s", max(0.0, now_s - at))
        self.dirty = True

    def apply_command(self, command: Command, now_s: float, at: float) -> None:
        """Carry out a new, valid command for a live call, or refuse it.

        A valid command is claimed (``ClaimCommand``) before anything it causes, so that
        a runner taking the call over knows it was being applied (``adopt_commands``).
        """
        s, cid = self._s, command.command_id
        action = parse_command(command, self._plan)
        if isinstance(action, str):
            self.complete(cid, False, action, now_s, None)
            return
        self._out.append(ClaimCommand(cid))
        if isinstance(action, DoUpdate):
            self.send(action.event)
            self.complete(cid, True, "session updated", now_s, at)
        elif isinstance(action, DoHangup):
            words = action.goodbye
            if s.finale is not None:  # Hanging up now beats any slower ending.
                superseded, s.finale, words = s.finale, None, None
                if superseded.command_id is not None:
                    self.complete(superseded.command_id, False, f"superseded by {cid}", now_s, None)
            self.leave(
                "hangup",
                EndReason.OPERATOR_HANGUP,
                now_s,
                words=say_instructions(words) if words else None,
                command=(cid, at),
            )
        elif s.finale is not None:
            self.complete(cid, False, "the call is already ending", now_s, None)
        elif isinstance(action, DoSay):
            s.gate.request(say_instructions(action.text))
            self.complete(cid, True, "will be said", now_s, at)
        else:
            announcement = action.announcement
            self.leave(
                "refer",
                EndReason.TRANSFERRED,
                now_s,
                words=say_instructions(announcement) if announcement else None,
                target_uri=action.target_uri,
                detail=action.target_uri,
                command=(cid, at),
            )

    def leave(
        self,
        action: FinaleAction,
        reason: EndReason,
        now_s: float,
        *,
        words: str | None = None,
        response_id: str | None = None,
        target_uri: str | None = None,
        detail: str | None = None,
        command: tuple[str, float] | None = None,
        grace_s: float | None = None,
        wait_for_words: bool = True,
    ) -> None:
        """End the call after ``words`` (instructions for a last response) or after the
        response ``response_id`` has played; at once when there is nothing to wait for."""
        s = self._s
        finale = Finale(
            action,
            reason,
            now_s + (self._plan.finale_timeout_s if grace_s is None else grace_s),
            target_uri=target_uri,
            detail=detail,
            wait_for_words=wait_for_words,
            command_id=command[0] if command else None,
            command_at=command[1] if command else None,
        )
        s.finale = finale
        self.dirty = True
        if words is not None:
            finale.tag = s.gate.request(words)
        elif response_id is not None and wait_for_words:
            finale.response_id = response_id
            finale.playing = response_id in s.playing
        elif wait_for_words:
            self.fire(now_s)

    def hard_stop_at(self) -> float | None:
        """When the call must be over (start + ``max_duration_s``); ``None`` once ended."""
        s, max_s = self._s, self._plan.max_duration_s
        if max_s is None or s.started_at is None or s.ended:
            return None
        return s.started_at + max_s

    def wrap_up(self, limit: str, reason: EndReason, wrap: WrapUp, now_s: float) -> None:
        """A limit was reached: once per limit, and only if the call is not ending yet.

        The hard stop comes ``wrap.grace_s`` later, and never after the call's
        ``hard_stop_at``, whatever the limit."""
        s = self._s
        if limit in s.limits_fired or s.ended:
            return
        s.limits_fired.add(limit)
        self.dirty = True
        if s.finale is not None:
            return
        grace_s = wrap.grace_s
        stop_at = self.hard_stop_at()
        if stop_at is not None:
            grace_s = max(0.0, min(grace_s, stop_at - now_s))
        uri = self._plan.resolve(wrap.transfer_to) if wrap.transfer_to is not None else None
        self.leave(
            "refer" if uri is not None else "hangup",
            reason,
            now_s,
            words=wrap.goodbye_instructions,
            target_uri=uri,
            detail=uri,
            grace_s=grace_s,
            wait_for_words=wrap.end_when_spoken,
        )

    def stop(self, reason: EndReason, now_s: float) -> None:
        """The hard stop: the pending finale goes ahead now, or the call is hung up."""
        if self._s.ended:
            return
        if self._s.finale is None:
            self.leave("hangup", reason, now_s, grace_s=0.0, wait_for_words=False)
        self.fire(now_s)

    def fire(self, now_s: float) -> None:
        """Carry out the pending finale: claim the Refer or Hangup (``ClaimControl``), send
        it, acknowledge, end."""
        s = self._s
        finale, s.finale = s.finale, None
        if finale is None or s.ended:
            return
        uri = finale.target_uri if finale.action == "refer" else None
        claim = ClaimControl(
            "refer" if uri is not None else "hangup",
            finale.reason,
            finale.detail,
            uri,
            finale.command_id,
        )
        self._out += [claim, Refer(uri) if uri is not None else Hangup()]
        if finale.command_id is not None:
            self.complete(finale.command_id, True, claim.done, now_s, finale.command_at)
        self.end(finale.reason, finale.detail, now_s)

    def end(self, reason: EndReason, detail: str | None, now_s: float) -> None:
        """Emit ``EndCall`` once; a command still waiting on a finale is refused."""
        s = self._s
        if s.ended:
            return
        finale, s.finale = s.finale, None
        if finale is not None and finale.command_id is not None:
            self.complete(finale.command_id, False, f"call ended: {reason.value}", now_s, None)
        s.end_reason = reason
        self._out.append(EndCall(reason, detail))
        self.dirty = True
