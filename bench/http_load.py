"""A lean HTTP/1.1 load generator: keep-alive connections, pre-built requests, no parsing.

``closed_loop`` keeps every connection busy (the peak rate); ``open_loop`` sends at a
fixed rate and times each response from the moment it was due, so a slow server is
charged for the queue it causes (no coordinated omission). Requests are complete byte
strings built beforehand (signed webhooks included), so a request costs the generator
only a socket write and a little response framing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast


@dataclass
class LoadResult:
    """What one run saw: completions per second, latencies, statuses and errors."""

    started_at: float
    duration_s: float
    completed: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    latencies_s: list[float] = field(default_factory=list)
    errors: int = 0
    late_sends: int = 0


class _Connection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self, keep_body: bool = False) -> None:
        self.transport: asyncio.Transport | None = None
        self.keep_body = keep_body
        self.body = b""
        self._buffer = bytearray()
        self._waiter: asyncio.Future[int] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError("connection lost"))

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self._buffer[:end]).lower()
        start = head.find(b"content-length:")
        length = 0
        if start >= 0:
            line_end = head.find(b"\r\n", start)
            length = int(head[start + 15 : line_end if line_end > 0 else None])
        if len(self._buffer) < end + 4 + length:
            return
        status = int(head[9:12])
        if self.keep_body:
            self.body = bytes(self._buffer[end + 4 : end + 4 + length])
        del self._buffer[: end + 4 + length]
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(status)

    async def request(self, raw: bytes) -> int:
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return await self._waiter


async def _connect(host: str, port: int, keep_body: bool = False) -> _Connection:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(lambda: _Connection(keep_body), host, port)
    return protocol


def _record(result: LoadResult, status: int, latency_s: float, measured: bool) -> None:
    if measured:
        result.completed += 1
        result.statuses[status] = result.statuses.get(status, 0) + 1
        result.latencies_s.append(latency_s)


async def closed_loop(
    host: str,
    port: int,
    requests: Sequence[bytes],
    connections: int,
    duration_s: float,
    warmup_s: float,
) -> LoadResult:
    """Every connection sends its next request as soon as the last one is answered."""
    conns = [await _connect(host, port) for _ in range(connections)]
    start = time.perf_counter()
    measure_from, stop_at = start + warmup_s, start + warmup_s + duration_s
    result = LoadResult(started_at=time.time() + warmup_s, duration_s=duration_s)
    cursor = 0

    async def drive(conn: _Connection) -> None:
        nonlocal cursor
        while (now := time.perf_counter()) < stop_at and not conn.closed:
            raw = requests[cursor % len(requests)]
            cursor += 1
            try:
                status = await conn.request(raw)
            except ConnectionError:
                result.errors += 1
                return
            done = time.perf_counter()
            _record(result, status, done - now, measure_from <= done < stop_at)

    await asyncio.gather(*(drive(c) for c in conns))
    for conn in conns:
        if conn.transport is not None:
            conn.transport.close()
    return result


async def open_loop(
    host: str,
    port: int,
    requests: Sequence[bytes],
    connections: int,
    rate_per_s: float,
    duration_s: float,
    warmup_s: float,
    bodies: list[bytes] | None = None,
) -> LoadResult:
    """Send at ``rate_per_s`` on idle connections; latency counts from the due time.

    With ``bodies``, the body of every 200 answer is appended to it.
    """
    idle: asyncio.Queue[_Connection] = asyncio.Queue()
    for _ in range(connections):
        idle.put_nowait(await _connect(host, port, keep_body=bodies is not None))
    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    measure_from, stop_at = start + warmup_s, start + warmup_s + duration_s
    result = LoadResult(started_at=time.time() + warmup_s, duration_s=duration_s)
    in_flight: set[asyncio.Task[None]] = set()
    interval_s = 1.0 / rate_per_s

    async def one(conn: _Connection, raw: bytes, due: float) -> None:
        try:
            status = await conn.request(raw)
        except ConnectionError:
            result.errors += 1
            return
        done = time.perf_counter()
        _record(result, status, done - due, measure_from <= due < stop_at)
        if bodies is not None and status == 200:
            bodies.append(conn.body)
        idle.put_nowait(conn)

    sent = 0
    while (due := start + sent * interval_s) < stop_at:
        now = time.perf_counter()
        if due > now:
            await asyncio.sleep(due - now)
        conn = await idle.get()
        if time.perf_counter() - due > interval_s * 10:
            result.late_sends += 1
        task = loop.create_task(one(conn, requests[sent % len(requests)], due))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
        sent += 1
    await asyncio.gather(*in_flight)
    while not idle.empty():
        conn = idle.get_nowait()
        if conn.transport is not None:
            conn.transport.close()
    return result
