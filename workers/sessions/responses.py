"""The response gate: at most one response in flight, ours queued behind the model's.

The Realtime API refuses a ``response.create`` while a response is active
(``conversation_already_has_active_response``), and the server's VAD creates
responses on its own. So every response the core wants (greeting, idle prompt, tool
follow-up, say, goodbye) goes through this gate: it is sent at once when no response is
active, or queued and sent when the active one is done. A response counts as active
from our ``response.create`` (until ``response.created`` or an ``error`` echoing its
``event_id``) or from ``response.created`` until ``response.done``.

Every ``response.create`` of ours carries its ``event_id`` in ``response.metadata``
(``TAG_KEY``), which the server echoes in ``response.created``: a response created
without it is the server's own (VAD, idle timeout), even while ours is on its way, so
ours stays pending until it is created or refused. This matters because the server
creates its reply to an idle timeout at once, and our response sent for the same
timeout then arrives while that reply is active and is refused: it must be sent again.

A missed ``response.done`` (a dropped socket, a failover) must not wedge the call, so
the gate forgets what it believes is active after ``STALL_S`` without news.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from workers.sessions.client_events import response_create, response_tag

STALL_S = 30.0
MAX_QUEUED = 16
ACTIVE_RESPONSE_CODE = "conversation_already_has_active_response"
_UNSEEN = ""
"""Stands for a response the server says is active but whose id we never saw."""


class ResponseGate:
    """Holds our ``response.create`` events until no response is active."""

    def __init__(self, queued: list[dict[str, Any]] | None = None, seq: int = 0) -> None:
        self._queue: deque[dict[str, Any]] = deque(queued or (), maxlen=MAX_QUEUED)
        self._seq = seq
        self._active: set[str] = set()
        self._in_flight: dict[str, Any] | None = None
        self._since: float | None = None
        self._optional: set[str] = set()

    def request(self, instructions: str | None = None) -> str:
        """Queue a ``response.create``; ``pump`` sends it when the floor is free.

        Returns its event id, which is also its tag in the response's metadata, so the
        response can be recognised when it is created.
        """
        self._seq += 1
        event_id = f"sb_resp_{self._seq}"
        self._queue.append(response_create(event_id, instructions, event_id))
        return event_id

    def offer(self, instructions: str, now_s: float) -> None:
        """A response worth sending only if nothing else is said now.

        For idle prompts: with ``create_response`` the server answers an idle timeout on
        its own, and that answer is the prompt; ours must not come on top of it.
        """
        if self._queue or self.busy(now_s):
            return
        self._optional.add(self.request(instructions))

    def busy(self, now_s: float) -> bool:
        if self._in_flight is None and not self._active:
            return False
        if self._since is not None and now_s - self._since >= STALL_S:
            self.reset(now_s)
            return False
        return True

    def pump(self, now_s: float) -> dict[str, Any] | None:
        """The next queued event to send now, if any and the floor is free."""
        if not self._queue or self.busy(now_s):
            return None
        event = self._queue.popleft()
        self._in_flight = event
        self._since = now_s
        self._optional &= {event["event_id"]}
        return event

    def created(self, response_id: str, now_s: float, metadata: object = None) -> None:
        # Ours or the server's, the floor is taken either way; ours is no longer pending
        # only if this is ours (the server may still refuse it otherwise).
        event = self._in_flight
        if event is not None and response_tag(metadata) == event["event_id"]:
            self._in_flight = None
        self._active.add(response_id)
        self._since = now_s

    def done(self, response_id: str | None, now_s: float) -> None:
        # A done whose created was missed (a drop) would otherwise leave ours pending.
        self._in_flight = None
        if response_id is None:
            self._active.clear()
        else:
            self._active.discard(response_id)
            self._active.discard(_UNSEEN)
        self._since = now_s

    def refused(self, event_id: object, code: object, now_s: float) -> None:
        """An ``error`` echoing ``event_id``: if it was our pending create, it never started.

        Refused because another response was active, it goes first again once that one
        is done; refused for any other reason, it is dropped (resending cannot help).
        """
        event = self._in_flight
        if event is None or event_id is None or event_id != event["event_id"]:
            return
        self._in_flight = None
        self._since = now_s
        if code == ACTIVE_RESPONSE_CODE and event["event_id"] not in self._optional:
            self._queue.appendleft(event)
            self._active.add(_UNSEEN)

    def reset(self, now_s: float) -> None:
        """Forget what is active (after a re-attach, the server's state is unknown)."""
        self._active.clear()
        self._in_flight = None
        self._since = now_s

    def deadline(self) -> float | None:
        """When a stalled floor would be released for a queued response."""
        if self._queue and self._since is not None and (self._active or self._in_flight):
            return self._since + STALL_S
        return None

    @property
    def queued(self) -> list[dict[str, Any]]:
        return list(self._queue)

    @property
    def seq(self) -> int:
        return self._seq
