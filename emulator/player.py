"""The scripted caller: plays a call's scenario on its timeline once the call is answered.

``start_player`` gives the answered call its ``LiveSession`` and starts the caller. The
caller waits for a sideband before each step (with none attached for
``config.dead_air_timeout_s`` wall-clock seconds it hangs up), lets the agent greet
first, then speaks, presses keys or stays silent as scripted. Speech turns become VAD
events and a committed user item; with ``create_response`` on, the model answers on its
own. After a turn the caller waits for a spoken reply (``reply_patience_s``, never less
than ``MIN_PATIENCE_S`` of wall-clock time, since server latency does not shrink with
``time_scale``); none and it hangs up, as it does after its last step and at
``max_duration_s``. Hanging up ends the call (``ended_by="caller"``) and closes every
socket with 1000; a call ended any other way (REST hangup, refer) stops the caller and
closes the sockets too.
"""

from __future__ import annotations

import asyncio
import time

from emulator.context import EmulatorContext
from emulator.live_session import LiveSession
from emulator.response import event, new_id
from emulator.scenarios import Scenario, Step, builtin_scenarios
from emulator.session_config import default_session, merge_session
from emulator.state import EmulatedCall
from emulator.usage import speech_s

DTMF_GAP_S = 0.3
MIN_PATIENCE_S = 2.0


def session_for(ctx: EmulatorContext, call: EmulatedCall) -> LiveSession:
    """The call's live session, created on first use from the accepted configuration."""
    if call.session is None:
        base = default_session((call.accept or {}).get("model"), sip=bool(call.sip_headers))
        live = LiveSession(ctx, call, merge_session(base, call.accept or {}))
        call.session = live

        def ended(ended_call: EmulatedCall) -> None:
            ended_call.session = None  # ground truth stays; the model's state can go
            try:
                asyncio.get_running_loop()
            except RuntimeError:  # ended outside the event loop: no socket to close here
                return
            live.spawn(live.close(1000))

        call.on_end.append(ended)
    return call.session


def start_player(ctx: EmulatorContext, call: EmulatedCall) -> None:
    """Start the caller of an answered call in the background; returns at once."""
    live = session_for(ctx, call)
    scenario = ctx.scenarios.get(call.scenario) or builtin_scenarios().get(call.scenario)
    if scenario is not None:
        live.spawn(Caller(live, scenario).play())


class Caller:
    """One scripted caller working through its scenario."""

    def __init__(self, live: LiveSession, scenario: Scenario) -> None:
        self.live = live
        self.scenario = scenario
        self.scale_s = live.scale_s

    async def play(self) -> None:
        live = self.live
        try:
            async with asyncio.timeout(self.scenario.max_duration_s * self.scale_s):
                if await self._greeting():
                    for step in self.scenario.steps:
                        if not await self._step(step):
                            break
        except TimeoutError:
            pass
        if live.call is not None and live.call.end("caller"):
            await live.close(1000)

    async def _attached(self) -> bool:
        """Wait for a sideband; False when dead air lasted too long or the call ended."""
        live = self.live
        deadline_s = live.unattached_since + live.ctx.config.dead_air_timeout_s
        return await live.wait_until(
            lambda: bool(live.outlets), max(0.0, deadline_s - time.monotonic())
        )

    def _patience_s(self) -> float:
        """Wall-clock seconds the caller waits for the agent."""
        patience_s = self.scenario.reply_patience_s
        return max(patience_s * self.scale_s, min(patience_s, MIN_PATIENCE_S))

    async def _quiet(self) -> bool:
        """Wait until the agent is not speaking; False if it never stops in time."""
        live = self.live
        return await live.wait_until(lambda: not live.busy(), self._patience_s())

    async def _greeting(self) -> bool:
        live = self.live
        if not await self._attached():
            return False
        wait_s = self.scenario.greeting_wait_s * self.scale_s
        await live.wait_until(live.busy, wait_s)
        return await self._quiet()

    async def _step(self, step: Step) -> bool:
        live = self.live
        if not await self._attached() or not await live.sleep(step.pause_s):
            return False
        if not await self._attached() or not await self._quiet():
            return False
        replies = live.replies_done
        if step.say is not None:
            if not await self._say(step.say, step.seconds or speech_s(step.say), step):
                return False
        elif step.dtmf is not None:
            for index, key in enumerate(step.dtmf):
                if index and not await live.sleep(DTMF_GAP_S):
                    return False
                received_at = int(time.time())
                dtmf = {"type": "input_audio_buffer.dtmf_event_received", "event": key}
                await live.broadcast(dtmf | {"received_at": received_at})
        elif step.silence_s is not None:
            return await self._silence(step.silence_s)
        if not step.expect_reply:
            return True
        return await live.wait_until(lambda: live.replies_done > replies, self._patience_s())

    async def _say(self, transcript: str, seconds: float, step: Step) -> bool:
        live = self.live
        detection = live.model.turn_detection
        if detection is None:  # no VAD: the audio waits in the buffer for a client commit
            if not await live.sleep(seconds):
                return False
            live.pending_audio.append((transcript, seconds, step))
            return True
        item_id = new_id("item")
        started = event("input_audio_buffer.speech_started", audio_start_ms=live.audio_ms())
        await live.broadcast(started | {"item_id": item_id})
        if not await live.sleep(seconds):
            return False
        stopped = event("input_audio_buffer.speech_stopped", audio_end_ms=live.audio_ms())
        await live.broadcast(stopped | {"item_id": item_id})
        await live.broadcast_all(live.model.commit_caller_audio(item_id, transcript, seconds, step))
        if detection.get("create_response", True) and live.response is None:
            live.start_response({})
        return True

    async def _silence(self, silence_s: float) -> bool:
        """Stay silent; each idle timeout meanwhile fires ``timeout_triggered``.

        As with the real API, only a session whose ``turn_detection`` sets
        ``idle_timeout_ms`` has an idle timeout; any other session hears nothing."""
        live = self.live
        end_at = time.monotonic() + silence_s * self.scale_s
        while time.monotonic() < end_at:
            detection = live.model.turn_detection or {}
            idle_ms = detection.get("idle_timeout_ms")
            idle_s = idle_ms / 1000 if isinstance(idle_ms, int | float) and idle_ms else None
            quiet_from = max(live.quiet_since, end_at - silence_s * self.scale_s)
            fire_at = quiet_from + idle_s * self.scale_s if idle_s else end_at
            if fire_at >= end_at:
                return await live.sleep((end_at - time.monotonic()) / self.scale_s)
            if not await live.sleep(max(0.0, fire_at - time.monotonic()) / self.scale_s):
                return False
            if live.busy() or live.quiet_since > quiet_from:
                continue
            await self._idle_timeout(quiet_from, detection)
        return True

    async def _idle_timeout(self, quiet_from: float, detection: dict[str, object]) -> None:
        live = self.live
        start_ms = int((quiet_from - live.started_at) / self.scale_s * 1000)
        timeout = event("input_audio_buffer.timeout_triggered", audio_start_ms=start_ms)
        timeout |= {"audio_end_ms": live.audio_ms(), "item_id": new_id("item")}
        await live.broadcast(timeout)
        live.quiet_since = time.monotonic()
        if detection.get("create_response", True) and live.response is None:
            live.start_response({}, idle=True)
            await self._quiet()
