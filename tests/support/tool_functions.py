"""Python tools for tests: blocking and async, quick, slow and broken ones."""

from __future__ import annotations

import asyncio
import os
import time


def blocking_add(a: int, b: int) -> dict[str, int]:
    """A plain function: it must run in a Celery worker, not on a runner's event loop."""
    return {"sum": a + b, "pid": os.getpid()}


def blocking_sleep(seconds: float) -> str:
    time.sleep(seconds)
    return "woke"


async def async_echo(text: str) -> str:
    return text.upper()


async def async_pid() -> dict[str, int]:
    return {"pid": os.getpid()}


async def async_sleep(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "woke"


async def async_broken() -> str:
    raise KeyError("no such record")


async def async_not_json() -> object:
    return object()
