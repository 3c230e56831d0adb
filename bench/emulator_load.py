"""The load process of the emulator benchmark: places calls, or holds sidebands.

    python -m bench.emulator_load place --base-url URL --rate 500 --duration 5 --out F
    python -m bench.emulator_load sidebands --base-url URL --api-key K --calls 2000 \
        --settle 3 --window 30 --status-dir DIR

``place`` posts ``POST /_emulator/calls`` at a fixed rate on keep-alive connections
(``bench.http_load.open_loop``) and writes what it achieved to ``--out``.

``sidebands`` places ``--calls`` calls, accepts each over REST and attaches one
sideband websocket to it (a plain ``websockets`` client that reads every event), a
few calls at a time. Then it writes ``attached.json``, waits ``--settle`` seconds,
counts events and open sockets over ``--window`` seconds, writes ``window.json`` and
holds the sockets until it gets SIGUSR1 (or a time limit passes), then closes them
and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import ssl
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import uvloop
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench.http_load import open_loop
from bench.stats import latency_ms

CALLER = "+14155550100"
CALLED = "+18005550100"
ATTACH_CONCURRENCY = 64
ATTACH_TIMEOUT_S = 150.0
RELEASE_TIMEOUT_S = 120.0
SAMPLE_S = 1.0


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` atomically (a reader never sees half a file)."""
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(data))
    os.replace(partial, path)


