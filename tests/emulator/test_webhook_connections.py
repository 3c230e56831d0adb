"""The keep-alive HTTP/1.1 client behind plain-http webhooks, against a scripted raw server.

Each test scripts, request by request, what a bare asyncio server answers (bytes, in
pieces, late, or not at all) and when it closes the connection, then checks what the
client returns and how many connections it used; the last tests run the webhook sender
itself through a timeout and a refused connection.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
import openai
import pytest

from emulator.config import EmulatorConfig
from emulator.context import EmulatorContext
from emulator.http_keepalive import (
    ConnectError,
    KeepAlivePool,
    Origin,
    ReadTimeout,
    RemoteProtocolError,
    http_origin,
)
from emulator.state import EmulatedCall
from emulator.webhooks_out import WebhookSender

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
SECRET = EmulatorConfig().webhook_secret


@dataclass
class Reply:
    """What the server does with one request: write ``chunks``, then maybe close."""

    chunks: list[bytes] = field(default_factory=lambda: [OK])
    delay_s: float = 0.0
    """Wait before the first chunk."""
    pause_s: float = 0.0
    """Wait between chunks."""
    close: bool = False


@dataclass
class Seen:
    """One request as the server read it, and the connection (numbered from 0) it came on."""

    connection: int
    head: bytes
    body: bytes

    def headers(self) -> dict[str, str]:
        lines = self.head.decode().split("\r\n")[1:]
        pairs = (line.split(": ", 1) for line in lines if line)
        return {name.lower(): value for name, value in pairs}


class ScriptedServer:
    """A bare HTTP/1.1 server answering each request (numbered from 0) as ``script`` says."""

    def __init__(self, script: Callable[[int], Reply]) -> None:
        self.script = script
        self.requests: list[Seen] = []
        self.connections = 0
        self.closed_by_client = 0
        self._stopping = asyncio.Event()
        self._handlers: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers[task] = writer
        number = self.connections
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    if not self._stopping.is_set():
                        self.closed_by_client += 1
                    return
                match = re.search(rb"content-length: (\d+)", head, re.IGNORECASE)
                body = await reader.readexactly(int(match.group(1)) if match else 0)
                reply = self.script(len(self.requests))
                self.requests.append(Seen(number, head, body))
                if await self._stopped_within(reply.delay_s):
                    return
                for n, chunk in enumerate(reply.chunks):
                    if n:
                        await asyncio.sleep(reply.pause_s)
                    writer.write(chunk)
                    await writer.drain()
                if reply.close:
                    return
        except ConnectionError:
            return
        finally:
            writer.close()
            del self._handlers[task]

    async def _stopped_within(self, delay_s: float) -> bool:
        try:
            async with asyncio.timeout(delay_s):
                await self._stopping.wait()
        except TimeoutError:
            return False
        return True

    async def wait_closed_by_client(self, count: int) -> None:
        async with asyncio.timeout(2.0):
            while self.closed_by_client < count:
                await asyncio.sleep(0.01)

    async def stop(self) -> None:
        """Close every connection the client left open; their handlers end."""
        self._stopping.set()
        for writer in self._handlers.values():
            writer.close()
        async with asyncio.timeout(2.0):
            await asyncio.gather(*self._handlers)


@asynccontextmanager
async def scripted_server(
    script: Callable[[int], Reply], sock: socket.socket | None = None
) -> AsyncIterator[tuple[ScriptedServer, str]]:
    """A ``ScriptedServer`` on a free loopback port (or ``sock``); it and its webhook URL."""
    peer = ScriptedServer(script)
    if sock is None:
        server = await asyncio.start_server(peer.handle, "127.0.0.1", 0)
    else:
        server = await asyncio.start_server(peer.handle, sock=sock)
    port = server.sockets[0].getsockname()[1]
    try:
        yield peer, f"http://127.0.0.1:{port}/hooks?source=test"
    finally:
        server.close()
        await peer.stop()
        await server.wait_closed()


def every(reply: Reply) -> Callable[[int], Reply]:
    return lambda _: reply


def request_for(origin: Origin, body: bytes = b'{"n":1}') -> bytes:
    head = f"POST {origin.target} HTTP/1.1\r\nhost: {origin.authority}\r\n"
    return head.encode() + b"content-length: %d\r\n\r\n%s" % (len(body), body)


async def post_many(pool: KeepAlivePool, url: str, count: int, gap_s: float = 0.0) -> list[int]:
    origin = http_origin(url)
    assert origin is not None
    statuses = []
    for _ in range(count):
        statuses.append(await pool.post(origin, request_for(origin), timeout_s=2.0))
        await asyncio.sleep(gap_s)
    return statuses


def test_origin_of_urls() -> None:
    assert http_origin("http://127.0.0.1:8080/a/b?x=1") == Origin(
        "127.0.0.1", 8080, "127.0.0.1:8080", "/a/b?x=1"
    )
    assert http_origin("http://example.com") == Origin("example.com", 80, "example.com", "/")
    assert http_origin("http://[::1]:9000/h") == Origin("::1", 9000, "[::1]:9000", "/h")
    assert http_origin("https://example.com/h") is None
    assert http_origin("http://example.com:notaport/h") is None
    assert http_origin("http://bücher.example/h") is None


async def test_one_connection_carries_every_request() -> None:
    async with scripted_server(every(Reply())) as (server, url):
        pool = KeepAlivePool(max_idle=2)
        assert await post_many(pool, url, 5) == [200] * 5
        await pool.aclose()

    assert server.connections == 1
    assert [seen.connection for seen in server.requests] == [0] * 5
    assert server.requests[0].head.startswith(b"POST /hooks?source=test HTTP/1.1\r\n")
    assert server.requests[0].body == b'{"n":1}'


async def test_connection_close_answer_opens_a_new_connection() -> None:
    closing = b"HTTP/1.1 202 Accepted\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"
    async with scripted_server(every(Reply([closing], close=True))) as (server, url):
        pool = KeepAlivePool(max_idle=2)
        assert await post_many(pool, url, 3) == [202] * 3
        await pool.aclose()

    assert [seen.connection for seen in server.requests] == [0, 1, 2]


async def test_server_closing_an_idle_connection_is_not_an_error() -> None:
    # The server answers as if it kept the connection, then closes it while idle.
    async with scripted_server(every(Reply(close=True))) as (server, url):
        pool = KeepAlivePool(max_idle=2)
        assert await post_many(pool, url, 3, gap_s=0.05) == [200] * 3
        assert pool.connections() == 0
        await pool.aclose()

    assert [seen.connection for seen in server.requests] == [0, 1, 2]


async def test_reused_connection_closed_unanswered_is_replayed_once() -> None:
    # The second request meets a close on the reused connection, as when the server's
    # idle timeout fires as the request goes out: sent again on a new connection.
    replies = {1: Reply(chunks=[], close=True)}
    async with scripted_server(lambda n: replies.get(n, Reply())) as (server, url):
        pool = KeepAlivePool(max_idle=2)
        assert await post_many(pool, url, 3) == [200] * 3
        await pool.aclose()

    assert [seen.connection for seen in server.requests] == [0, 0, 1, 1]
    assert server.requests[1].body == server.requests[2].body


async def test_new_connection_closed_unanswered_is_an_error() -> None:
    async with scripted_server(every(Reply(chunks=[], close=True))) as (server, url):
        pool = KeepAlivePool(max_idle=2)
        with pytest.raises(RemoteProtocolError):
            await post_many(pool, url, 1)
        await pool.aclose()

    assert len(server.requests) == 1


async def test_chunked_answer_in_pieces_keeps_the_connection() -> None:
    chunked = [
        b"HTTP/1.1 201 Created\r\ntransfer-enc",
        b"oding: chunked\r\ncontent-type: text/plain\r\n\r\n5\r\nhel",
        b"lo\r\n6\r\n world\r\n",
        b"0\r\n\r\n",
    ]
    async with scripted_server(every(Reply(chunked, pause_s=0.01))) as (server, url):
        pool = KeepAlivePool(max_idle=2)
        assert await post_many(pool, url, 3) == [201] * 3
        await pool.aclose()
        await server.wait_closed_by_client(1)

    assert server.connections == 1


async def test_answer_with_a_body_and_an_interim_continue() -> None:
    answers = [
        b"HTTP/1.1 100 Continue\r\n\r\n",
        b"HTTP/1.1 409 Conflict\r\ncontent-length: 11\r\n\r\nalready",
        b" got",
    ]
    async with scripted_server(every(Reply(answers, pause_s=0.01))) as (server, url):
        pool = KeepAlivePool(max_idle=2)
        assert await post_many(pool, url, 2) == [409, 409]
        await pool.aclose()

    assert server.connections == 1


async def test_answer_read_up_to_the_close() -> None:
    until_close = [b"HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n\r\nthe body runs", b" on"]
    async with scripted_server(every(Reply(until_close, close=True))) as (server, url):
        pool = KeepAlivePool(max_idle=2)
        assert await post_many(pool, url, 2) == [200, 200]
        await pool.aclose()

    assert server.connections == 2


async def test_truncated_or_garbled_answers_are_protocol_errors() -> None:
    replies = {
        0: Reply([b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"], close=True),
        1: Reply([b"SMTP ready\r\n\r\n"]),
    }
    async with scripted_server(lambda n: replies.get(n, Reply())) as (server, url):
        pool = KeepAlivePool(max_idle=2)
        for _ in replies:
            with pytest.raises(RemoteProtocolError):
                await post_many(pool, url, 1)
        assert await post_many(pool, url, 1) == [200]
        await pool.aclose()

    assert [seen.connection for seen in server.requests] == [0, 1, 2]


async def test_slow_answer_times_out_and_the_connection_is_dropped() -> None:
    replies = {0: Reply(delay_s=1.0)}
    async with scripted_server(lambda n: replies.get(n, Reply())) as (server, url):
        origin = http_origin(url)
        assert origin is not None
        pool = KeepAlivePool(max_idle=2)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(ReadTimeout):
            await pool.post(origin, request_for(origin), timeout_s=0.2)
        assert 0.2 <= loop.time() - started < 0.9
        assert await pool.post(origin, request_for(origin), timeout_s=2.0) == 200
        await pool.aclose()

    assert [seen.connection for seen in server.requests] == [0, 1]


async def test_refused_connection_is_a_connect_error() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        origin = http_origin(f"http://127.0.0.1:{unused.getsockname()[1]}/")
        assert origin is not None
        pool = KeepAlivePool(max_idle=2)
        with pytest.raises(ConnectError):
            await pool.post(origin, request_for(origin), timeout_s=1.0)
    assert pool.connections() == 0


async def test_aclose_closes_idle_connections() -> None:
    async with scripted_server(every(Reply())) as (server, url):
        pool = KeepAlivePool(max_idle=2)
        await asyncio.gather(post_many(pool, url, 2), post_many(pool, url, 2))
        assert pool.connections() == 2
        await pool.aclose()
        assert pool.connections() == 0
        await server.wait_closed_by_client(2)


# The webhook sender on this client: timeouts and refusals are recorded, then retried.


def new_call() -> EmulatedCall:
    return EmulatedCall(
        call_id="rtc_test", from_uri="sip:a@b", to_uri="sip:c@d", scenario="s", sip_headers=[]
    )


@asynccontextmanager
async def running_sender(url: str) -> AsyncIterator[WebhookSender]:
    config = EmulatorConfig(
        webhook_url=url, webhook_retry_schedule_s=[0.1, 0.1], webhook_timeout_s=0.3
    )
    async with httpx.AsyncClient() as client:
        sender = WebhookSender(EmulatorContext(config=config), client)
        sender.start()
        try:
            yield sender
        finally:
            await sender.stop()


async def wait_for_deliveries(call: EmulatedCall, count: int) -> None:
    async with asyncio.timeout(5.0):
        while len(call.webhook_deliveries) < count:
            await asyncio.sleep(0.01)


async def test_sender_retries_after_a_timeout_with_a_fresh_signature() -> None:
    replies = {0: Reply(delay_s=1.0)}
    async with scripted_server(lambda n: replies.get(n, Reply())) as (server, url):
        call = new_call()
        async with running_sender(url) as sender:
            sender.send_incoming(call)
            await wait_for_deliveries(call, 2)
            # The worker decides on a retry as it records an attempt: none is scheduled.
            assert sender.pending() == 0

    deliveries = call.webhook_deliveries
    assert [(d["attempt"], d["status"], d["error"]) for d in deliveries] == [
        (1, None, "ReadTimeout"),
        (2, 200, None),
    ]
    assert deliveries[0]["duration_ms"] >= 300
    first, second = server.requests
    assert first.connection != second.connection
    assert first.body == second.body
    assert first.headers()["webhook-id"] == second.headers()["webhook-id"]
    client = openai.OpenAI(api_key="k", webhook_secret=SECRET)
    for seen in server.requests:
        assert seen.headers()["content-type"] == "application/json"
        event = client.webhooks.unwrap(seen.body, seen.headers())
        assert event.type == "realtime.call.incoming"
        assert event.data.call_id == "rtc_test"


async def test_sender_records_a_refused_connection_then_delivers() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/hooks"
        call = new_call()
        async with running_sender(url) as sender:
            sender.send_incoming(call)
            await wait_for_deliveries(call, 1)
            async with scripted_server(every(Reply()), sock=listener) as (server, _):
                await wait_for_deliveries(call, 2)

    assert [(d["attempt"], d["status"], d["error"]) for d in call.webhook_deliveries] == [
        (1, None, "ConnectError"),
        (2, 200, None),
    ]
    assert len(server.requests) == 1


async def test_https_webhooks_go_through_the_httpx_client() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(503 if len(seen) == 1 else 204)

    config = EmulatorConfig(
        webhook_url="https://hooks.example.com/openai", webhook_retry_schedule_s=[0.05]
    )
    call = new_call()
    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        sender = WebhookSender(EmulatorContext(config=config), client)
        sender.start()
        try:
            sender.send_incoming(call)
            await wait_for_deliveries(call, 2)
        finally:
            await sender.stop()

    assert [(d["status"], d["error"]) for d in call.webhook_deliveries] == [
        (503, None),
        (204, None),
    ]
    assert [str(request.url) for request in seen] == ["https://hooks.example.com/openai"] * 2
    client_sdk = openai.OpenAI(api_key="k", webhook_secret=SECRET)
    for request in seen:
        event = client_sdk.webhooks.unwrap(request.content, dict(request.headers))
        assert event.type == "realtime.call.incoming"
        assert event.data.call_id == "rtc_test"
