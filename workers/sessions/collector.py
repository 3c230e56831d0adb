"""Garbage collection in a runner process that holds thousands of calls.

CPython collects young objects often and cheaply, and every object now and then: a full
collection walks each tracked object (some 170 per live call: tasks, futures, socket and
session state), so with 1,000 calls held it stopped the event loop for 200-270 ms, about
every 20 s under load. A runner process (``RunnerConfig.full_gc_every_s``) therefore:

- freezes what exists when it starts (modules, clients, the policy): none of it is
  garbage, and no collection walks it again;
- takes full collections off CPython's own schedule (young collections stay as they
  are) and runs one every ``every_s``: cyclic garbage of ended calls lives at most that
  long, and the one pause comes at a known, low rate.
"""

from __future__ import annotations

import asyncio
import gc

NEVER = 1_000_000
"""Young-generation collections before CPython would run a full one by itself."""


def take_over() -> None:
    """Freeze the objects of a started process and stop automatic full collections."""
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, NEVER)


async def collect_every(every_s: float) -> None:
    """Run a full collection every ``every_s`` until cancelled."""
    while True:
        await asyncio.sleep(every_s)
        gc.collect()
