"""One running realtime session: its scripted model, attached sockets and response timing.

A SIP call gets one ``LiveSession`` when it is answered (``EmulatedCall.session``); a
standalone ``?model=`` socket gets its own. Every event goes to every attached socket
(``Outlet``) and into the call's ground truth. Scripted events pass through the fault
gate: ``ws_drop_rate`` closes a socket with 1011 instead of sending (the call goes on,
the client may re-attach) and ``malformed_event_rate`` adds a broken or unknown frame
(counted in the call's ``malformed_sent``).

Responses run as tasks on the session's clock: ``response.created``, a think pause,
the output events with transcript deltas at twice real-time speed, ``response.done``
(its usage added to ground truth), then ``output_audio_buffer.stopped`` once the
caller has heard it all. A cancelled response stops generating, but the caller still
hears the audio generated so far; ``output_audio_buffer.clear`` cuts it off and is
answered with ``output_audio_buffer.cleared`` instead of ``stopped``. Pauses are
scenario seconds times ``config.time_scale``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect

from emulator.context import EmulatorContext
from emulator.model import ScriptedModel
from emulator.response import ScriptedResponse, event
from emulator.state import Attachment, ClosedBy, EmulatedCall
from emulator.usage import speech_s

THINK_S = 0.3
"""Scenario seconds between ``response.created`` and the first output."""
TEXT_DELTA_S = 0.05
_MALFORMED = ('{"type": "response.output_audio_transcript.delta", "delta": "', "unknown")
_SEND_ERRORS = (WebSocketDisconnect, RuntimeError, OSError)
ABNORMAL_CLOSE = 1006
"""The close code of a socket whose peer went without a close frame."""


class Outlet:
    """One attached websocket, and its attachment interval in ground truth."""

    def __init__(self, websocket: WebSocket, attachment: Attachment | None) -> None:
        self.websocket = websocket
        self.attachment = attachment
        self.open = True

    def mark_closed(self, by: ClosedBy, code: int | None) -> None:
        if self.open:
            self.open = False
            if self.attachment is not None:
                self.attachment.closed_at = time.time()
                self.attachment.closed_by, self.attachment.close_code = by, code

    async def send_text(self, text: str) -> None:
        if not self.open:
            return
        try:
            await self.websocket.send_text(text)
        except WebSocketDisconnect as exc:
            self.mark_closed("client", exc.code)
        except _SEND_ERRORS:
            self.mark_closed("client", ABNORMAL_CLOSE)

    async def close(self, code: int, reason: str = "") -> None:
        if not self.open:
            return
        self.mark_closed("server", code)  # before the close frame, so a re-attach never overlaps
        with contextlib.suppress(*_SEND_ERRORS):
            await self.websocket.close(code, reason)


class LiveSession:
    """The running session of one call (or of one standalone socket)."""

    def __init__(self, ctx: EmulatorContext, call: EmulatedCall | None, session: dict[str, Any]):
        self.ctx = ctx
        self.call = call
        self.model = ScriptedModel(session)
        self.scale_s = ctx.config.time_scale
        self.outlets: list[Outlet] = []
        self.response: ScriptedResponse | None = None
        self.replies_done = 0
        self.playing_until = 0.0
        self.playing_id: str | None = None
        self.pending_audio: list[tuple[str, float, Any]] = []
        self.started_at = time.monotonic()
        self.unattached_since = self.started_at
        self.quiet_since = self.started_at
        self.tasks: set[asyncio.Task[None]] = set()
        self._cancel = asyncio.Event()
        self._cut = asyncio.Event()
        self._tick = asyncio.Event()

    @property
    def ended(self) -> bool:
        return self.call is not None and not self.call.live

    def audio_ms(self) -> int:
        """Position on the caller's audio timeline, in scenario milliseconds."""
        return int((time.monotonic() - self.started_at) / self.scale_s * 1000)

    def busy(self) -> bool:
        return self.response is not None or time.monotonic() < self.playing_until

    def spawn(self, coro: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def notify(self) -> None:
        self._tick.set()
        self._tick = asyncio.Event()

    async def wait_until(self, ready: Callable[[], bool], timeout_s: float) -> bool:
        """Wait (wall-clock seconds) until ``ready()``; False on timeout or call end."""
        deadline = time.monotonic() + timeout_s
        while not ready():
            remaining = deadline - time.monotonic()
            if self.ended or remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._tick.wait(), remaining)
            except TimeoutError:
                return ready()
        return True

    async def sleep(self, scenario_s: float) -> bool:
        """A scripted pause; False if the call ended meanwhile."""
        await self.wait_until(lambda: False, scenario_s * self.scale_s)
        return not self.ended

    async def attach(self, outlet: Outlet) -> None:
        await self.send_to(outlet, event("session.created", session=self.model.session))
        if self.ended:  # the call ended while this socket was opening
            await outlet.close(1000)
            return
        self.outlets.append(outlet)
        self.notify()

    def detach(self, outlet: Outlet) -> None:
        """Stop sending to ``outlet`` (closing it is up to the caller)."""
        if outlet in self.outlets:
            self.outlets.remove(outlet)
            if not self.outlets:
                self.unattached_since = time.monotonic()
            self.notify()

    async def send_to(self, outlet: Outlet, body: dict[str, Any]) -> None:
        """A reply to one socket (session.created, errors): no fault injection."""
        if self.call is not None:
            self.call.record_sent(body)
        await outlet.send_text(orjson.dumps(body).decode())

    async def broadcast(self, body: dict[str, Any], scripted: bool = True) -> None:
        if not self.outlets:
            return
        if self.call is not None:
            self.call.record_sent(body)
        text = orjson.dumps(body).decode()
        faults, rng = self.ctx.faults, self.ctx.rng
        took_it: list[Attachment] = []
        for outlet in list(self.outlets):
            if scripted and faults.ws_drop_rate and rng.random() < faults.ws_drop_rate:
                self.detach(outlet)
                await outlet.close(1011, "injected fault: connection dropped")
                continue
            await outlet.send_text(text)
            if outlet.open and outlet.attachment is not None:
                took_it.append(outlet.attachment)
            malformed = scripted and faults.malformed_event_rate > 0
            if malformed and rng.random() < faults.malformed_event_rate:
                if self.call is not None:
                    self.call.malformed_sent += 1
                await outlet.send_text(self._malformed())
            if not outlet.open:
                self.detach(outlet)
        if self.call is not None and body.get("type") == "response.function_call_arguments.done":
            self.call.record_function_call(body, took_it)

    def _malformed(self) -> str:
        if self.ctx.rng.random() < 0.5:
            return _MALFORMED[0]
        return orjson.dumps(event("emulator.unannounced_event", note=_MALFORMED[1])).decode()

    async def broadcast_all(self, bodies: list[dict[str, Any]]) -> None:
        for body in bodies:
            await self.broadcast(body)

    async def close(self, code: int = 1000) -> None:
        """Close every socket (the call is over) and stop the session's tasks."""
        current = asyncio.current_task()
        for task in list(self.tasks):
            if task is not current:
                task.cancel()
        for outlet in list(self.outlets):
            self.detach(outlet)
            await outlet.close(code)

    def start_response(self, request: dict[str, Any], idle: bool = False) -> ScriptedResponse:
        response = self.model.plan(request, idle=idle)
        self.response = response
        self._cancel.clear()
        self.spawn(self._run(response))
        return response

    def cancel_response(self) -> None:
        self._cancel.set()

    def cut_playback(self) -> str | None:
        """``output_audio_buffer.clear``: stop the audio now; the id of what was playing."""
        playing = self.playing_id if time.monotonic() < self.playing_until else None
        self.playing_until = time.monotonic()
        self._cut.set()
        return playing

    async def _pause(self, scenario_s: float) -> bool:
        """A pause inside a response; True if it was cancelled meanwhile."""
        try:
            await asyncio.wait_for(self._cancel.wait(), scenario_s * self.scale_s)
        except TimeoutError:
            return False
        return True

    async def _played(self) -> bool:
        """Wait out the audio still playing; False if ``output_audio_buffer.clear`` cut it."""
        remaining_s = self.playing_until - time.monotonic()
        if remaining_s <= 0:
            return not self._cut.is_set()
        try:
            await asyncio.wait_for(self._cut.wait(), remaining_s)
        except TimeoutError:
            # The loop may wake a timer up to its clock resolution early; pin the end of
            # playback to now so that ``busy()`` agrees with the notify that follows.
            self.playing_until = min(self.playing_until, time.monotonic())
            return True
        return False

    async def _run(self, response: ScriptedResponse) -> None:
        await self.broadcast(response.created())
        cancelled = await self._pause(THINK_S)
        opened_at = time.monotonic()
        if not cancelled:
            await self.broadcast_all(response.opening())
            if response.audio:
                self._cut.clear()
                self.playing_id = response.id
                self.playing_until = opened_at + response.playback_s * self.scale_s
            gap_s = response.playback_s / 2 / len(response.deltas) if response.audio else 0
            for _ in response.deltas:
                await self.broadcast(response.next_delta())
                if await self._pause(gap_s or TEXT_DELTA_S):
                    cancelled = True
                    break
        status = "cancelled" if cancelled else "completed"
        events, usage = response.closing(status)
        if self.call is not None:
            self.call.add_usage(usage.as_ledger())
        await self.broadcast_all(events)
        self.response = None
        self.notify()
        if response.audio and response.opened:
            if cancelled:
                # The caller still hears the audio generated before the cancel; only
                # ``output_audio_buffer.clear`` cuts it off (and is answered ``cleared``).
                generated_s = speech_s(response.spoken()) * self.scale_s
                self.playing_until = min(self.playing_until, opened_at + generated_s)
            if await self._played():
                await self.broadcast(response.stopped())
        if response.kind == "message" and not cancelled:
            self.replies_done += 1
        self.quiet_since = time.monotonic()
        self.notify()
