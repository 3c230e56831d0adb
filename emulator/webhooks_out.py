"""Outgoing ``realtime.call.incoming`` webhooks, signed and retried like OpenAI's.

Each placed call produces one event, delivered to ``EmulatorConfig.webhook_url`` by a
fixed pool of workers: placing a call only enqueues, so a traffic generator can place
hundreds of calls a second while the number of posts in flight stays bounded. A
non-2xx answer, a timeout or a connection error is retried after each delay of
``webhook_retry_schedule_s`` with the same ``webhook-id`` and a fresh timestamp and
signature (Standard Webhooks). Every attempt is recorded in the call's
``webhook_deliveries`` (``error`` names the failure as httpx does: ``ConnectError``,
``ReadTimeout``, ...).

Plain ``http`` URLs go through ``KeepAlivePool`` (one keep-alive connection per worker
at most, requests written as pre-formatted bytes), which costs a fraction of an httpx
request; ``https`` URLs go through the app's pooled ``httpx.AsyncClient``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from emulator.context import EmulatorContext
from emulator.faults import duplicate_webhook, webhook_delay_s
from emulator.http_keepalive import HttpError, KeepAlivePool, Origin, http_origin
from emulator.state import EmulatedCall, new_event_id

log = logging.getLogger(__name__)

#: Webhook posts in flight at once (one worker each, so at most one connection each).
#: Eight deliver over 1,500 webhooks a second to a bare sink on loopback.
WEBHOOK_CONCURRENCY = 8
USER_AGENT = "OpenAI/1.0 (+https://platform.openai.com/docs/webhooks)"


def signing_key(secret: str) -> bytes:
    """The HMAC key of a secret: base64-decoded after ``whsec_``, else its UTF-8 bytes."""
    if secret.startswith("whsec_"):
        return base64.b64decode(secret.removeprefix("whsec_"))
    return secret.encode()


def sign(key: bytes, webhook_id: str, timestamp: int | str, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,`` + base64 HMAC-SHA256 of ``id.timestamp.body``."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.digest(key, signed, hashlib.sha256)
    return "v1," + base64.b64encode(digest).decode()


def incoming_call_event(call: EmulatedCall, created_at: int) -> dict[str, Any]:
    """The ``realtime.call.incoming`` event for ``call``."""
    return {
        "object": "event",
        "id": new_event_id(),
        "type": "realtime.call.incoming",
        "created_at": created_at,
        "data": {
            "call_id": call.call_id,
            "sip_headers": [dict(header) for header in call.sip_headers],
            "sip_media_security": "srtp",
        },
    }


@dataclass
class Delivery:
    """One webhook on its way: the body is fixed, each attempt is signed afresh."""

    call: EmulatedCall
    webhook_id: str
    body: bytes
    attempts: int = 0
    fixed_headers: bytes = field(init=False, repr=False)
    """The request headers every attempt repeats, formatted once."""

    def __post_init__(self) -> None:
        self.fixed_headers = (
            f"user-agent: {USER_AGENT}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(self.body)}\r\nwebhook-id: {self.webhook_id}\r\n"
        ).encode()


class WebhookSender:
    """A bounded pool of workers delivering webhooks with retries and injected faults."""

    def __init__(
        self,
        ctx: EmulatorContext,
        client: httpx.AsyncClient,
        concurrency: int = WEBHOOK_CONCURRENCY,
    ) -> None:
        self._ctx = ctx
        self._client = client
        self._pool = KeepAlivePool(max_idle=concurrency)
        self._origin: tuple[str, Origin | None, bytes] = ("", None, b"")
        self._key = signing_key(ctx.config.webhook_secret)
        self._concurrency = concurrency
        self._queue: asyncio.Queue[tuple[Delivery, bool]] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []
        self._timers: set[asyncio.TimerHandle] = set()

    def start(self) -> None:
        self._workers = [
            asyncio.create_task(self._work(), name=f"webhook-worker-{n}")
            for n in range(self._concurrency)
        ]

    async def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        await self._pool.aclose()

    def pending(self) -> int:
        """Deliveries queued or waiting for a retry (not counting those in flight)."""
        return self._queue.qsize() + len(self._timers)

    def send_incoming(self, call: EmulatedCall) -> None:
        """Queue the ``realtime.call.incoming`` webhook for a newly placed call."""
        if self._ctx.config.webhook_url is None:
            return
        event = incoming_call_event(call, int(call.created_at))
        delivery = Delivery(call, "wh_" + secrets.token_hex(16), orjson.dumps(event))
        self._schedule(delivery, duplicate=False, after_s=0.0)
        if duplicate_webhook(self._ctx.faults, self._ctx.rng):
            self._schedule(delivery, duplicate=True, after_s=0.0)

    def _schedule(self, delivery: Delivery, *, duplicate: bool, after_s: float) -> None:
        delay_s = after_s + webhook_delay_s(self._ctx.faults)
        if delay_s <= 0:
            self._queue.put_nowait((delivery, duplicate))
            return
        loop = asyncio.get_running_loop()
        timer: asyncio.TimerHandle

        def fire() -> None:
            self._timers.discard(timer)
            self._queue.put_nowait((delivery, duplicate))

        timer = loop.call_later(delay_s, fire)
        self._timers.add(timer)

    async def _work(self) -> None:
        while True:
            delivery, duplicate = await self._queue.get()
            try:
                delivered = await self._attempt(delivery, duplicate)
            except Exception:  # a worker must outlive any one delivery
                log.exception("webhook delivery for %s failed", delivery.call.call_id)
                delivered = False
            if duplicate or delivered:
                continue
            schedule = self._ctx.config.webhook_retry_schedule_s
            if delivery.attempts <= len(schedule):
                self._schedule(delivery, duplicate=False, after_s=schedule[delivery.attempts - 1])

    def _http_origin(self, url: str) -> tuple[Origin | None, bytes]:
        """A plain-http ``url``'s origin and request line plus host header, parsed once."""
        if self._origin[0] != url:
            origin = http_origin(url)
            start_line = b""
            if origin is not None:
                start = f"POST {origin.target} HTTP/1.1\r\nhost: {origin.authority}\r\n"
                start_line = start.encode()
            self._origin = (url, origin, start_line)
        return self._origin[1], self._origin[2]

    async def _attempt(self, delivery: Delivery, duplicate: bool) -> bool:
        url = self._ctx.config.webhook_url
        if url is None:
            return True
        if not duplicate:
            delivery.attempts += 1
        sent_at = time.time()
        timestamp = int(sent_at)
        signature = sign(self._key, delivery.webhook_id, timestamp, delivery.body)
        record: dict[str, Any] = {
            "webhook_id": delivery.webhook_id,
            "attempt": delivery.attempts,
            "duplicate": duplicate,
            "sent_at": sent_at,
            "status": None,
            "error": None,
        }
        timeout_s = self._ctx.config.webhook_timeout_s
        started_s = time.perf_counter()
        origin, start_line = self._http_origin(url)
        if origin is not None:
            request = b"%s%swebhook-timestamp: %d\r\nwebhook-signature: %s\r\n\r\n%s" % (
                start_line,
                delivery.fixed_headers,
                timestamp,
                signature.encode(),
                delivery.body,
            )
            try:
                record["status"] = await self._pool.post(origin, request, timeout_s)
            except HttpError as exc:
                record["error"] = type(exc).__name__
        else:
            headers = {
                "content-type": "application/json",
                "user-agent": USER_AGENT,
                "webhook-id": delivery.webhook_id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": signature,
            }
            try:
                response = await self._client.post(
                    url, content=delivery.body, headers=headers, timeout=timeout_s
                )
            except httpx.HTTPError as exc:
                record["error"] = type(exc).__name__
            else:
                record["status"] = response.status_code
        record["duration_ms"] = round((time.perf_counter() - started_s) * 1000, 3)
        delivery.call.webhook_deliveries.append(record)
        status = record["status"]
        return status is not None and 200 <= status < 300
