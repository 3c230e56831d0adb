"""A private redis-server for the test session, on a free port, in a temporary dir."""

from __future__ import annotations

import shutil
from pathlib import Path

import redis

from tests.support.ports import free_port
from tests.support.procs import Child, spawn, wait_until


def start_redis(
    workdir: Path, appendonly: bool = False, port: int | None = None, *, cluster: bool = False
) -> tuple[Child, str]:
    """Start ``redis-server`` (on ``port``, else a free one) and return it with its URL
    once it answers PING.

    ``cluster``: a one-node Redis Cluster holding every slot; it refuses what any Redis
    Cluster refuses, such as one command over keys of different slots (``CROSSSLOT``).
    """
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
    if cluster:  # the bus port is given: port + 10000 may be out of range
        argv += ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf"]
        argv += ["--cluster-port", str(free_port())]
    child = spawn(f"redis-{port}", argv, workdir)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    def cluster_ok() -> bool:
        return "cluster_state:ok" in str(client.execute_command("CLUSTER", "INFO"))

    try:
        wait_until(answers, 10.0, "redis-server PING", child)
        if cluster:
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
            wait_until(cluster_ok, 10.0, "redis cluster state ok", child)
    finally:
        client.close()
    return child, url
