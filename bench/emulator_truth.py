"""Reading the emulator's ground truth for many calls, and placing calls at a fixed rate."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from bench.http_load import open_loop

PLACING_CONNECTIONS = 32


async def place_calls(
    base_url: str,
    rate_per_s: float,
    duration_s: float,
    scenario: str,
    to: str = "+18005550100",
) -> list[str]:
    """Place calls through ``POST /_emulator/calls`` at ``rate_per_s``; their ids.

    Through ``bench.http_load.open_loop`` (pre-built requests on keep-alive
    connections): an ``httpx`` client cost the benchmark's process a few ms of CPU per
    call at 200 calls/s, CPU the system under test then lacked.
    """
    url = urlsplit(base_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    requests = [_place_request(host, port, f"+1415555{n:04d}", to, scenario) for n in range(100)]
    bodies: list[bytes] = []
    result = await open_loop(
        host, port, requests, PLACING_CONNECTIONS, rate_per_s, duration_s, 0.0, bodies
    )
    if result.errors or len(bodies) != result.completed:
        raise RuntimeError(f"placing calls failed: {result.statuses}, {result.errors} errors")
    return [str(orjson.loads(body)["call_id"]) for body in bodies]


def _place_request(host: str, port: int, caller: str, called: str, scenario: str) -> bytes:
    body = orjson.dumps({"from": caller, "to": called, "scenario": scenario})
    head = (
        f"POST /_emulator/calls HTTP/1.1\r\nhost: {host}:{port}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def ground_truths(base_url: str, call_ids: list[str]) -> list[dict[str, Any]]:
    """``GET /_emulator/calls/{id}?events=0`` for every call, a few at a time."""
    limit = asyncio.Semaphore(16)
    async with httpx.AsyncClient(
        base_url=base_url, timeout=httpx.Timeout(30.0, pool=None)
    ) as client:

        async def one(call_id: str) -> dict[str, Any]:
            async with limit:
                response = await client.get(f"/_emulator/calls/{call_id}", params={"events": "0"})
                response.raise_for_status()
                truth: dict[str, Any] = response.json()
                return truth

        return list(await asyncio.gather(*(one(c) for c in call_ids)))


def first_delivery_at(truth: dict[str, Any]) -> float | None:
    """When the emulator sent the call's webhook (its first attempt)."""
    deliveries = truth.get("webhook_deliveries") or []
    return float(deliveries[0]["sent_at"]) if deliveries else None
