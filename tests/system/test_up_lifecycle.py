"""``switchboard up`` outside the demo: refusing to start, the real-API mode, SIGTERM, and a
child that dies taking the stack down rather than leaving half of it running."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.support.ports import free_port
from tests.support.procs import wait_until
from tests.support.up_stack import clean_env, cli, running_up, survivors

pytestmark = [pytest.mark.system, pytest.mark.timeout(90)]

WEBHOOK_SECRET = "whsec_" + "c2VjcmV0LXNpZ25pbmcta2V5LWZvci10ZXN0cy0wMTIz"


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def test_up_refuses_to_start_with_a_clear_line(tmp_path: Path) -> None:
    # No redis-server on PATH (the venv's own scripts are called by absolute path).
    no_redis = clean_env(PATH=str(tmp_path))
    result = cli("up", cwd=tmp_path, env=no_redis)
    assert result.returncode == 1
    assert "redis-server not found" in one_line(result.stderr)
    assert "apt-get install redis-server" in result.stderr

    no_secret = clean_env(OPENAI_API_KEY="sk-test-not-used")
    result = cli("up", cwd=tmp_path, env=no_secret)
    assert result.returncode == 1
    assert "OPENAI_WEBHOOK_SECRET must be set" in one_line(result.stderr)

    unreachable = clean_env(SWITCHBOARD_REDIS_URL=f"redis://:pw@127.0.0.1:{free_port()}/0")
    result = cli("up", cwd=tmp_path, env=unreachable)
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert "unreachable" in line
    assert ":pw@" not in line
    assert not (tmp_path / ".switchboard" / "up.json").exists()


def test_against_the_real_api_it_prints_what_to_register_and_stops_on_sigterm(
    tmp_path: Path, redis_url: str
) -> None:
    env = clean_env(
        OPENAI_API_KEY="sk-test-never-sent",
        OPENAI_WEBHOOK_SECRET=WEBHOOK_SECRET,
        OPENAI_PROJECT_ID="proj_demo123",
        SWITCHBOARD_REDIS_URL=redis_url,
        SWITCHBOARD_PUBLIC_URL="https://switchboard.example.com",
    )
    with running_up(tmp_path, "--workers", "1", "--runners", "1", env=env) as up:
        assert up.info["emulator_url"] is None
        assert up.info["redis_url"] == redis_url
        assert set(up.info["children"]) == {"ingress", "worker-1", "runner-1"}
        wait_until(lambda: "transport=tls" in up.output(), 10.0, "the banner", up.child)
        output = up.output()
        assert "https://switchboard.example.com/webhooks/openai" in output
        assert "sip:proj_demo123@sip.api.openai.com;transport=tls" in output
        assert "sk-test-never-sent" not in output
        assert WEBHOOK_SECRET not in output
        assert str(up.info["admin_token"]) not in output
        assert os.stat(tmp_path / ".switchboard" / "up.json").st_mode & 0o777 == 0o600

        started = time.monotonic()
        up.child.proc.send_signal(signal.SIGTERM)
        assert up.child.proc.wait(timeout=12) == 0
        assert time.monotonic() - started < 10.0
        assert survivors(up.child_pids) == []


def test_a_child_that_dies_is_reported_and_stops_the_whole_stack(tmp_path: Path) -> None:
    with running_up(tmp_path) as up:
        assert set(up.info["children"]) == {"redis", "ingress", "worker-1", "runner-1", "emulator"}
        ingress = int(up.info["children"]["ingress"])
        os.killpg(ingress, signal.SIGKILL)
        assert up.child.proc.wait(timeout=15) == 1
        output = up.output()
        assert "ingress stopped (exit code -9); stopping" in output
        # Its last log lines come with it.
        assert "Uvicorn running on" in output or "Application startup complete" in output
        assert survivors(up.child_pids) == []
        assert not (tmp_path / ".switchboard" / "up.json").exists()
