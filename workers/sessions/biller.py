"""The biller of one call: its bills counted one at a time, in order, beside the pump.

A response's usage is counted in Redis in a few round trips (``shared.accounting``).
Counted in the pump, a function call's bill would hold up the tool's output: the API
sends the call's ``response.done`` together with its ``arguments.done``, so the bill is
always just ahead of the output. ``Biller.put`` hands a bill to a background task
instead, which counts the bills in the order they came; ``counted()`` waits until every
bill handed over so far is counted, for the final record and for a stopping session.

Counting must not raise (it logs and gives up on its own); if it does anyway, the
error is logged and the next bills are still counted.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

Bill = TypeVar("Bill")


class Biller(Generic[Bill]):
    """Counts bills with ``count`` in a background task, in order (module docstring)."""

    def __init__(self, count: Callable[[Bill], Awaitable[None]], name: str) -> None:
        self._count = count
        self._name = name
        self._bills: deque[Bill] = deque()
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        """Bills handed over and not counted yet (the one being counted included)."""
        return len(self._bills)

    def put(self, bill: Bill) -> None:
        """Queue a bill; it is counted after every bill queued before it."""
        self._bills.append(bill)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=self._name)

    async def counted(self) -> None:
        """Wait until every bill queued so far is counted; cancelling the wait leaves the
        counting alone."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def _run(self) -> None:
        while self._bills:
            try:
                await self._count(self._bills[0])
            except Exception:
                logger.exception("%s: a bill was not counted", self._name)
            self._bills.popleft()
