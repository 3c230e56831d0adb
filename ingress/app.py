"""The ingress ASGI app: webhook receiver, health, readiness and metrics.

``create_app`` is the one factory: ``serve`` (``switchboard ingress``) runs it under
uvicorn, and tests build it too. Every route is listed in ``_routes``; further
endpoints (the admin API) come in through ``extra_routes`` so they share the app, its
Redis client and its metrics registry. ``POST /webhooks/openai``, nearly all of the
traffic, is handed to the webhook receiver ahead of the middleware stack
(``IngressApp``); every other request goes through it as usual.

Every error answer is JSON, ``{"error": {"code", "message"}}``: those of the endpoints
themselves, and the router's (an unknown path is a 404 ``not_found``, a method a route
does not take a 405 ``method_not_allowed`` with its ``Allow`` header) and an unexpected
exception's 500 ``internal_error`` (``http_error``).

Settings come from the environment. A missing or unusable ``OPENAI_WEBHOOK_SECRET`` or
``SWITCHBOARD_REDIS_URL`` stops start-up with a one-line error (exit 2) that names the
variable and never its value.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, cast

import redis.asyncio
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from ingress.admin import admin_routes
from ingress.cluster_view import ClusterView
from ingress.metrics import AdminRequestMetrics, IngressMetrics
from ingress.verify import signing_key
from ingress.webhooks import WEBHOOK_PATH, WebhookReceiver, error_response
from shared.errors import ConfigError
from shared.policy_file import PolicySource
from shared.settings import Settings
from shared.store import AsyncCallStore

READY_TIMEOUT_S = 1.0
"""Readiness fails if Redis does not answer PING within this."""


def connect_redis(url: str) -> redis.asyncio.Redis:
    """An async client that fails fast: the webhook sender retries a 503 anyway."""
    client: redis.asyncio.Redis = redis.asyncio.Redis.from_url(
        url,
        socket_connect_timeout=1.0,
        socket_timeout=2.0,
        retry=Retry(ExponentialBackoff(cap=0.1, base=0.01), retries=2),
    )
    return client


MAX_PATH_SHOWN = 200


async def http_error(request: Request, exc: Exception) -> Response:
    """The JSON answer to a router error (404, 405) or an unexpected exception (500)."""
    if not isinstance(exc, HTTPException):
        return error_response(500, "internal_error", "internal error; see the ingress log")
    status = exc.status_code
    where = f"{request.method} {request.url.path[:MAX_PATH_SHOWN]}"
    headers = dict(exc.headers or {})
    if status == 404:
        message = f"no such endpoint: {where}"
    elif status == 405:
        message = f"method not allowed: {where} (allowed: {headers.get('Allow', 'none')})"
    else:
        message = str(exc.detail)
    try:
        code = http.HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        code = "http_error"
    response = error_response(status, code, message)
    response.headers.update(headers)
    return response


def _routes(
    receiver: WebhookReceiver,
    client: redis.asyncio.Redis,
    registry: CollectorRegistry,
    cluster: ClusterView,
) -> list[BaseRoute]:
    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        try:
            await asyncio.wait_for(client.ping(), READY_TIMEOUT_S)
        except (RedisError, OSError, TimeoutError):
            return error_response(503, "not_ready", "redis is unreachable")
        return JSONResponse({"status": "ready"})

    async def metrics(request: Request) -> Response:
        # The cluster view is read from Redis asynchronously, then rendered with ours.
        cluster_text = await cluster.render()
        return Response(generate_latest(registry) + cluster_text, media_type=CONTENT_TYPE_LATEST)

    return [
        # Reached only by other methods (405) when served by ``IngressApp``.
        Route(WEBHOOK_PATH, receiver, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]


class IngressApp(Starlette):
    """The ingress app: webhooks go straight to their receiver, the rest through Starlette.

    The middleware stack (error pages, exception handlers, the admin metrics, routing)
    does nothing for a webhook, whose receiver answers every outcome itself, yet took
    about a sixth of its time. uvicorn's proxy-headers handling is applied here, to
    the other requests only (``serve`` turns uvicorn's own off): the receiver reads
    neither the client address nor the scheme.
    """

    webhook: ASGIApp | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        trusted = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
        # uvicorn types its ASGI callables more narrowly than Starlette; they are the same.
        proxied: Any = ProxyHeadersMiddleware(cast("Any", super().__call__), trusted)
        self._others: ASGIApp = proxied

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"] == WEBHOOK_PATH
            and scope["method"] == "POST"
            and not scope.get("root_path")
            and self.webhook is not None
        ):
            await self.webhook(scope, receive, send)
        else:
            await self._others(scope, receive, send)


def create_app(
    settings: Settings,
    *,
    redis_client: redis.asyncio.Redis | None = None,
    registry: CollectorRegistry | None = None,
    clock: Callable[[], float] = time.time,
    extra_routes: Sequence[BaseRoute] = (),
) -> IngressApp:
    """Build the ingress app; raise ``ConfigError`` if the secret or Redis is missing.

    A ``redis_client`` passed in stays the caller's to close; one built from
    ``settings.redis_url`` is closed when the app shuts down.
    """
    if settings.openai_webhook_secret is None:
        raise ConfigError("OPENAI_WEBHOOK_SECRET is not set")
    try:
        key = signing_key(settings.openai_webhook_secret.get_secret_value())
    except ValueError as err:
        # The message names the problem, never the secret.
        raise ConfigError(f"OPENAI_WEBHOOK_SECRET: {err}") from None
    owned = redis_client is None
    if redis_client is None:
        if not settings.redis_url:
            raise ConfigError("SWITCHBOARD_REDIS_URL is not set")
        redis_client = connect_redis(settings.redis_url)
    client = redis_client
    registry = registry if registry is not None else CollectorRegistry()
    ingress_metrics = IngressMetrics(registry)
    receiver = WebhookReceiver(AsyncCallStore(client), key, ingress_metrics, clock=clock)
    policies = PolicySource(settings.config)
    cluster = ClusterView(client, lambda: policies.current().prices)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if owned:
                await client.aclose()

    routes = [
        *_routes(receiver, client, registry, cluster),
        *admin_routes(settings, client),
        *extra_routes,
    ]
    timed = Middleware(AdminRequestMetrics, metrics=ingress_metrics, routes=routes)
    errors = {HTTPException: http_error, Exception: http_error}
    app = IngressApp(
        routes=routes, lifespan=lifespan, middleware=[timed], exception_handlers=errors
    )
    app.webhook = receiver
    app.state.redis = client
    app.state.registry = registry
    return app


def serve(host: str = "127.0.0.1", port: int = 8080) -> int:
    """Run the ingress until SIGINT/SIGTERM; return the process exit code."""
    try:
        app = create_app(Settings())
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # Access logs would cost more than the webhook itself at thousands per second.
    uvicorn.run(
        app,
        host=host,
        port=port,
        loop="uvloop",
        access_log=False,
        # IngressApp reads the proxy headers itself, for the requests that use them.
        proxy_headers=False,
        log_level="info",
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    return 0
