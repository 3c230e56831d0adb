"""A webhook sink for the emulator benchmark: answers every POST with 200 and counts it.

    python -m bench.webhook_sink --port 8090

A bare asyncio protocol on uvloop (keep-alive HTTP/1.1, no framework), so that the
sink is never what limits the emulator's delivery rate. ``GET /count`` answers
``{"count", "first_at", "last_at"}`` (wall-clock seconds of the first and latest POST
since the last ``GET /reset``, which zeroes them); ``GET /healthz`` answers 200.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import cast

import orjson
import uvloop

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
MAX_HEAD_BYTES = 65_536


class Stats:
    """What the sink has received so far."""

    def __init__(self) -> None:
        self.count = 0
        self.first_at: float | None = None
        self.last_at: float | None = None

    def reset(self) -> None:
        self.count, self.first_at, self.last_at = 0, None, None

    def record(self) -> None:
        now = time.time()
        self.count += 1
        self.last_at = now
        if self.first_at is None:
            self.first_at = now

    def response(self) -> bytes:
        body = orjson.dumps(
            {"count": self.count, "first_at": self.first_at, "last_at": self.last_at}
        )
        head = f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}"
        return head.encode() + b"\r\n\r\n" + body


class Sink(asyncio.Protocol):
    """One keep-alive connection: frames requests by ``content-length``, answers each."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self._buffer += data
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > MAX_HEAD_BYTES:
                    self.transport.close()
                return
            head = bytes(self._buffer[:end]).lower()
            length = 0
            start = head.find(b"\r\ncontent-length:")
            if start >= 0:
                line_end = head.find(b"\r\n", start + 2)
                length = int(head[start + 17 : line_end if line_end > 0 else None])
            if len(self._buffer) < end + 4 + length:
                return
            del self._buffer[: end + 4 + length]
            if head.startswith(b"post "):
                self.stats.record()
                self.transport.write(OK)
            elif head.startswith(b"get /count"):
                self.transport.write(self.stats.response())
            elif head.startswith(b"get /reset"):
                self.stats.reset()
                self.transport.write(OK)
            else:
                self.transport.write(OK)


async def serve(port: int) -> None:
    stats = Stats()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Sink(stats), "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvloop.run(serve(args.port))


if __name__ == "__main__":
    main()
