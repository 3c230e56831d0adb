"""A private redis-server for the test session, on a free port, in a temporary dir."""

from __future__ import annotations

import shutil
from pathlib import Path

import redis

from tests.support.ports import free_port
from tests.support.procs import Child, spawn, wait_until


def start_redis(
    workdir: Path, appendonly: bool = False, port: int | None = None
) -> tuple[Child, str]:
    """Start ``redis-server`` (on ``port``, else a free one) and return it with its URL
    once it answers PING."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server not found on PATH: run `make install` first")
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    argv = [
        binary,
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--save", "",
        "--appendonly", "yes" if appendonly else "no",
        "--dir", str(workdir),
    ]  # fmt: skip
    child = spawn(f"redis-{port}", argv, workdir)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    try:
        wait_until(answers, 10.0, "redis-server PING", child)
    finally:
        client.close()
    return child, url
