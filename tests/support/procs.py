"""Child processes started by tests: spawned, awaited until ready, always cleaned up.

Readiness is an event (a port accepting connections, an HTTP 200), never a fixed sleep.
Output goes to a log file so that a failing test can show the child's last lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@dataclass
class Child:
    """A running child process with its log file."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    extra: dict[str, str] = field(default_factory=dict)

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 10.0) -> int | None:
        """Signal the whole process group, then kill it if it does not exit in time."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        return self.proc.returncode


def spawn(
    name: str,
    argv: Sequence[str],
    log_dir: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Child:
    """Start ``argv`` in its own process group, output to ``log_dir/name.log``."""
    log_path = log_dir / f"{name}.log"
    log = log_path.open("wb")
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.Popen(
        list(argv),
        stdout=log,
        stderr=subprocess.STDOUT,
        env=full_env,
        cwd=str(cwd or REPO),
        start_new_session=True,
    )
    log.close()
    return Child(name=name, proc=proc, log_path=log_path)


def wait_until(
    check: Callable[[], bool], timeout_s: float, what: str, child: Child | None = None
) -> None:
    """Poll ``check`` until it holds; fail with the child's log tail if it never does."""
    deadline = time.monotonic() + timeout_s
    delay = 0.01
    while time.monotonic() < deadline:
        if check():
            return
        if child is not None and not child.alive():
            raise RuntimeError(
                f"{child.name} exited early while waiting for {what}:\n{child.tail()}"
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.2)
    tail = child.tail() if child else ""
    raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}\n{tail}")


async def wait_until_async(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    """``wait_until`` for async tests: polls without blocking the event loop."""
    deadline = time.monotonic() + timeout_s
    delay = 0.01
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)
    raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")


def port_open(port: int, host: str = "127.0.0.1") -> Callable[[], bool]:
    def check() -> bool:
        with socket.socket() as sock:
            sock.settimeout(0.2)
            return sock.connect_ex((host, port)) == 0

    return check


def http_ok(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return httpx.get(url, timeout=0.5).status_code == 200
        except httpx.HTTPError:
            return False

    return check


def switchboard_argv(*args: str) -> list[str]:
    """The ``switchboard`` console script of this environment with ``args``."""
    return [str(BIN / "switchboard"), *args]
