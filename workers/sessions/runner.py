"""A session runner: one asyncio process hosting the session workers of many calls.

Loops of one runner, each a task:

- pull: while below ``capacity`` (and not draining), ``BLMOVE`` a call id from
  ``keys.PENDING_CALLS`` into this runner's inbox, take the call's lease, restore its
  snapshot if it has one, and start its ``SessionWorker``; a call that is over, or
  whose lease someone else holds, is dropped from the inbox and forgotten;
- renew: ten times per ``renew_every_s`` renew the leases last renewed at least
  ``renew_every_s`` ago, at most ``RENEW_BATCH`` per round trip, so renewals spread over
  the period instead of one burst over every call; a lease that is no longer ours makes
  its worker stop writing at once; if Redis cannot be reached, a worker whose last
  renewal is older than ``self_fence_after_s`` stops before its lease can have expired,
  so two workers never act on one call;
- beat: announce capacity, load and draining in the registry, and read an operator's
  drain request (``shared.runner_registry``);
- sweep: re-queue calls of dead runners and calls this runner lost
  (``workers.sessions.sweeper``);
- commands: block on this runner's command list, read the streams of the calls named
  there (``workers.sessions.command_reader``);
- collect: with ``full_gc_every_s``, full garbage collections on that schedule
  (``workers.sessions.collector``);
- lag: every ``loop_lag_every_s``, how late the event loop ran a timer
  (``workers.sessions.loop_lag``), into the runner's loop-lag histogram.

Drain (``drain()``: SIGTERM, or ``switchboard runners drain ID``): stop pulling; hand
calls over to other live runners as far as their spare capacity goes (each worker
detaches only after its snapshot is saved, then its call goes to the front of the
queue); with no other runner alive, keep the calls until they end; after
``drain_grace_s`` give every call back to the queue and exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import redis

from shared import keys
from shared.runner_registry import RunnerRegistry
from shared.store import AsyncCallStore
from workers.sessions import collector
from workers.sessions.adoption import adopt
from workers.sessions.command_reader import CommandReader
from workers.sessions.loop_lag import sample_lag
from workers.sessions.services import RunnerConfig, SessionServices
from workers.sessions.session_worker import Outcome, SessionWorker
from workers.sessions.sweeper import Sweeper

__all__ = ["Runner", "RunnerConfig"]

logger = logging.getLogger(__name__)

RENEW_BATCH = 200
"""Leases renewed in one round trip at most (a larger batch holds the loop longer)."""
RENEW_ROUNDS = 10
"""Renewal rounds per ``renew_every_s``."""


class Runner:
    """One session-runner process (see the module docstring)."""

    def __init__(self, config: RunnerConfig, services: SessionServices) -> None:
        self.config = config
        self.services = services
        self.runner_id = services.runner_id
        self.calls = AsyncCallStore(services.redis)
        self.registry = RunnerRegistry(services.redis, self.runner_id)
        self.sweeper = Sweeper(services.redis, self.registry, config.dead_after_s)
        self.workers: dict[str, SessionWorker] = {}
        self._taking: set[str] = set()
        self._hosting: set[asyncio.Task[None]] = set()
        self._room = asyncio.Event()
        self._changed = asyncio.Event()
        self._draining = False
        self._drain_task: asyncio.Task[None] | None = None
        self._done = asyncio.Event()
        self._commands = CommandReader(
            services.commands,
            services.store,
            self.runner_id,
            self.workers,
            config.command_block_ms,
        )

    @property
    def load(self) -> int:
        return len(self.workers) + len(self._taking)

    @property
    def draining(self) -> bool:
        return self._draining

    async def run(self) -> None:
        """Run until drained (or ``stop()``)."""
        self.services.metrics.capacity.set(self.config.capacity)
        await self._beat()
        loops: list[Coroutine[Any, Any, None]] = [
            self._every(self.config.renew_every_s / RENEW_ROUNDS, self._renew),
            self._every(self.config.beat_every_s, self._beat),
            self._every(self.config.sweep_every_s, self._sweep),
            self._pull(),
            self._commands.run(),
            sample_lag(self.config.loop_lag_every_s, self.services.metrics.loop_lag_s.observe),
        ]
        if self.config.full_gc_every_s is not None:
            collector.take_over()
            loops.append(collector.collect_every(self.config.full_gc_every_s))
        tasks = [asyncio.create_task(loop) for loop in loops]
        try:
            await self._done.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # A runner stopped with calls in hand stays registered, silent: the others
            # sweep its calls once their leases expire.
            if not self.workers:
                with contextlib.suppress(redis.RedisError):
                    await self.registry.forget(self.runner_id)
        logger.info("runner %s stopped", self.runner_id)

    def drain(self) -> None:
        """Stop taking calls, hand the held ones over, then stop (idempotent)."""
        if self._drain_task is None:
            logger.info("runner %s draining %d calls", self.runner_id, len(self.workers))
            self._draining = True
            self.services.metrics.drain_started()
            self._room.set()
            self._drain_task = asyncio.create_task(self._drain())

    def stop(self) -> None:
        """Stop now: held calls are left to expire and be taken over by other runners."""
        self._done.set()

    # Taking calls ---------------------------------------------------------------------

    async def _pull(self) -> None:
        inbox = keys.runner_inbox(self.runner_id)
        client = self.services.redis
        while not self._draining:
            if self.load >= self.config.capacity:
                self._room.clear()
                await self._room.wait()
                continue
            try:
                raw = await client.blmove(
                    keys.PENDING_CALLS, inbox, self.config.pull_timeout_s, "RIGHT", "LEFT"
                )
            except redis.RedisError as exc:
                logger.warning("pull failed (%s); retrying", exc)
                await asyncio.sleep(self.config.pull_timeout_s)
                continue
            if raw is None:
                continue
            call_id = raw.decode() if isinstance(raw, bytes) else str(raw)
            if self._draining:  # drained while blocked: give it back at the front
                pipe = client.pipeline(transaction=False)
                pipe.rpush(keys.PENDING_CALLS, call_id)
                pipe.lrem(inbox, 0, call_id)
                await pipe.execute()
                return
            self._taking.add(call_id)
            self._track(self._take_on(call_id))

    async def _take_on(self, call_id: str) -> None:
        client = self.services.redis
        taken = False
        try:
            if call_id in self.workers:
                return
            record = await self.calls.get(call_id)
            if record is None or record.terminal:
                return
            lease = await self.services.leases.acquire(call_id)
            if lease is None:
                return
            worker = await adopt(self.services, record, lease)
            self.workers[call_id] = worker
            taken = True
            # Read its command stream once from the snapshot's cursor: commands queued
            # before this runner held the lease were pushed to nobody, or to another.
            self._commands.read_soon(call_id)
            self._changed.set()
            self._track(self._host(worker))
        except Exception:
            logger.exception("call %s could not be taken on", call_id)
        finally:
            self._taking.discard(call_id)
            with contextlib.suppress(redis.RedisError):
                pipe = client.pipeline(transaction=False)
                pipe.lrem(keys.runner_inbox(self.runner_id), 0, call_id)
                if taken:  # wakes the command reader now
                    pipe.rpush(keys.runner_commands(self.runner_id), call_id)
                await pipe.execute()

    async def _host(self, worker: SessionWorker) -> None:
        call_id, client = worker.call_id, self.services.redis
        outcome: Outcome | None = None
        try:
            outcome = await worker.run()
        except Exception:
            logger.exception("session of call %s failed", call_id)
            with contextlib.suppress(redis.RedisError):
                await self.services.leases.release(worker.lease)
        finally:
            self.workers.pop(call_id, None)
            self._room.set()
            self._changed.set()
        logger.info("call %s: session %s", call_id, outcome or "crashed")
        # Lost or crashed calls stay in our set: the next sweep re-queues them if no one
        # holds them by then.
        if outcome in (Outcome.ENDED, Outcome.HANDED_OVER):
            pipe = client.pipeline(transaction=False)
            pipe.srem(keys.runner_calls(self.runner_id), call_id)
            if outcome is Outcome.HANDED_OVER:
                pipe.rpush(keys.PENDING_CALLS, call_id)
            await pipe.execute()

    def _track(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._hosting.add(task)
        task.add_done_callback(self._hosting.discard)

    # Periodic work -------------------------------------------------------------------

    async def _every(self, period_s: float, step: Callable[[], Awaitable[object]]) -> None:
        while True:
            await asyncio.sleep(period_s)
            try:
                await step()
            except redis.RedisError as exc:
                logger.warning("%s failed: %s", getattr(step, "__name__", "step"), exc)

    async def _renew(self) -> None:
        """Renew the leases due, ``RENEW_BATCH`` at a time (see the module docstring)."""
        due_before = time.monotonic() - self.config.renew_every_s
        due = [w for w in self.workers.values() if w.renewed_at <= due_before and not w.lost]
        for start in range(0, len(due), RENEW_BATCH):
            batch = due[start : start + RENEW_BATCH]
            now_s = time.monotonic()
            try:
                renewed = await self.services.leases.renew([w.lease for w in batch])
            except redis.RedisError:
                for worker in due[start:]:
                    if now_s - worker.renewed_at > self.config.self_fence_after_s:
                        logger.error(
                            "call %s: lease not renewed in time, letting go", worker.call_id
                        )
                        worker.lose()
                raise
            for worker, ok in zip(batch, renewed, strict=True):
                if ok:
                    worker.renewed_at = now_s
                else:
                    logger.warning("call %s: lease lost", worker.call_id)
                    worker.lose()

    async def _beat(self) -> None:
        self.services.metrics.calls.set(len(self.workers))
        requested = await self.registry.beat(self.config.capacity, self.load, self._draining)
        if requested:
            self.drain()

    async def _sweep(self) -> None:
        await self.sweeper.sweep(set(self.workers) | self._taking)

    # Drain ----------------------------------------------------------------------------

    async def _drain(self) -> None:
        config = self.config
        with contextlib.suppress(redis.RedisError):
            await self._beat()
        give_up_at = time.monotonic() + config.drain_grace_s
        handing: set[str] = set()
        while self.workers or self._taking:
            try:
                entries = await self.registry.entries()
            except redis.RedisError:
                entries = []
            now_s = time.time()
            spare = sum(
                entry.spare
                for entry in entries
                if entry.runner_id != self.runner_id and entry.alive(now_s, config.dead_after_s)
            )
            if time.monotonic() >= give_up_at:
                spare = len(self.workers)  # nobody took them in time: back to the queue
            for call_id, worker in list(self.workers.items()):
                if spare <= 0:
                    break
                if call_id not in handing:
                    handing.add(call_id)
                    worker.hand_over()
                    spare -= 1
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(config.drain_poll_s):
                    await self._changed.wait()
        await asyncio.gather(*self._hosting, return_exceptions=True)
        logger.info("runner %s drained", self.runner_id)
        self._done.set()
