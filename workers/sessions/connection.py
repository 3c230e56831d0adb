"""The sideband websocket of one call: attach by ``call_id``, receive events, send events.

``Sideband.open`` attaches to ``<sideband base>?call_id=<id>`` sending only the
``Authorization: Bearer`` header (never ``OpenAI-Beta``: the GA API closes such sockets
with 4000), with compression off, a small receive queue and a bounded frame size: a
runner holds thousands of these, so their memory matters more than their throughput.

Events are decoded with ``orjson``; audio deltas, which the session never reads and
which are the largest frames, are skipped before decoding. What a failed attach or a
close means is decided in ``workers.sessions.reattach``; this module only reports the
HTTP status of a refused attach (``AttachFailed.status``) and the close code.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.protocol import State

_AUDIO_DELTA = b'"response.output_audio.delta"'
_SKIP_PROBE_BYTES = 80
"""Where ``type`` sits in a server event: at the start, after ``event_id`` at most."""


@dataclass(frozen=True)
class SidebandConfig:
    """Socket limits; defaults sized for many quiet sockets per process."""

    open_timeout_s: float = 5.0
    max_size_bytes: int = 1 << 20
    max_queue: int = 16
    ping_interval_s: float = 20.0
    ping_timeout_s: float = 20.0
    close_timeout_s: float = 2.0


class AttachFailed(Exception):
    """The attach did not succeed; ``status`` is the HTTP answer, ``None`` if none came."""

    def __init__(self, message: str, status: int | None) -> None:
        super().__init__(message)
        self.status = status


def sideband_url(base_url: str, call_id: str) -> str:
    """``wss://.../realtime?call_id=...`` for one call (the id is opaque: quoted whole)."""
    return f"{base_url}?call_id={quote(call_id, safe='')}"


class Sideband:
    """One open sideband socket."""

    def __init__(self, socket: ClientConnection) -> None:
        self._socket = socket

    @classmethod
    async def open(cls, url: str, api_key: str, config: SidebandConfig | None = None) -> Sideband:
        """Attach; raises ``AttachFailed`` when the server refuses or cannot be reached."""
        config = config or SidebandConfig()
        try:
            socket = await connect(
                url,
                additional_headers={"Authorization": f"Bearer {api_key}"},
                user_agent_header=None,
                compression=None,
                open_timeout=config.open_timeout_s,
                max_size=config.max_size_bytes,
                max_queue=config.max_queue,
                ping_interval=config.ping_interval_s,
                ping_timeout=config.ping_timeout_s,
                close_timeout=config.close_timeout_s,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise AttachFailed(f"attach refused with HTTP {status}", status) from None
        except (InvalidHandshake, OSError, TimeoutError) as exc:
            raise AttachFailed(f"attach failed: {type(exc).__name__}", None) from None
        return cls(socket)

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Decoded server events until the socket closes (then ``close_code`` is set)."""
        try:
            while True:
                # Undecoded: orjson reads UTF-8 bytes directly, and the probe needs bytes.
                raw = await self._socket.recv(decode=False)
                if _AUDIO_DELTA in raw[:_SKIP_PROBE_BYTES]:
                    continue
                try:
                    event = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    continue  # one bad frame is not worth the call
                if isinstance(event, dict):
                    yield event
        except ConnectionClosed:
            return

    @property
    def is_open(self) -> bool:
        """True until the socket starts closing (from either side)."""
        return self._socket.state is State.OPEN

    async def send(self, event: dict[str, Any]) -> bool:
        """Send one client event; false if it certainly did not go out (the socket was
        already closing). A socket lost while the frame was being written counts as
        sent: the frame may have reached the server."""
        if not self.is_open:
            return False
        with contextlib.suppress(ConnectionClosed):
            await self._socket.send(orjson.dumps(event).decode())
        return True

    @property
    def close_code(self) -> int | None:
        """The close code (1006: closed without a close frame; ``None``: still open)."""
        return self._socket.close_code

    async def close(self, within_s: float) -> None:
        """Detach (close code 1000) and wait for the socket to be closed; a close that
        takes longer than ``within_s`` (a peer that reads nothing) aborts the connection."""
        try:
            async with asyncio.timeout(within_s):
                await self._socket.close()
        except TimeoutError:
            self._socket.transport.abort()
