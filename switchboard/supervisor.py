"""Child processes of ``switchboard up``: started in order, watched, stopped cleanly.

Each child runs in its own process group with its output in a log file, so that a
child that dies can be reported with its last lines and ``up`` can stop the rest
rather than run half a stack. Stopping goes in waves (``Child.stop_wave``, lowest
first): the session runners and workers drain while the ingress, the API and Redis
they need are still there, then the front doors close, then Redis. Each wave gets
SIGTERM and a share of the grace period; whatever is left at the end is SIGKILLed,
group by group: nothing survives ``up``.

On Linux every child also asks the kernel to kill it if ``up`` itself dies without
cleaning up (``PR_SET_PDEATHSIG``), so even ``kill -9`` of ``up`` leaves no orphans.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ReadyCheck = Callable[[], bool]

_PR_SET_PDEATHSIG = 1


class ChildDied(RuntimeError):
    """A child exited (or never became ready) while the stack was meant to be running."""

    def __init__(self, name: str, returncode: int | None, last_lines: str) -> None:
        super().__init__(f"{name} exited with code {returncode}")
        self.name = name
        self.returncode = returncode
        self.last_lines = last_lines


@dataclass
class Child:
    """One started service."""

    name: str
    argv: list[str]
    proc: subprocess.Popen[bytes]
    log_path: Path
    stop_wave: int = 0
    """Children of lower waves are stopped first."""
    stop_budget_s: float = 2.0
    """How long this child's wave may take, at most, before the next one starts."""
    started_at: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def last_lines(self, count: int = 20) -> str:
        try:
            with self.log_path.open("rb") as handle:
                handle.seek(0, os.SEEK_END)
                handle.seek(max(0, handle.tell() - 16_384))
                text = handle.read().decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-count:])

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child die with ``up`` (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return None
    libc = ctypes.CDLL(libc_name, use_errno=True)

    def arrange() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)

    return arrange


class Supervisor:
    """Starts, watches and stops the children of one ``up``."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.children: list[Child] = []
        log_dir.mkdir(parents=True, exist_ok=True)
        self._preexec = die_with_parent()

    def start(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        *,
        stop_wave: int = 0,
        stop_budget_s: float = 2.0,
    ) -> Child:
        """Start ``argv`` in a new session with its output in ``log_dir/name.log``."""
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                list(argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                start_new_session=True,
                # Safe here: ``up`` runs no other threads while it starts children.
                preexec_fn=self._preexec,
            )
        child = Child(
            name=name,
            argv=list(argv),
            proc=proc,
            log_path=log_path,
            stop_wave=stop_wave,
            stop_budget_s=stop_budget_s,
        )
        self.children.append(child)
        return child

    def wait_ready(self, child: Child, ready: ReadyCheck, timeout_s: float) -> None:
        """Poll ``ready`` with backoff until it holds; raise if the child dies or time runs out."""
        deadline = time.monotonic() + timeout_s
        delay_s = 0.02
        while True:
            if not child.alive():
                raise ChildDied(child.name, child.proc.returncode, child.last_lines())
            if ready():
                return
            if time.monotonic() > deadline:
                raise ChildDied(
                    child.name, None, f"not ready after {timeout_s:.0f}s\n" + child.last_lines()
                )
            time.sleep(delay_s)
            delay_s = min(delay_s * 2, 0.25)

    def first_dead(self) -> Child | None:
        return next((c for c in self.children if not c.alive()), None)

    def stop_all(self, grace_s: float = 9.0) -> list[str]:
        """Stop every child wave by wave within ``grace_s``; returns the names of the killed."""
        deadline = time.monotonic() + grace_s
        for wave in sorted({c.stop_wave for c in self.children}):
            members = [c for c in self.children if c.stop_wave == wave]
            for child in members:
                if child.alive():
                    child.signal_group(signal.SIGTERM)
            budget_s = max(c.stop_budget_s for c in members)
            wave_deadline = min(deadline, time.monotonic() + budget_s)
            for child in members:
                remaining = max(0.0, wave_deadline - time.monotonic())
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.proc.wait(timeout=remaining)
        killed = []
        for child in self.children:
            # A child may be gone while its group lingers (grandchildren such as Celery's
            # pool processes), so the group is always swept.
            if child.alive():
                killed.append(child.name)
            child.signal_group(signal.SIGKILL)
            try:
                child.proc.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                killed.append(child.name)
        return killed
