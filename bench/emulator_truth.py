"""Reading the emulator's ground truth for many calls, and placing calls at a fixed rate."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx


async def place_calls(
    base_url: str,
    rate_per_s: float,
    duration_s: float,
    scenario: str,
    to: str = "+18005550100",
) -> list[str]:
    """Place calls through ``POST /_emulator/calls`` at ``rate_per_s``; their ids."""
    placed: list[str] = []
    interval_s = 1.0 / rate_per_s
    timeout = httpx.Timeout(30.0, pool=None)
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout) as client:

        async def one(n: int) -> None:
            body = {"from": f"+1415555{n % 10_000:04d}", "to": to, "scenario": scenario}
            response = await client.post("/_emulator/calls", json=body)
            response.raise_for_status()
            placed.append(response.json()["call_id"])

        tasks = []
        start = time.perf_counter()
        n = 0
        while (due := start + n * interval_s) < start + duration_s:
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(n)))
            n += 1
        await asyncio.gather(*tasks)
    return placed


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
