"""Redis commands of concurrent callers, coalesced into one pipeline per event-loop turn.

With redis-py's asyncio client most of the cost of a small command is on the client
side (packing, connection checkout, one write and one read per pipeline), so a busy
ingress spends its core there. A ``CommandBatch`` collects the command groups that
callers submit during one turn of the loop and sends them as a single non-transactional
pipeline; each caller gets back the replies of its own group, in order, with a
command's error as its reply (so one caller's NOSCRIPT does not fail the others).

Groups stay contiguous and in submission order, but commands of different callers may
interleave with other clients' commands on the server: anything that must be atomic
belongs in one Lua script, as in ``shared.call_scripts``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import redis.asyncio

Command = tuple[Any, ...]

MAX_COMMANDS_PER_PIPELINE = 512
"""A larger turn is split, so one huge write never stalls every caller behind it."""


class CommandBatch:
    """Coalesces command groups from concurrent coroutines; one instance per client."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self._redis = client
        self._pending: list[tuple[Sequence[Command], asyncio.Future[list[Any]]]] = []
        self._flush_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._in_flight: set[asyncio.Task[None]] = set()

    async def execute(self, commands: Sequence[Command]) -> list[Any]:
        """Send ``commands`` with whatever else this turn brings; return their replies."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            # A loop that closed with a flush still scheduled never ran it; start afresh.
            self._loop, self._pending, self._flush_scheduled = loop, [], False
        future: asyncio.Future[list[Any]] = loop.create_future()
        self._pending.append((commands, future))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            # Runs after every callback already ready in this turn has had its chance.
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._flush_scheduled = False
        batch: list[tuple[Sequence[Command], asyncio.Future[list[Any]]]] = []
        size = 0
        for group in self._pending:
            if size and size + len(group[0]) > MAX_COMMANDS_PER_PIPELINE:
                self._start(batch)
                batch, size = [], 0
            batch.append(group)
            size += len(group[0])
        self._pending = []
        if batch:
            self._start(batch)

    def _start(self, batch: list[tuple[Sequence[Command], asyncio.Future[list[Any]]]]) -> None:
        task = asyncio.create_task(self._send(batch))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _send(self, batch: list[tuple[Sequence[Command], asyncio.Future[list[Any]]]]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for commands, _ in batch:
            for command in commands:
                pipe.execute_command(*command)
        try:
            replies = await pipe.execute(raise_on_error=False)
        except BaseException as err:
            for _, future in batch:
                if not future.done():
                    future.set_exception(err)
            if isinstance(err, asyncio.CancelledError):
                raise
            return
        start = 0
        for commands, future in batch:
            end = start + len(commands)
            if not future.done():  # the caller may have gone (client disconnected)
                future.set_result(list(replies[start:end]))
            start = end
