"""The emulator's ASGI app factory: the OpenAI-compatible API plus the control surface.

``create_app`` builds one ``EmulatorContext`` (on ``app.state.ctx``) and the routes:
REST under ``/v1``, the sideband websocket at ``/v1/realtime``, the control surface
under ``/_emulator``. The lifespan loads the scenarios and owns the pooled HTTP client
that carries outgoing webhooks; the dialer that places calls is ``app.state.dialer``.
On shutdown every live call ends (``ended_by="server"``) so nothing waits on it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, WebSocketRoute

from emulator import calls, client_secrets, control, metrics
from emulator.config import EmulatorConfig
from emulator.context import EmulatorContext, FaultSettings
from emulator.dialer import Dialer
from emulator.rest import ApiError, api_error_handler, http_error_handler, server_error_handler
from emulator.scenarios import load_scenarios
from emulator.sideband import sideband_endpoint
from emulator.webhooks_out import WEBHOOK_CONCURRENCY, WebhookSender


def create_app(config: EmulatorConfig, faults: FaultSettings | None = None) -> Starlette:
    """A new emulator app with its own, empty ground truth."""
    ctx = EmulatorContext(config=config, faults=faults or FaultSettings())

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        ctx.scenarios = load_scenarios(config.scenario_dirs)
        limits = httpx.Limits(
            max_connections=WEBHOOK_CONCURRENCY, max_keepalive_connections=WEBHOOK_CONCURRENCY
        )
        async with httpx.AsyncClient(limits=limits, follow_redirects=False) as client:
            sender = WebhookSender(ctx, client)
            sender.start()
            app.state.dialer = Dialer(ctx, sender)
            try:
                yield
            finally:
                for call in ctx.registry.all():
                    call.end("server")
                await sender.stop()

    routes: list[BaseRoute] = [
        *calls.ROUTES,
        *client_secrets.ROUTES,
        WebSocketRoute("/v1/realtime", sideband_endpoint),
        *control.ROUTES,
        *metrics.ROUTES,
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            ApiError: api_error_handler,
            HTTPException: http_error_handler,
            Exception: server_error_handler,
        },
    )
    app.state.ctx = ctx
    return app
