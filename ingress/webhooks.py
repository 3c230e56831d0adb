"""``POST /webhooks/openai``: verify, dedupe, record and enqueue, then answer at once.

The path is kept lean for throughput and never blocks the event loop. ``WebhookReceiver``
is a bare ASGI app: the ingress app (``ingress.app``) hands it every ``POST`` to the
webhook path before its middleware stack, it reads the body straight from ``receive``
and sends a pre-built JSON answer. orjson decodes the event, the call record is built
as the flat hash Redis holds (no model on this path), and the call record, the dedupe
markers and the Celery routing message go to Redis in one script run by the async
client (``AsyncCallStore.create_incoming`` with a ``QueuedMessage``), so a call is
recorded if and only if exactly one routing task is queued for it.

Answers: 200 for a new call, a duplicate or an event type we do not handle; 400 for a
bad signature or a malformed event; 413 for a body over ``MAX_BODY_BYTES``; 503 when
Redis is unavailable or refuses the write (read-only replica, out of memory, a script
error), so that OpenAI delivers it again; that is counted as ``unavailable`` (reason
``redis_error`` when Redis answered with an error). Errors are
``{"error": {"code", "message"}}`` and refused deliveries change nothing (the script
writes all or nothing).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import orjson
import redis
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ingress.incoming import EVENT_TYPE, PayloadError, parse_incoming
from ingress.metrics import IngressMetrics, Outcome
from ingress.verify import DEFAULT_TOLERANCE_S, VerificationError, verify
from shared.queues import CONTROL_QUEUE, ROUTE_CALL_TASK
from shared.store import AsyncCallStore, CreateResult, QueuedMessage, StoreUnavailable
from shared.task_message import TaskMessages

log = logging.getLogger("switchboard.ingress")

WEBHOOK_PATH = "/webhooks/openai"

MAX_BODY_BYTES = 64 * 1024
"""A ``realtime.call.incoming`` event is a few KiB; anything this big is not one."""

_JSON = "application/json"

_WANTED_HEADERS = frozenset(
    {b"content-length", b"webhook-id", b"webhook-timestamp", b"webhook-signature"}
)
"""The request headers the webhook reads; the others are not even decoded."""


class _TooLarge(Exception):
    pass


class _Disconnected(Exception):
    pass


def error_response(status: int, code: str, message: str) -> Response:
    """The JSON error body every ingress endpoint uses."""
    body = orjson.dumps({"error": {"code": code, "message": message}})
    return Response(body, status_code=status, media_type=_JSON)


class _Answer:
    """One webhook answer, its headers encoded once."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        self.body = body
        self.headers = (
            (b"content-length", str(len(body)).encode()),
            (b"content-type", _JSON.encode()),
        )

    @classmethod
    def error(cls, status: int, code: str, message: str) -> _Answer:
        return cls(status, orjson.dumps({"error": {"code": code, "message": message}}))

    async def send(self, send: Send) -> None:
        # Fresh messages and header list: a middleware may change what it is given.
        headers = list(self.headers)
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


_QUEUED = _Answer(200, orjson.dumps({"result": "queued"}))
_DUPLICATE = _Answer(200, orjson.dumps({"result": "duplicate"}))
_IGNORED = _Answer(200, orjson.dumps({"result": "ignored"}))
_TOO_LARGE = _Answer.error(413, "body_too_large", f"request body exceeds {MAX_BODY_BYTES} bytes")
_MALFORMED_JSON = _Answer.error(400, "malformed_json", "body is not valid JSON")
_NO_TYPE = _Answer.error(400, "malformed_payload", "event needs a string type")
_UNAVAILABLE = _Answer.error(503, "unavailable", "state store unavailable; retry later")


def request_headers(scope: Scope) -> dict[str, str]:
    """The headers the webhook reads, by lower-case name; the first of repeats wins."""
    found: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.lower()
        if name in _WANTED_HEADERS:
            # Latin-1, as Starlette decodes header values.
            found.setdefault(name.decode("latin-1"), raw_value.decode("latin-1"))
    return found


