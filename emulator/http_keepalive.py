"""A minimal HTTP/1.1 client for plain-``http`` webhooks: keep-alive connections, raw bytes.

``KeepAlivePool.post`` writes one request the caller formatted in full (request line,
headers, body) on an idle connection to the URL's origin, or a new one, and returns the
answer's status code; the body is read (``content-length``, chunked, or up to the
close) and dropped. Responses are parsed by ``httptools``; each connection is an
``asyncio.Protocol``, so an answer costs one parser call and one future, not a stack
of streams. A connection returns to the pool after an answer that lets it stay open
and is dropped as soon as the server closes it (or times out, or errs).

Failures raise a subclass of ``HttpError`` named as httpx names the same failure
(``ConnectError``, ``ConnectTimeout``, ``ReadTimeout``, ``ReadError``,
``RemoteProtocolError``), so callers record the same error names on either path. A
request on a reused connection that the server closed before answering any of it is
sent once more on a new connection (the server closed an idle connection; a request
carrying an idempotency key like ``webhook-id`` is safe to replay), as Go's HTTP client
does.

The pool does not bound concurrency: callers do (the webhook sender's workers), and
at most ``max_idle`` connections per origin wait for reuse.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools


class HttpError(Exception):
    """A request that got no complete answer; the subclass says why."""


class ConnectError(HttpError):
    """The connection could not be made (refused, unreachable, name not resolved)."""


class ConnectTimeout(HttpError):
    """The connection was not made within the timeout."""


class ReadTimeout(HttpError):
    """The answer did not arrive within the timeout."""


class ReadError(HttpError):
    """The connection failed (reset) before the answer was complete."""


class RemoteProtocolError(HttpError):
    """The server closed the connection early or answered something that is not HTTP/1.1."""


class _ClosedBeforeAnswer(HttpError):
    """The server closed the connection before sending a byte of the answer."""

    def __init__(self, reset: bool) -> None:
        super().__init__("Server disconnected without sending a response.")
        self.reset = reset

    def public(self) -> HttpError:
        error = ReadError if self.reset else RemoteProtocolError
        return error(str(self))


@dataclass(frozen=True)
class Origin:
    """Where a plain ``http`` URL points: what to connect to and what the request names."""

    host: str
    """Host to connect to (an IPv6 address without brackets)."""
    port: int
    authority: str
    """The ``host`` header value (host, and port when not 80)."""
    target: str
    """The request target: path and query."""


def http_origin(url: str) -> Origin | None:
    """The origin of a plain ``http://`` URL; None for https, malformed or non-ASCII URLs."""
    try:
        parts = urlsplit(url)
        port = parts.port or 80
    except ValueError:
        return None
    host = parts.hostname
    if parts.scheme != "http" or not host:
        return None
    authority = f"[{host}]" if ":" in host else host
    if port != 80:
        authority = f"{authority}:{port}"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if not (authority + target).isascii() or any(char <= " " for char in target):
        return None  # needs IDNA or percent-encoding: left to httpx
    return Origin(host=host, port=port, authority=authority, target=target)


