"""Keep a Celery worker running: restart it when it exits without being asked to.

A Celery worker's main process can die on its own: kombu's Redis transport raises an
"Unrecoverable error" when Redis is killed in the middle of an acknowledgement, and
the kernel's OOM killer picks the biggest process. Compose and Kubernetes restart a
dead container, but a worker started by hand, by ``switchboard up`` or by a test would
simply stay dead and the queue would fill while calls ring out. So ``switchboard
worker`` runs the Celery worker as a child process and restarts it, after a backoff
that doubles from ``first_s`` up to ``max_s`` and starts over once a child has run
``stable_s`` seconds.

The child has its own process group, so a signal meant for the command reaches it
exactly once: SIGTERM, SIGINT and SIGQUIT are forwarded (warm shutdown, or cold for
SIGQUIT as Celery defines them) and the command exits with the child's status without
restarting it. Any other exit is restarted, whatever its status: a Celery remote
``shutdown`` is not how Switchboard stops a worker. The child asks the kernel for SIGKILL if
the command itself dies (``PR_SET_PDEATHSIG``), and Celery's pool processes do the
same with their parent, so killing the command leaves nothing behind.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType

from switchboard.supervisor import die_with_parent

log = logging.getLogger("switchboard.worker")

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)


@dataclass
class Backoff:
    """Delay before the next restart, from how long the last child ran."""

    first_s: float = 0.5
    max_s: float = 30.0
    stable_s: float = 60.0
    _failures: int = 0

    def next_delay(self, ran_s: float) -> float:
        if ran_s >= self.stable_s:
            self._failures = 0
        delay = min(self.max_s, self.first_s * 2.0**self._failures)
        self._failures += 1
        return delay


def exit_status(returncode: int) -> int:
    """A shell-style exit status for a child's ``returncode`` (``128 + N`` for signal N)."""
    return 128 - returncode if returncode < 0 else returncode


class WorkerKeeper:
    """Runs ``argv`` and starts it again whenever it exits without being told to."""

    def __init__(self, argv: Sequence[str], backoff: Backoff | None = None) -> None:
        self.argv = list(argv)
        self.backoff = backoff or Backoff()
        self.stopping = threading.Event()
        self.restarts = 0
        self._proc: subprocess.Popen[bytes] | None = None

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signum)

    def run(self) -> int:
        for signum in FORWARDED:
            signal.signal(signum, self._on_signal)
        while True:
            started = time.monotonic()
            self._proc = subprocess.Popen(self.argv, process_group=0, preexec_fn=die_with_parent())
            if self.stopping.is_set():  # a signal came while the child was starting
                self._proc.terminate()
            log.info("celery worker started (pid %d)", self._proc.pid)
            returncode = self._proc.wait()
            if self.stopping.is_set():
                log.info(
                    "celery worker (pid %d) stopped with status %d",
                    self._proc.pid,
                    exit_status(returncode),
                )
                return exit_status(returncode)
            delay = self.backoff.next_delay(time.monotonic() - started)
            self.restarts += 1
            log.error(
                "celery worker (pid %d) exited with status %d; restart %d in %.1f s",
                self._proc.pid,
                exit_status(returncode),
                self.restarts,
                delay,
            )
            if self.stopping.wait(delay):
                return exit_status(returncode)
