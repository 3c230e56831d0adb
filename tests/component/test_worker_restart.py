"""``switchboard worker`` restarts a Celery worker that dies on its own, and stops for
good (no restart, nothing left running) when it is told to stop."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery

from shared.queues import POST_CALL_QUEUE
from shared.settings import Settings
from tests.support.procs import Child, spawn, switchboard_argv, wait_until
from workers.celery_app import create_app

STARTED = re.compile(r"celery worker started \(pid (\d+)\)")


def child_pids(worker: Child) -> list[int]:
    return [int(pid) for pid in STARTED.findall(worker.tail(400))]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def celery_client(redis_server: str) -> Iterator[Celery]:
    app = create_app(Settings(redis_url=redis_server))
    try:
        yield app
    finally:
        app.close()


def test_a_worker_that_dies_is_restarted_and_serves_again(
    redis_server: str, celery_client: Celery, tmp_path: Path
) -> None:
    env = {"SWITCHBOARD_REDIS_URL": redis_server}
    argv = switchboard_argv("worker", "--queues", POST_CALL_QUEUE, "--concurrency", "1")
    worker = spawn("restarting-worker", argv, tmp_path, env=env)
    try:
        wait_until(lambda: " ready." in worker.tail(200), 60.0, "celery worker ready", worker)
        [first] = child_pids(worker)
        os.kill(first, signal.SIGKILL)  # as the OOM killer or a crash would end it

        def second_ready() -> bool:
            return worker.tail(400).count(" ready.") == 2

        wait_until(second_ready, 60.0, "restarted celery worker ready", worker)
        assert "exited with status 137; restart 1" in worker.tail(400)
        assert worker.alive()
        [_, second] = child_pids(worker)
        assert second != first
        assert pid_alive(second)
        replies = celery_client.control.ping(timeout=5.0)
        assert [name for reply in replies for name in reply] == [
            f"switchboard-{second}@{os.uname().nodename}"
        ]

        assert worker.stop(signal.SIGTERM, timeout_s=30.0) == 0
        assert not pid_alive(second)
        assert "restart 2" not in worker.tail(400)
    finally:
        worker.stop(signal.SIGKILL)


BROKEN_CONSUMER = """
import sys
from celery.worker.consumer import consumer

def broken(self):
    raise AttributeError("'NoneType' object has no attribute 'hostname'")

consumer.Consumer.start = broken
from switchboard.cli import main
sys.argv = ["switchboard", *sys.argv[1:]]
main()
"""


def test_a_celery_worker_that_fails_makes_the_command_fail(
    redis_server: str, tmp_path: Path
) -> None:
    """Celery's own command line returns normally after an "Unrecoverable error" (as
    kombu raises when Redis dies during an ack); the command must still exit 1, or the
    restarter would take the failure for a requested stop."""
    import subprocess
    import sys

    env = {**os.environ, "SWITCHBOARD_REDIS_URL": redis_server}
    argv = ["worker", "--no-restart", "--queues", POST_CALL_QUEUE, "--concurrency", "1"]
    result = subprocess.run(
        [sys.executable, "-c", BROKEN_CONSUMER, *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "Unrecoverable error" in result.stderr
    assert result.returncode == 1, result.stderr[-2000:]
