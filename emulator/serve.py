"""Running the emulator as a service: uvicorn (on uvloop where available) plus traffic.

``serve`` is what ``switchboard emulator`` runs: it serves the app until SIGINT or
SIGTERM and, when a call rate is given, runs the traffic generator in the same event
loop once the server is listening. ``server_config`` holds the uvicorn settings the
emulator always uses, so tests that run it in a thread get the same server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Callable

import uvicorn
from starlette.applications import Starlette
from starlette.types import ASGIApp

from emulator.app import create_app
from emulator.config import EmulatorConfig
from emulator.context import EmulatorContext, FaultSettings
from emulator.dialer import UnknownScenarioError
from emulator.scenarios import load_scenarios
from emulator.traffic import MIX, TrafficGenerator

log = logging.getLogger(__name__)


def server_config(app: ASGIApp, host: str, port: int, log_level: str = "warning") -> uvicorn.Config:
    """uvicorn settings for the emulator: no access log, no websocket compression."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="none",  # the caller's event loop (uvloop when ``serve`` runs it)
        ws="websockets-sansio",
        ws_per_message_deflate=False,
        lifespan="on",
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=3,
    )


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed, else None (the default loop)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def _serve(
    app: Starlette,
    host: str,
    port: int,
    calls_per_second: float | None,
    duration_s: float | None,
    scenario: str,
) -> None:
    server = uvicorn.Server(server_config(app, host, port))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            await serving  # startup failed: surface the error
            return
        await asyncio.sleep(0.01)
    ctx: EmulatorContext = app.state.ctx
    webhook_target = ctx.config.webhook_url or "nowhere"
    print(
        f"emulator listening on http://{host}:{port} (webhooks to {webhook_target})",
        file=sys.stderr,
    )
    traffic: asyncio.Task[int] | None = None
    if calls_per_second:
        generator = TrafficGenerator(
            app.state.dialer,
            ctx.scenarios,
            calls_per_second,
            scenario=scenario,
            duration_s=duration_s,
        )
        traffic = asyncio.create_task(generator.run())
        traffic.add_done_callback(_report_traffic)
    try:
        await serving
    finally:
        if traffic is not None:
            traffic.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await traffic


def _report_traffic(task: asyncio.Task[int]) -> None:
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        log.error("traffic generator stopped: %s", error)
    else:
        print(f"traffic generator placed {task.result()} calls", file=sys.stderr)


def serve(
    config: EmulatorConfig,
    host: str,
    port: int,
    *,
    calls_per_second: float | None = None,
    duration_s: float | None = None,
    scenario: str = MIX,
    faults: FaultSettings | None = None,
) -> None:
    """Serve the emulator until interrupted, placing calls if ``calls_per_second`` is set.

    Raises ``UnknownScenarioError`` before listening if ``scenario`` is not loaded.
    """
    if (
        calls_per_second
        and scenario != MIX
        and scenario not in load_scenarios(config.scenario_dirs)
    ):
        raise UnknownScenarioError(scenario)
    app = create_app(config, faults)
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(_serve(app, host, port, calls_per_second, duration_s, scenario))
