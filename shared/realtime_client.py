"""The Realtime REST client for call control: accept, reject, refer, hang up.

Two faces over one behaviour: ``RealtimeClient`` (sync, for Celery workers) and
``AsyncRealtimeClient`` (for session runners). Each keeps a pooled ``httpx`` client;
tests pass a ``transport`` instead of monkeypatching.

Every operation runs inside an overall deadline (``ClientConfig.deadline_s``): failed
attempts that are worth repeating (429, 5xx, 408, 409, connection errors and timeouts)
are retried with jittered exponential backoff that honours ``Retry-After``; when the
next pause would cross the deadline the client gives up with ``DeadlineExceeded``.
Other 4xx raise at once: 404 as ``CallGone`` (the caller hung up), the rest as
``RealtimeRejected``. ``shared.realtime_answers`` holds that reading of answers.

A retry can repeat a request that went through: an attempt that timed out or lost its
connection after sending may have been carried out. The real API answers a repeated
accept (or reject) of such a call with 404, so a ``CallGone`` that follows an attempt
whose answer was lost carries ``after_lost_answer`` and callers decide what it means
(``workers.actions``). Attempts that never reached the server (connection refused or
timed out while connecting, no free pooled connection) do not count.

The API key goes only into the ``Authorization`` header. It is not part of any repr,
log line or error message; server messages are scrubbed of it before use.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import SecretStr

from shared.errors import (
    CallGone,
    ConfigError,
    DeadlineExceeded,
    RetryableError,
    SwitchboardError,
)
from shared.realtime_answers import classify, transport_error
from shared.retry import Backoff, next_delay_s
from shared.settings import Settings

logger = logging.getLogger(__name__)

Observer = Callable[[str, str, float], None]
"""Called after each attempt with (endpoint, status or error class, seconds taken)."""


@dataclass(frozen=True)
class ClientConfig:
    """Timeouts and retry behaviour of the REST client, with named defaults."""

    deadline_s: float = 8.0
    """Overall time for one operation, retries included; a ringing call cannot wait long."""
    attempt_timeout_s: float = 3.0
    connect_timeout_s: float = 1.0
    backoff: Backoff = field(default_factory=Backoff)
    max_connections: int = 100
    max_keepalive_connections: int = 20


def _path(call_id: str, action: str) -> str:
    if not call_id:
        raise ValueError("call id must not be empty")
    # Call ids are opaque: quote everything so no id can reach another path.
    return f"realtime/calls/{quote(call_id, safe='')}/{action}"


_NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
"""Transport errors raised before a request can have reached the server."""


class _Attempts:
    """The retry bookkeeping of one operation: attempt count, deadline, next pause."""

    def __init__(self, config: ClientConfig, clock: Callable[[], float]) -> None:
        self._config = config
        self._clock = clock
        self._deadline = clock() + config.deadline_s
        self.count = 0
        self.lost_answer = False
        """Whether an attempt may have been carried out without its answer reaching us."""

    def note(self, result: httpx.Response | Exception) -> None:
        """Remember an attempt that may have reached the API but brought no answer."""
        if isinstance(result, httpx.TransportError) and not isinstance(result, _NEVER_SENT):
            self.lost_answer = True

    def timeout(self) -> httpx.Timeout:
        self.count += 1
        left_s = max(0.001, self._deadline - self._clock())
        attempt_s = min(self._config.attempt_timeout_s, left_s)
        return httpx.Timeout(attempt_s, connect=min(self._config.connect_timeout_s, attempt_s))

    def pause_after(self, err: SwitchboardError, rand: float) -> float:
        """Seconds to wait before trying again; raises when ``err`` ends the operation."""
        if isinstance(err, CallGone) and self.lost_answer:
            raise CallGone(
                f"{err} (after an attempt whose answer was lost)",
                endpoint=err.endpoint,
                status_code=err.status_code,
                api_code=err.api_code,
                after_lost_answer=True,
            ) from err
        if not isinstance(err, RetryableError):
            raise err
        left_s = self._deadline - self._clock()
        delay_s = next_delay_s(self.count, rand, self._config.backoff, left_s, err.retry_after_s)
        if delay_s is None:
            raise DeadlineExceeded(
                f"gave up after {self.count} attempts within {self._config.deadline_s}s: {err}",
                last_error=err,
            ) from err
        logger.warning("%s; retrying in %.3fs (attempt %d)", err, delay_s, self.count)
        return delay_s


class _Base:
    def __init__(
        self,
        base_url: str,
        api_key: SecretStr | str | None,
        config: ClientConfig,
        clock: Callable[[], float],
        rand: Callable[[], float],
        observe: Observer | None,
    ) -> None:
        key = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
        if not key:
            raise ConfigError("OPENAI_API_KEY is not set")
        self._secret = key
        self._base_url = base_url.rstrip("/") + "/"
        self._config = config
        self._clock = clock
        self._rand = rand
        self._observe = observe
        self._headers = {"Authorization": f"Bearer {key}", "User-Agent": "switchboard"}
        self._limits = httpx.Limits(
            max_connections=config.max_connections,
            max_keepalive_connections=config.max_keepalive_connections,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self._base_url!r})"

    def _outcome(
        self, endpoint: str, call_id: str, started_s: float, result: httpx.Response | Exception
    ) -> SwitchboardError | None:
        if isinstance(result, httpx.Response):
            err = classify(endpoint, call_id, result, time.time(), self._secret)
            label = str(result.status_code)
        else:
            assert isinstance(result, httpx.TransportError)
            err, label = transport_error(endpoint, call_id, result), type(result).__name__
        if self._observe is not None:
            self._observe(endpoint, label, self._clock() - started_s)
        return err


class RealtimeClient(_Base):
    """Synchronous call-control client with pooled connections, retries and a deadline."""

    def __init__(
        self,
        base_url: str,
        api_key: SecretStr | str | None,
        *,
        config: ClientConfig | None = None,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rand: Callable[[], float] = random.random,
        observe: Observer | None = None,
    ) -> None:
        super().__init__(base_url, api_key, config or ClientConfig(), clock, rand, observe)
        self._sleep = sleep
        self._http = httpx.Client(
            base_url=self._base_url, headers=self._headers, limits=self._limits, transport=transport
        )

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> RealtimeClient:
        """A client for the API named by ``settings`` (base URL and key)."""
        return cls(settings.openai_base_url, settings.openai_api_key, **options)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RealtimeClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def accept(self, call_id: str, body: Mapping[str, Any]) -> None:
        """Answer the call with the session configuration ``body``."""
        self._post("accept", call_id, dict(body))

    def reject(self, call_id: str, status_code: int = 603) -> None:
        """Refuse the call with a SIP status code."""
        self._post("reject", call_id, {"status_code": status_code})

    def refer(self, call_id: str, target_uri: str) -> None:
        """Blind-transfer the call to a ``sip:`` or ``tel:`` URI (SIP REFER)."""
        self._post("refer", call_id, {"target_uri": target_uri})

    def hangup(self, call_id: str) -> None:
        """End the call."""
        self._post("hangup", call_id, None)

    def _post(self, endpoint: str, call_id: str, body: dict[str, Any] | None) -> None:
        path = _path(call_id, endpoint)
        attempts = _Attempts(self._config, self._clock)
        while True:
            timeout = attempts.timeout()
            started_s = self._clock()
            result: httpx.Response | Exception
            try:
                result = self._http.post(path, json=body, timeout=timeout)
            except httpx.TransportError as exc:
                result = exc
            attempts.note(result)
            err = self._outcome(endpoint, call_id, started_s, result)
            if err is None:
                return
            self._sleep(attempts.pause_after(err, self._rand()))


class AsyncRealtimeClient(_Base):
    """Asynchronous face of ``RealtimeClient`` for asyncio processes."""

    def __init__(
        self,
        base_url: str,
        api_key: SecretStr | str | None,
        *,
        config: ClientConfig | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
        observe: Observer | None = None,
    ) -> None:
        super().__init__(base_url, api_key, config or ClientConfig(), clock, rand, observe)
        self._http = httpx.AsyncClient(
            base_url=self._base_url, headers=self._headers, limits=self._limits, transport=transport
        )

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> AsyncRealtimeClient:
        """A client for the API named by ``settings`` (base URL and key)."""
        return cls(settings.openai_base_url, settings.openai_api_key, **options)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncRealtimeClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def accept(self, call_id: str, body: Mapping[str, Any]) -> None:
        """Answer the call with the session configuration ``body``."""
        await self._post("accept", call_id, dict(body))

    async def reject(self, call_id: str, status_code: int = 603) -> None:
        """Refuse the call with a SIP status code."""
        await self._post("reject", call_id, {"status_code": status_code})

    async def refer(self, call_id: str, target_uri: str) -> None:
        """Blind-transfer the call to a ``sip:`` or ``tel:`` URI (SIP REFER)."""
        await self._post("refer", call_id, {"target_uri": target_uri})

    async def hangup(self, call_id: str) -> None:
        """End the call."""
        await self._post("hangup", call_id, None)

    async def _post(self, endpoint: str, call_id: str, body: dict[str, Any] | None) -> None:
        path = _path(call_id, endpoint)
        attempts = _Attempts(self._config, self._clock)
        while True:
            timeout = attempts.timeout()
            started_s = self._clock()
            result: httpx.Response | Exception
            try:
                result = await self._http.post(path, json=body, timeout=timeout)
            except httpx.TransportError as exc:
                result = exc
            attempts.note(result)
            err = self._outcome(endpoint, call_id, started_s, result)
            if err is None:
                return
            await asyncio.sleep(attempts.pause_after(err, self._rand()))
