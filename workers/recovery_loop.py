"""The recovery loop of a control worker: ``Recovery.tick`` in a background thread.

``install`` connects Celery's signals in the worker's main process: ``worker_ready``
starts the loop (once per process, under the worker's node name, the name its tasks
write as ``route_worker``), ``worker_shutdown`` stops it and hands the sweep lease
on. The thread lives in the main process, which runs no tasks, so no extra process
is needed; it talks to Redis over its own connection. A failing tick (Redis away) is
logged once and the loop carries on; it never stops the worker.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import redis

from workers.recovery import Recovery, RecoveryConfig

logger = logging.getLogger(__name__)

REDIS_TIMEOUT_S = 5.0
"""A tick never waits longer than this on Redis."""


class RecoveryLoop:
    """Calls ``recovery.tick()`` every ``recovery.config.every_s`` until ``stop()``."""

    def __init__(self, recovery: Recovery) -> None:
        self.recovery = recovery
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="recovery", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop ticking, and give the sweep lease to another worker if this one held it."""
        self._stopping.set()
        self._thread.join(timeout_s)
        try:
            self.recovery.step_down()
        except redis.RedisError as exc:
            logger.info("recovery: lease not handed on (it expires by itself): %s", exc)

    def _run(self) -> None:
        failing = False
        while not self._stopping.is_set():
            try:
                self.recovery.tick()
            except Exception as exc:
                if not failing:
                    logger.warning("recovery: tick failed (retrying): %s", exc)
                failing = True
            else:
                if failing:
                    logger.info("recovery: ticking again")
                failing = False
            self._stopping.wait(self.recovery.config.every_s)


_loop: RecoveryLoop | None = None
_lock = threading.Lock()


def start(redis_url: str, worker: str, config: RecoveryConfig) -> RecoveryLoop:
    """This process's loop, started on first call."""
    global _loop
    with _lock:
        if _loop is None:
            client = redis.Redis.from_url(
                redis_url,
                decode_responses=True,
                socket_timeout=REDIS_TIMEOUT_S,
                socket_connect_timeout=REDIS_TIMEOUT_S,
            )
            _loop = RecoveryLoop(Recovery(client, worker, config))
            _loop.start()
            logger.info("recovery: sweeping every %.1fs as %s", config.every_s, worker)
        return _loop


def stop() -> None:
    global _loop
    with _lock:
        loop, _loop = _loop, None
    if loop is not None:
        loop.stop()


def install(redis_url: str, config: RecoveryConfig) -> None:
    """Run the loop in this Celery worker from ``worker_ready`` to ``worker_shutdown``."""
    from celery import signals

    def ready(sender: Any = None, **_: Any) -> None:
        start(redis_url, str(sender.hostname), config)

    def shutdown(**_: Any) -> None:
        stop()

    signals.worker_ready.connect(ready, weak=False, dispatch_uid="switchboard-recovery")
    signals.worker_shutdown.connect(shutdown, weak=False, dispatch_uid="switchboard-recovery")