async def read_body(receive: Receive, declared: str | None, limit: int) -> bytes:
    """The raw body, refusing (``_TooLarge``) as soon as it is known to exceed ``limit``."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            # http.disconnect: the sender is gone, so there is nobody to answer.
            raise _Disconnected
        chunk = message.get("body", b"")
        # Counted as it arrives: chunked bodies and lying Content-Length headers too.
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class WebhookReceiver:
    """The endpoint for OpenAI's webhooks; one instance per app."""

    def __init__(
        self,
        store: AsyncCallStore,
        signing_key: bytes,
        metrics: IngressMetrics,
        *,
        clock: Callable[[], float] = time.time,
        messages: TaskMessages | None = None,
        tolerance_s: int = DEFAULT_TOLERANCE_S,
    ) -> None:
        self._store = store
        self._key = signing_key
        self._metrics = metrics
        self._clock = clock
        self._messages = messages or TaskMessages()
        self._tolerance_s = tolerance_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one delivery; count it and time it whatever the outcome."""
        started = time.perf_counter()
        try:
            outcome, reason, answer = await self._handle(scope, receive)
        except _Disconnected:
            return
        finally:
            self._metrics.webhook_duration_s.observe(time.perf_counter() - started)
        self._metrics.count(outcome, reason)
        await answer.send(send)

    async def _handle(self, scope: Scope, receive: Receive) -> tuple[Outcome, str, _Answer]:
        headers = request_headers(scope)
        try:
            body = await read_body(receive, headers.get("content-length"), MAX_BODY_BYTES)
        except _TooLarge:
            return Outcome.TOO_LARGE, "", _TOO_LARGE
        try:
            delivery = verify(
                headers, body, self._key, now_s=self._clock(), tolerance_s=self._tolerance_s
            )
        except VerificationError as err:
            log.debug("webhook refused: %s", err.failure.value)
            answer = _Answer.error(400, "invalid_signature", str(err))
            return Outcome.INVALID_SIGNATURE, err.failure.value, answer
        try:
            event: Any = orjson.loads(body)
        except orjson.JSONDecodeError:
            return Outcome.INVALID, "malformed_json", _MALFORMED_JSON
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            return Outcome.INVALID, "malformed_payload", _NO_TYPE
        if event["type"] != EVENT_TYPE:
            log.debug("webhook %s: event type %.64r ignored", delivery.webhook_id, event["type"])
            return Outcome.IGNORED, "unknown_event", _IGNORED
        try:
            call = parse_incoming(event)
        except PayloadError as err:
            answer = _Answer.error(400, "malformed_payload", str(err))
            return Outcome.INVALID, "malformed_payload", answer
        record = call.record_hash(delivery.webhook_id, self._clock())
        route = self._messages.build(ROUTE_CALL_TASK, [call.call_id], CONTROL_QUEUE)
        try:
            created = await self._store.create_incoming(
                record, enqueue=QueuedMessage(CONTROL_QUEUE, route)
            )
        except StoreUnavailable as err:
            log.warning("webhook %s not recorded: %s", delivery.webhook_id, err)
            return Outcome.UNAVAILABLE, "", _UNAVAILABLE
        except redis.RedisError as err:
            # Redis answered but refused (READONLY, OOM, a script error): retry later too.
            log.error(
                "webhook %s not recorded: %s: %s", delivery.webhook_id, type(err).__name__, err
            )
            return Outcome.UNAVAILABLE, "redis_error", _UNAVAILABLE
        if created is CreateResult.CREATED:
            log.debug("call %s recorded and queued for routing", call.call_id)
            return Outcome.QUEUED, "", _QUEUED
        return Outcome.DUPLICATE, created.value, _DUPLICATE
