"""The ``redis-server`` that ``switchboard up`` starts when no Redis URL is configured.

It listens on loopback on a free port and keeps its files in a private directory
(mode 0700) that ``up`` removes when it stops. Within one ``up`` it persists with an
append-only file synced to disk before each write is acknowledged (``appendfsync
always``), so a Redis that dies and restarts keeps every dedupe key, decision and accrual
it confirmed; ``everysec`` could lose up to the last second of them (a machine crash, or
a write held back behind a slow fsync), and with them a call's once-only guarantees.
Each ``up`` still starts a fresh cluster, so the demo's totals start at zero and agree
with the emulator's. Operators who want state to outlive ``up`` set ``SWITCHBOARD_REDIS_URL``.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

from switchboard.supervisor import Child, Supervisor

INSTALL_HINT = (
    "redis-server not found on PATH: install it (Debian/Ubuntu: `apt-get install redis-server`, "
    "macOS: `brew install redis`) or set SWITCHBOARD_REDIS_URL to an existing Redis"
)


class RedisMissing(RuntimeError):
    """No ``redis-server`` binary could be found."""


@dataclass
class EmbeddedRedis:
    """A started (not yet awaited) embedded server."""

    child: Child
    url: str
    port: int
    data_dir: Path

    def ready(self) -> bool:
        """True once the server accepts connections."""
        return port_accepts(self.port)

    def remove_files(self) -> None:
        """Delete the private directory; call after the server has stopped."""
        shutil.rmtree(self.data_dir, ignore_errors=True)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def start_embedded_redis(supervisor: Supervisor, parent_dir: Path) -> EmbeddedRedis:
    """Start the server under ``supervisor``; raise ``RedisMissing`` without a binary."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RedisMissing(INSTALL_HINT)
    parent_dir.mkdir(parents=True, exist_ok=True)
    data_dir = Path(tempfile.mkdtemp(prefix="redis-", dir=parent_dir))  # mode 0700
    port = free_port()
    argv = [
        binary,
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", str(data_dir),
        "--save", "",
        "--appendonly", "yes",
        "--appendfsync", "always",
        "--protected-mode", "yes",
        "--loglevel", "warning",
    ]  # fmt: skip
    # Last wave: everything else still talks to Redis while it drains.
    child = supervisor.start("redis", argv, stop_wave=2, stop_budget_s=1.0)
    return EmbeddedRedis(child, f"redis://127.0.0.1:{port}/0", port, data_dir)


def port_accepts(port: int, host: str = "127.0.0.1") -> bool:
    """True if something accepts TCP connections on ``host:port``."""
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0
