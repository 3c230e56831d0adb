"""Operator commands for the calls a runner hosts, read only where there is something new.

Whoever queues a command pushes the call id onto the command list of the runner holding
the call's lease (``shared.commands``, ``keys.runner_commands``). The reader blocks on
that one list; when ids come, it reads just those calls' streams in one pipelined round
trip (``AsyncCommandQueue.read_many``), each from its worker's cursor (saved in the
call's snapshot, so a call that moves resumes where its last worker stopped), and feeds
each command to its worker. Its work is in proportion to the commands queued, not to
the calls held.

A call taken on is read once (``read_soon``): commands queued while nobody held the
call, or before this runner held it, are found there; later ones come with a push.
Commands may be read again after a failover: the core applies each command id at most
once and answers a repeat with the recorded outcome; a runner taking a call over knows
the outcomes and claims recorded after the snapshot too (``workers.sessions.adoption``).

The same push wakes the reader for a function call a worker that lost the call left
``requested`` in its tool ledger (``SessionStore.request_tool``): every read of a call's
stream also reads those (``SessionStore.requested_tools``), so the call's worker hears
them, the first read after a take-on included (the worker ignores the ones it knows).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

import redis

from shared.commands import AsyncCommandQueue
from workers.sessions.session_store import SessionStore
from workers.sessions.session_worker import SessionWorker

logger = logging.getLogger(__name__)

READ_COUNT = 100
"""Commands read per call and read; a call that had this many is read again at once."""


class CommandReader:
    """Feeds hosted calls their commands (see the module docstring)."""

    def __init__(
        self,
        commands: AsyncCommandQueue,
        store: SessionStore,
        runner_id: str,
        workers: Mapping[str, SessionWorker],
        block_ms: int,
    ) -> None:
        self._commands = commands
        self._store = store
        self._runner_id = runner_id
        self._workers = workers
        self._block_s = block_ms / 1000
        self._due: set[str] = set()

    def read_soon(self, call_id: str) -> None:
        """Read this call's stream on the next pass (the runner also pushes its id, to
        wake the reader at once; this is the fallback should that push fail)."""
        self._due.add(call_id)

    async def run(self) -> None:
        while True:
            due, self._due = self._due, set()
            try:
                if not due:
                    due = await self._commands.notified(self._runner_id, self._block_s)
            except redis.RedisError as exc:
                logger.warning("waiting for commands failed: %s", exc)
                await asyncio.sleep(self._block_s)
                continue
            due |= self._due
            self._due = set()
            positions: dict[str, str] = {}
            for call_id in due:
                worker = self._workers.get(call_id)
                if worker is not None and worker.takes_commands:
                    positions[call_id] = worker.cursor
            if not positions:
                continue
            try:
                found = await self._commands.read_many(positions, count=READ_COUNT)
                requested = await self._store.requested_tools(positions)
            except redis.RedisError as exc:
                logger.warning("reading commands failed: %s", exc)
                self._due |= positions.keys()
                await asyncio.sleep(self._block_s)
                continue
            for call_id, queued in found.items():
                worker = self._workers.get(call_id)
                if worker is None:
                    continue
                for command in queued:
                    worker.on_command(command)
                if len(queued) >= READ_COUNT:
                    self._due.add(call_id)
            for call_id, calls in requested.items():
                worker = self._workers.get(call_id)
                if worker is not None:
                    worker.on_requested_tools(calls)
