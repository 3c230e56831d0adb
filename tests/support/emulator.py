"""An OpenAI Realtime emulator for tests, on a free loopback port, always stopped after.

Two ways to run one, both yielding an ``EmulatorHandle``:

    with running_emulator(webhook_url=url, ring_timeout_s=2.0) as emu:   # thread
        client = openai.OpenAI(base_url=emu.api_url, api_key=emu.api_key)
        call_id = emu.place_call(scenario="quick-question")
        ...
        assert emu.call(call_id)["state"] == "active"

    with spawned_emulator(tmp_path, "--webhook-url", url) as emu:         # subprocess
        ...

``running_emulator`` runs a real ``uvicorn.Server`` in a background thread (fast, and
``emu.app`` exposes the app and its ground truth; read it, do not write it);
``spawned_emulator`` runs the ``switchboard emulator`` command. ``serve_in_thread``
runs any ASGI app the same way (for webhook receivers and other peers in tests).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.types import ASGIApp

from emulator.app import create_app
from emulator.config import EmulatorConfig
from emulator.context import FaultSettings
from emulator.serve import loop_factory, server_config
from tests.support.ports import free_port
from tests.support.procs import http_ok, spawn, switchboard_argv, wait_until

DEFAULT_SECRET = EmulatorConfig().webhook_secret


@dataclass
class EmulatorHandle:
    """A running emulator: its URLs, credentials and a client for the control surface."""

    base_url: str
    webhook_secret: str
    api_key: str
    app: Starlette | None = None
    """The emulator app (thread mode only): ``app.state.ctx`` holds its ground truth."""
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=10.0))

    @property
    def api_url(self) -> str:
        """The ``base_url`` for the OpenAI SDK."""
        return f"{self.base_url}/v1"

    @property
    def ws_url(self) -> str:
        return self.api_url.replace("http://", "ws://", 1)

    def _ok(self, response: httpx.Response) -> Any:
        if response.status_code != 200:
            raise AssertionError(f"{response.request.url}: {response.status_code} {response.text}")
        return response.json()

    def place_call(
        self,
        scenario: str = "quick-question",
        from_: str = "+14155550100",
        to: str = "+18005550100",
        sip_headers: list[dict[str, str]] | None = None,
    ) -> str:
        """Place one call through ``POST /_emulator/calls``; returns its call id."""
        body: dict[str, Any] = {"from": from_, "to": to, "scenario": scenario}
        if sip_headers:
            body["sip_headers"] = sip_headers
        response = self.http.post(f"{self.base_url}/_emulator/calls", json=body)
        return str(self._ok(response)["call_id"])

    def call(self, call_id: str, events: bool = True) -> dict[str, Any]:
        """Ground truth for one call (``GET /_emulator/calls/{id}``)."""
        params = {} if events else {"events": "0"}
        url = f"{self.base_url}/_emulator/calls/{call_id}"
        result: dict[str, Any] = self._ok(self.http.get(url, params=params))
        return result

    def calls(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._ok(self.http.get(f"{self.base_url}/_emulator/calls"))[
            "calls"
        ]
        return result

    def ledger(self) -> dict[str, Any]:
        result: dict[str, Any] = self._ok(self.http.get(f"{self.base_url}/_emulator/ledger"))
        return result

    def set_faults(self, **settings: Any) -> dict[str, Any]:
        """Change fault settings (partial update); returns all current settings."""
        url = f"{self.base_url}/_emulator/faults"
        result: dict[str, Any] = self._ok(self.http.post(url, json=settings))
        return result

    def wait_for_call(
        self,
        call_id: str,
        condition: Callable[[dict[str, Any]], bool],
        timeout_s: float = 10.0,
        what: str = "call condition",
    ) -> dict[str, Any]:
        """Poll the call's ground truth until ``condition`` holds; returns that truth."""
        seen: dict[str, Any] = {}

        def check() -> bool:
            seen.update(self.call(call_id, events=False))
            return condition(seen)

        wait_until(check, timeout_s, f"{what} on {call_id}")
        return self.call(call_id)


@contextmanager
def serve_in_thread(app: ASGIApp, port: int | None = None) -> Iterator[str]:
    """Serve ``app`` with a real uvicorn in a background thread; yields its base URL."""
    port = port or free_port()
    server = uvicorn.Server(server_config(app, "127.0.0.1", port))
    failure: list[BaseException] = []

    def run() -> None:
        try:
            with asyncio.Runner(loop_factory=loop_factory()) as runner:
                runner.run(server.serve())
        except BaseException as exc:  # reported to the waiting test below
            failure.append(exc)

    thread = threading.Thread(target=run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    try:
        wait_until(
            lambda: server.started or bool(failure) or not thread.is_alive(), 10.0, "uvicorn"
        )
        if not server.started:
            raise RuntimeError(f"server on port {port} did not start: {failure}")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15.0)
        if thread.is_alive():
            raise RuntimeError(f"server on port {port} did not stop")


@contextmanager
def running_emulator(
    config: EmulatorConfig | None = None,
    *,
    faults: FaultSettings | None = None,
    **config_fields: Any,
) -> Iterator[EmulatorHandle]:
    """An emulator in a background thread; ``config_fields`` override ``config``'s fields."""
    base = config or EmulatorConfig()
    if config_fields:
        base = base.model_copy(update=config_fields)
    app = create_app(EmulatorConfig.model_validate(base.model_dump()), faults)
    with serve_in_thread(app) as url:
        handle = EmulatorHandle(
            base_url=url,
            webhook_secret=base.webhook_secret,
            api_key=base.api_key or "sk-emulator-test",
            app=app,
        )
        try:
            yield handle
        finally:
            handle.http.close()


@contextmanager
def spawned_emulator(
    log_dir: Path,
    *args: str,
    api_key: str | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[EmulatorHandle]:
    """``switchboard emulator`` as a child process with ``args``; its log is in ``log_dir``."""
    port = free_port()
    argv = switchboard_argv("emulator", "--host", "127.0.0.1", "--port", str(port), *args)
    child_env = {"SWITCHBOARD_EMULATOR_API_KEY": api_key or "", **(env or {})}
    secret = child_env.get("OPENAI_WEBHOOK_SECRET", DEFAULT_SECRET)
    child_env.setdefault("OPENAI_WEBHOOK_SECRET", secret)
    child = spawn(f"emulator-{port}", argv, log_dir, env=child_env)
    handle = EmulatorHandle(
        base_url=f"http://127.0.0.1:{port}",
        webhook_secret=secret,
        api_key=api_key or "sk-emulator-test",
    )
    try:
        wait_until(http_ok(f"{handle.base_url}/healthz"), 20.0, "emulator /healthz", child)
        yield handle
    finally:
        handle.http.close()
        child.stop()
