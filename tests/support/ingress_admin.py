"""``switchboard ingress`` with an admin token, on a free port, stopped afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ingress.admin_openapi import EXAMPLE_CALL_ID, EXAMPLE_RUNNER_ID
from tests.support.ports import free_port
from tests.support.procs import http_ok, spawn, switchboard_argv, wait_until
from tests.support.webhook_sender import SECRET

__all__ = ["EXAMPLE_CALL_ID", "EXAMPLE_RUNNER_ID", "admin_ingress"]


@contextmanager
def admin_ingress(log_dir: Path, redis_url: str, token: str) -> Iterator[str]:
    """The ingress's base URL once healthy; its log must never show the token."""
    port = free_port()
    env = {
        "OPENAI_WEBHOOK_SECRET": SECRET,
        "SWITCHBOARD_REDIS_URL": redis_url,
        "SWITCHBOARD_ADMIN_TOKEN": token,
    }
    argv = switchboard_argv("ingress", "--host", "127.0.0.1", "--port", str(port))
    child = spawn(f"ingress-{port}", argv, log_dir, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(http_ok(f"{url}/healthz"), 30.0, "ingress /healthz", child)
        yield url
    finally:
        child.stop()
        assert token not in child.log_path.read_text(errors="replace")
