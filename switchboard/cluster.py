"""The cluster an operator verb talks to: its Redis, found from the environment or ``up.json``.

``SWITCHBOARD_REDIS_URL`` wins; without it the verbs use the ``.switchboard/up.json``
that a ``switchboard up`` in the working directory wrote (and removes when it stops),
so they work against a local stack at once and against a remote one from any machine
that can reach its Redis. ``up.json`` holds the local admin token: mode 0600.

Every failure to find or reach the cluster is a ``ClusterUnavailable`` whose message
is one line naming where it looked and never a password.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import redis

CONNECT_TIMEOUT_S = 2.0
STATE_DIR = Path(".switchboard")
UP_FILE_NAME = "up.json"


def write_up_file(path: Path, addresses: Mapping[str, object]) -> None:
    """Write ``up.json`` atomically, readable by its owner only: it holds the admin token."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a leftover file keeps its old mode through O_CREAT
    with os.fdopen(fd, "w") as handle:
        json.dump(dict(addresses), handle, indent=2)
    tmp.replace(path)


def read_up_file(path: Path) -> dict[str, object] | None:
    """The contents of an ``up.json``, or None if it is missing or unreadable."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class ClusterUnavailable(RuntimeError):
    """No cluster is configured, or its Redis does not answer."""


@dataclass(frozen=True)
class ClusterAddress:
    """Where the cluster's Redis is, and how we learnt it (for error messages)."""

    redis_url: str
    source: str

    @property
    def where(self) -> str:
        """``host:port`` (or socket path) of the Redis, without credentials."""
        parts = urlsplit(self.redis_url)
        if parts.scheme == "unix":
            return parts.path
        try:
            port = parts.port or 6379
        except ValueError:
            port = 6379
        return f"{parts.hostname or 'localhost'}:{port}"


def locate(environ: Mapping[str, str] | None = None, up_file: Path | None = None) -> ClusterAddress:
    """The configured cluster; raise ``ClusterUnavailable`` if there is none."""
    env = os.environ if environ is None else environ
    url = env.get("SWITCHBOARD_REDIS_URL")
    if url:
        return ClusterAddress(url, "SWITCHBOARD_REDIS_URL")
    path = up_file or STATE_DIR / UP_FILE_NAME
    data = read_up_file(path)
    if data is None or not isinstance(data.get("redis_url"), str):
        raise ClusterUnavailable(
            f"no cluster: set SWITCHBOARD_REDIS_URL or run `switchboard up` here ({path} not found)"
        )
    pid = data.get("pid")
    if isinstance(pid, int) and not process_running(pid):
        raise ClusterUnavailable(
            f"{path} is stale: the switchboard up that wrote it (pid {pid}) is not running"
        )
    return ClusterAddress(str(data["redis_url"]), str(path))


def process_running(pid: int) -> bool:
    """Whether a process with this pid exists (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: running
        return True
    return True


def connect(address: ClusterAddress) -> redis.Redis:
    """A client on the cluster's Redis (strings decoded), checked with a PING."""
    try:
        client = redis.Redis.from_url(
            address.redis_url,
            decode_responses=True,
            socket_connect_timeout=CONNECT_TIMEOUT_S,
            socket_timeout=CONNECT_TIMEOUT_S,
        )
    except ValueError as err:
        raise ClusterUnavailable(f"{address.source}: invalid Redis URL ({err})") from None
    try:
        client.ping()
    except (redis.RedisError, OSError) as err:
        client.close()
        raise ClusterUnavailable(
            f"redis at {address.where} (from {address.source}) is unreachable: {type(err).__name__}"
        ) from None
    return client


def open_cluster(environ: Mapping[str, str] | None = None) -> redis.Redis:
    """``connect(locate())``: the client every verb starts from."""
    return connect(locate(environ))