def _place_request(host: str, port: int, scenario: str) -> bytes:
    body = orjson.dumps({"from": CALLER, "to": CALLED, "scenario": scenario})
    head = (
        f"POST /_emulator/calls HTTP/1.1\r\nhost: {host}:{port}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def place(args: argparse.Namespace) -> None:
    url = urlsplit(args.base_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    raw = _place_request(host, port, args.scenario)
    started_at = time.time()
    result = await open_loop(host, port, [raw], args.connections, args.rate, args.duration, 0.0)
    ended_at = time.time()
    _write_json(
        args.out,
        {
            "rate": args.rate,
            "duration_s": args.duration,
            "started_at": started_at,
            "ended_at": ended_at,
            "completed": result.completed,
            "ok": result.statuses.get(200, 0),
            "statuses": {str(k): v for k, v in result.statuses.items()},
            "errors": result.errors,
            "late_sends": result.late_sends,
            "latency": latency_ms(result.latencies_s),
        },
    )


class Sideband:
    """One attached websocket and what it has read."""

    def __init__(self, call_id: str, ws: ClientConnection) -> None:
        self.call_id = call_id
        self.ws = ws
        self.events = 0
        self.closed_at: float | None = None
        self.close_code: int | None = None

    async def read(self) -> None:
        try:
            async for _ in self.ws:
                self.events += 1
        except ConnectionClosed:
            pass
        self.closed_at = time.time()
        self.close_code = self.ws.close_code


async def _attach_all(
    args: argparse.Namespace, sidebands: list[Sideband], readers: list[asyncio.Task[None]]
) -> tuple[list[float], dict[str, int]]:
    """Place, accept and attach ``args.calls`` calls; attach latencies and failures.

    ATTACH_CONCURRENCY workers, each with its own one-connection HTTP client: one shared
    pool with many requests waiting costs httpx more CPU than the requests themselves.
    """
    ws_base = args.base_url.replace("http://", "ws://", 1)
    auth = {"Authorization": f"Bearer {args.api_key}"}
    body = {"from": CALLER, "to": CALLED, "scenario": args.scenario}
    attach_s: list[float] = []
    failures: dict[str, int] = {}
    remaining = args.calls
    tls = ssl.create_default_context()  # unused on http://, but costly to build per client

    async def attach(http: httpx.AsyncClient) -> None:
        started = time.perf_counter()
        try:
            placed = await http.post("/_emulator/calls", json=body)
            placed.raise_for_status()
            call_id = placed.json()["call_id"]
            accept_url = f"/v1/realtime/calls/{call_id}/accept"
            accepted = await http.post(accept_url, json={"type": "realtime"}, headers=auth)
            accepted.raise_for_status()
            ws = await connect(
                f"{ws_base}/v1/realtime?call_id={call_id}",
                additional_headers=auth,
                compression=None,
                open_timeout=30,
                max_size=2**22,
            )
            await asyncio.wait_for(ws.recv(), 30)  # session.created
        except (httpx.HTTPError, OSError, ConnectionClosed, TimeoutError) as exc:
            kind = type(exc).__name__
            failures[kind] = failures.get(kind, 0) + 1
            return
        attach_s.append(time.perf_counter() - started)
        sideband = Sideband(call_id, ws)
        sideband.events = 1
        sidebands.append(sideband)
        readers.append(asyncio.create_task(sideband.read()))

    async def worker() -> None:
        nonlocal remaining
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(
            base_url=args.base_url, limits=limits, timeout=30.0, verify=tls
        ) as http:
            while remaining > 0:
                remaining -= 1
                await attach(http)

    async with asyncio.timeout(ATTACH_TIMEOUT_S):
        await asyncio.gather(*(worker() for _ in range(ATTACH_CONCURRENCY)))
    return attach_s, failures


async def hold(args: argparse.Namespace) -> None:
    status: Path = args.status_dir
    released = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, released.set)
    sidebands: list[Sideband] = []
    readers: list[asyncio.Task[None]] = []
    attach_started = time.time()
    attach_s, failures = await _attach_all(args, sidebands, readers)
    _write_json(
        status / "attached.json",
        {
            "attached": len(sidebands),
            "failures": failures,
            "attach_s": time.time() - attach_started,
            "attach_latency": latency_ms(attach_s),
            "call_ids": [s.call_id for s in sidebands],
        },
    )
    timeline: list[dict[str, float]] = []

    def sample() -> None:
        open_now = sum(1 for s in sidebands if s.closed_at is None)
        events = sum(s.events for s in sidebands)
        timeline.append({"t": time.time(), "open": open_now, "events": events})

    async def sample_until(end_mono: float) -> tuple[float, int, int]:
        """Sample every SAMPLE_S until ``end_mono``; the last sample."""
        while time.monotonic() < end_mono:
            await asyncio.sleep(min(SAMPLE_S, max(0.0, end_mono - time.monotonic())))
            sample()
        last = timeline[-1]
        return last["t"], int(last["open"]), int(last["events"])

    sample()
    window_start, open_start, events_start = await sample_until(time.monotonic() + args.settle)
    window_end, open_end, events_end = await sample_until(time.monotonic() + args.window)
    closed = [s for s in sidebands if s.closed_at is not None and s.closed_at >= window_start]
    codes: dict[str, int] = {}
    for sideband in closed:
        codes[str(sideband.close_code)] = codes.get(str(sideband.close_code), 0) + 1
    _write_json(
        status / "window.json",
        {
            "window_start": window_start,
            "window_end": window_end,
            "open_at_start": open_start,
            "open_at_end": open_end,
            "closed_during_window": codes,
            "events_in_window": events_end - events_start,
            "events_per_s": (events_end - events_start) / (window_end - window_start),
            "timeline": timeline,
        },
    )
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(released.wait(), RELEASE_TIMEOUT_S)
    await asyncio.gather(*(s.ws.close() for s in sidebands), return_exceptions=True)
    for reader in readers:
        reader.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(*readers, return_exceptions=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    placing = sub.add_parser("place")
    placing.add_argument("--base-url", required=True)
    placing.add_argument("--rate", type=float, required=True)
    placing.add_argument("--duration", type=float, required=True)
    placing.add_argument("--connections", type=int, default=32)
    placing.add_argument("--scenario", default="long-call")
    placing.add_argument("--out", type=Path, required=True)
    holding = sub.add_parser("sidebands")
    holding.add_argument("--base-url", required=True)
    holding.add_argument("--api-key", required=True)
    holding.add_argument("--calls", type=int, required=True)
    holding.add_argument("--scenario", default="long-call")
    holding.add_argument("--settle", type=float, default=3.0)
    holding.add_argument("--window", type=float, required=True)
    holding.add_argument("--status-dir", type=Path, required=True)
    args = parser.parse_args()
    uvloop.run(place(args) if args.command == "place" else hold(args))


if __name__ == "__main__":
    main()