class _Connection(asyncio.Protocol):
    """One client connection: at most one request in flight, its answer parsed as it comes."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.open = False
        self.reusable = True
        self.answered = 0
        """Answers completed on this connection (a reused connection has at least one)."""
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._parser = httptools.HttpResponseParser(self)
        self._answer: asyncio.Future[int] | None = None
        self._received = False
        self._headers_done = False
        self._framed = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.open = True

    def data_received(self, data: bytes) -> None:
        self._received = True
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._fail(RemoteProtocolError(f"not an HTTP/1.1 answer: {exc!r}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        self.reusable = False
        if not self.lost.done():
            self.lost.set_result(None)
        if self._answer is None or self._answer.done():
            return
        if self._headers_done and not self._framed:
            # No content-length and not chunked: the body ran up to the close.
            self._answer.set_result(self._parser.get_status_code())
        elif not self._received:
            self._answer.set_exception(_ClosedBeforeAnswer(reset=exc is not None))
        elif exc is not None:
            self._answer.set_exception(ReadError(f"connection failed mid-answer: {exc!r}"))
        else:
            self._answer.set_exception(
                RemoteProtocolError("peer closed connection without sending complete message")
            )

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._headers_done = False
        self._framed = False

    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered == b"content-length" or lowered == b"transfer-encoding":
            self._framed = True

    def on_headers_complete(self) -> None:
        self._headers_done = True

    def on_message_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:
            return  # informational (100 Continue): the real answer follows
        answer = self._answer
        self._answer = None
        if not self._parser.should_keep_alive():
            self.reusable = False
        if answer is None or answer.done():
            self.reusable = False  # an answer nobody asked for: do not trust the connection
            self.close()
            return
        self.answered += 1
        answer.set_result(status)

    # the pool's side

    def send(self, request: bytes, answer: asyncio.Future[int]) -> None:
        assert self.transport is not None
        self._answer = answer
        self._received = False
        self._headers_done = False
        self._framed = False
        self.transport.write(request)

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None and self.open:
            self.transport.close()

    def _fail(self, error: HttpError) -> None:
        answer, self._answer = self._answer, None
        if answer is not None and not answer.done():
            answer.set_exception(error)


def _expire(answer: asyncio.Future[int], timeout_s: float) -> None:
    if not answer.done():
        answer.set_exception(ReadTimeout(f"no answer within {timeout_s:g} s"))


class KeepAlivePool:
    """Keep-alive HTTP/1.1 connections per origin; ``post`` sends pre-formatted requests."""

    def __init__(self, max_idle: int) -> None:
        self._max_idle = max_idle
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._all: set[_Connection] = set()

    def connections(self) -> int:
        """Connections open now (idle or in use)."""
        return sum(1 for conn in self._all if conn.open)

    async def post(self, origin: Origin, request: bytes, timeout_s: float) -> int:
        """Send ``request`` (complete bytes) to ``origin``; the answer's status code.

        ``timeout_s`` bounds the connect and, separately, the wait for the whole answer.
        """
        idle = self._idle.get((origin.host, origin.port))
        while idle:
            conn = idle.pop()
            if not conn.open:
                continue
            try:
                return await self._exchange(origin, conn, request, timeout_s)
            except _ClosedBeforeAnswer:
                break  # closed while idle: the request was not read; replay it once
        conn = await self._connect(origin, timeout_s)
        try:
            return await self._exchange(origin, conn, request, timeout_s)
        except _ClosedBeforeAnswer as exc:
            raise exc.public() from None

    async def aclose(self) -> None:
        """Close every connection and wait (briefly) until they are closed."""
        conns = list(self._all)
        self._idle.clear()
        self._all.clear()
        for conn in conns:
            conn.close()
        pending = [conn.lost for conn in conns if conn.transport is not None]
        if pending:
            await asyncio.wait(pending, timeout=1.0)

    async def _connect(self, origin: Origin, timeout_s: float) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout_s):
                _, conn = await loop.create_connection(_Connection, origin.host, origin.port)
        except TimeoutError:
            raise ConnectTimeout(f"no connection within {timeout_s:g} s") from None
        except OSError as exc:
            raise ConnectError(str(exc) or type(exc).__name__) from exc
        self._all.add(conn)
        conn.lost.add_done_callback(lambda _: self._all.discard(conn))
        return conn

    async def _exchange(
        self, origin: Origin, conn: _Connection, request: bytes, timeout_s: float
    ) -> int:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[int] = loop.create_future()
        conn.send(request, answer)
        timer = loop.call_later(timeout_s, _expire, answer, timeout_s)
        try:
            status = await answer
        except BaseException:  # timeout, failure or cancellation: the connection is spent
            conn.close()
            raise
        finally:
            timer.cancel()
        if conn.reusable and conn.open:
            idle = self._idle.setdefault((origin.host, origin.port), [])
            if len(idle) < self._max_idle:
                idle.append(conn)
                return status
        conn.close()
        return status
