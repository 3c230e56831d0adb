"""The Redis that ``switchboard up`` embeds persists every acknowledged write."""

from __future__ import annotations

import stat
from pathlib import Path

import redis

from switchboard.embedded_redis import start_embedded_redis
from switchboard.supervisor import Supervisor


def test_embedded_redis_syncs_its_append_only_file_on_every_write(tmp_path: Path) -> None:
    supervisor = Supervisor(tmp_path / "logs")
    server = start_embedded_redis(supervisor, tmp_path / "run")
    try:
        supervisor.wait_ready(server.child, server.ready, 15.0)
        client = redis.Redis.from_url(server.url, decode_responses=True)
        try:
            config = client.config_get("append*")
            client.set("probe", "1")
            aof_files = [p for p in server.data_dir.rglob("*.aof") if p.stat().st_size]
        finally:
            client.close()
        assert config["appendonly"] == "yes"
        assert config["appendfsync"] == "always"
        assert aof_files, "nothing written to the append-only file"
        assert stat.S_IMODE(server.data_dir.stat().st_mode) == 0o700
    finally:
        assert supervisor.stop_all(grace_s=5.0) == []
        server.remove_files()
    assert not server.data_dir.exists()
