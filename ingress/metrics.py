"""The ingress's own Prometheus metrics, registered on an injected registry.

``switchboard_webhooks_total{result, reason}`` counts every webhook delivery by what
became of it; ``switchboard_webhook_duration_seconds`` is the time the handler spent on
one, from first byte read to response built. ``AdminRequestMetrics`` is the ASGI
middleware behind ``switchboard_admin_requests_total{route, method, status}`` and
``switchboard_admin_request_duration_seconds{route, method}``; ``route`` is the route's
path template (``/v1/calls/{call_id}``), never the raw path, so ids cannot grow the
label set. Names, labels and buckets come from ``shared.metrics``.

``result`` is one of ``Outcome``; ``reason`` refines it: the verification failure
(``missing_header``, ``bad_timestamp``, ``too_old``, ``too_new``, ``mismatch``),
``malformed_json``/``malformed_payload``/``bad_content_length`` for ``invalid``,
``duplicate_webhook``/``duplicate_call`` for ``duplicate``, ``unknown_event`` for
``ignored``, and ``""`` where there is nothing to add.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import metrics

ADMIN_PREFIXES = ("/v1/", "/openapi.json")
"""Paths the admin middleware times; the webhook path has its own, leaner metrics."""


class Outcome(enum.StrEnum):
    """What became of one delivery."""

    QUEUED = "queued"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"
    INVALID_SIGNATURE = "invalid_signature"
    INVALID = "invalid"
    TOO_LARGE = "too_large"
    UNAVAILABLE = "unavailable"


class IngressMetrics:
    """Counters and histograms of the webhook receiver and the admin API."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._webhooks = metrics.counter(metrics.WEBHOOKS, registry)
        self.webhook_duration_s = metrics.histogram(metrics.WEBHOOK_DURATION, registry)
        self.admin_requests = metrics.counter(metrics.ADMIN_REQUESTS, registry)
        self.admin_duration_s = metrics.histogram(metrics.ADMIN_DURATION, registry)
        # Label lookup costs more than the increment; cache children per label pair.
        self._children: dict[tuple[str, str], Counter] = {}
        # Refusals exist from the start, so a rate over them is 0 rather than no data.
        for outcome in (Outcome.QUEUED, Outcome.TOO_LARGE, Outcome.INVALID_SIGNATURE):
            self._child(outcome, "")

    def _child(self, outcome: Outcome, reason: str) -> Counter:
        key = (outcome.value, reason)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._webhooks.labels(*key)
        return child

    def count(self, outcome: Outcome, reason: str = "") -> None:
        """Count one delivery."""
        self._child(outcome, reason).inc()

    def admin_request(self, route: str, method: str, status: int, duration_s: float) -> None:
        """Count and time one admin request."""
        self.admin_requests.labels(route, method, str(status)).inc()
        self.admin_duration_s.labels(route, method).observe(duration_s)


class AdminRequestMetrics:
    """ASGI middleware: counts and times admin requests by route template and status."""

    def __init__(self, app: ASGIApp, metrics: IngressMetrics, routes: Iterable[BaseRoute]) -> None:
        self.app = app
        self._metrics = metrics
        # The router writes the matched endpoint into the scope; map it back to its path.
        self._paths = {id(r.endpoint): r.path for r in routes if isinstance(r, Route)}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(ADMIN_PREFIXES):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_see(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_see)
        finally:
            endpoint = scope.get("endpoint")
            route = self._paths.get(id(endpoint), "other") if endpoint is not None else "other"
            self._metrics.admin_request(
                route, scope["method"], status, time.perf_counter() - started
            )
