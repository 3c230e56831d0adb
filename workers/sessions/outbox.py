"""The outbox of one session worker: effects carried out in order, snapshots batched.

Feeding the core is synchronous and may happen from any coroutine (the socket reader,
a timer, the command loop, a finished tool); each feed's effects are put here and one
pump task carries them out, batch by batch, in the order they were put. ``idle`` is set
whenever everything put so far has been carried out.

Snapshots are batched: ``mark_dirty`` (the core's ``Persist``) asks for one, and the
pump saves it at most every ``snapshot_every_s``, and only while the outbox is empty,
so a snapshot never describes effects that have not been carried out yet. Once
``frozen`` (the worker is handing its call over or stopping), nothing more is put;
``pending`` tells what a stopped pump left undone.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Generic, TypeVar

Item = TypeVar("Item")


class Outbox(Generic[Item]):
    """Ordered effects and batched snapshots of one call (see the module docstring)."""

    def __init__(
        self,
        carry_out: Callable[[list[Item]], Awaitable[None]],
        save: Callable[[], Awaitable[None]],
        snapshot_every_s: float,
    ) -> None:
        self._carry_out = carry_out
        self._save = save
        self._every_s = snapshot_every_s
        self._items: deque[Item] = deque()
        self._wake = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()
        self.frozen = False
        self._dirty = False
        self._saved_at = 0.0
        self._in_flight: list[Item] = []

    def __len__(self) -> int:
        return len(self._items)

    def put(self, items: Iterable[Item]) -> None:
        if self.frozen:
            return
        before = len(self._items)
        self._items.extend(items)
        if len(self._items) > before:
            self.idle.clear()
            self._wake.set()

    def mark_dirty(self) -> None:
        self._dirty = True

    async def run(self) -> None:
        """The pump: runs until cancelled; errors of ``carry_out`` and ``save`` propagate."""
        while True:
            while not self._items:
                if self._dirty and not self.frozen:
                    wait_s = self._saved_at + self._every_s - time.monotonic()
                    if wait_s <= 0:
                        self._dirty = False
                        self._saved_at = time.monotonic()
                        await self._save()
                        continue
                    asyncio.get_running_loop().call_later(wait_s, self._wake.set)
                self.idle.set()
                await self._wake.wait()
                self._wake.clear()
            batch = list(self._items)
            self._items.clear()
            self._in_flight = batch
            await self._carry_out(batch)
            self._in_flight = []

    def pending(self) -> list[Item]:
        """What was put and is not known to be carried out: the batch in flight (perhaps
        partly done, if the pump stopped in it) and the queue."""
        return [*self._in_flight, *self._items]
