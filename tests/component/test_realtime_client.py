"""The REST client over real sockets against a scripted peer (Starlette on uvicorn).

The peer answers each request with the next scripted reply for its path and records
what it received. Time inside the client is a fake clock that only moves when the
client "sleeps", so backoff and deadlines are checked exactly and quickly.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from shared.errors import (
    CallGone,
    ConfigError,
    DeadlineExceeded,
    RealtimeRejected,
    RealtimeUnavailable,
)
from shared.realtime_client import AsyncRealtimeClient, ClientConfig, RealtimeClient
from shared.retry import Backoff
from tests.support.emulator import serve_in_thread
from tests.support.ports import free_port

API_KEY = "sk-test-very-secret-key-123"


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass
class Peer:
    """What the scripted server received, and what it will answer next."""

    url: str
    script: dict[str, list[Reply]] = field(default_factory=dict)
    received: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def plan(self, path: str, *replies: Reply) -> None:
        with self.lock:
            self.script[path] = list(replies)

    def paths(self) -> list[str]:
        return [r["path"] for r in self.received]


def scripted_app(peer: list[Peer]) -> Starlette:
    async def handle(request: Request) -> Response:
        me = peer[0]
        raw = await request.body()
        with me.lock:
            me.received.append(
                {
                    "path": request.url.path,
                    "raw_path": request.scope["raw_path"].decode(),
                    "method": request.method,
                    "headers": dict(request.headers),
                    "json": orjson.loads(raw) if raw else None,
                }
            )
            queue = me.script.get(request.url.path, [])
            reply = queue.pop(0) if len(queue) > 1 else (queue[0] if queue else Reply())
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        content = b"" if reply.body is None else orjson.dumps(reply.body)
        return Response(content, reply.status, headers=reply.headers)

    return Starlette(routes=[Route("/{path:path}", handle, methods=["POST"])])


@pytest.fixture(scope="module")
def peer() -> Iterator[Peer]:
    holder: list[Peer] = []
    with serve_in_thread(scripted_app(holder)) as url:
        holder.append(Peer(url=url))
        yield holder[0]


@pytest.fixture
def fresh_peer(peer: Peer) -> Peer:
    with peer.lock:
        peer.script.clear()
        peer.received.clear()
    return peer


class FakeTime:
    """A monotonic clock that advances only when the client sleeps."""

    def __init__(self) -> None:
        self.now_s = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now_s

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now_s += seconds


def client_for(peer: Peer, time: FakeTime, **config: Any) -> RealtimeClient:
    return RealtimeClient(
        f"{peer.url}/v1",
        API_KEY,
        config=ClientConfig(backoff=Backoff(base_s=0.1, max_s=1.0, jitter=0.0), **config),
        clock=time.clock,
        sleep=time.sleep,
        rand=lambda: 0.0,
    )


def error(message: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "code": code}}


ACCEPT = "/v1/realtime/calls/rtc_1/accept"


def test_the_four_verbs_send_the_documented_requests(fresh_peer: Peer) -> None:
    with client_for(fresh_peer, FakeTime()) as client:
        client.accept("rtc_1", {"type": "realtime", "model": "gpt-realtime"})
        client.reject("rtc_1", 486)
        client.refer("rtc_1", "tel:+14155550123")
        client.hangup("rtc_1")
    got = fresh_peer.received
    assert [r["path"] for r in got] == [
        ACCEPT,
        "/v1/realtime/calls/rtc_1/reject",
        "/v1/realtime/calls/rtc_1/refer",
        "/v1/realtime/calls/rtc_1/hangup",
    ]
    assert [r["json"] for r in got] == [
        {"type": "realtime", "model": "gpt-realtime"},
        {"status_code": 486},
        {"target_uri": "tel:+14155550123"},
        None,
    ]
    for request in got:
        assert request["method"] == "POST"
        assert request["headers"]["authorization"] == f"Bearer {API_KEY}"
        assert "openai-beta" not in request["headers"]


def test_call_ids_are_opaque_path_segments(fresh_peer: Peer) -> None:
    with client_for(fresh_peer, FakeTime()) as client:
        client.hangup("rtc_../../admin?x=1")
    # The server sees one encoded segment (it decodes %2F only after routing).
    raw_path = fresh_peer.received[0]["raw_path"]
    assert raw_path == "/v1/realtime/calls/rtc_..%2F..%2Fadmin%3Fx%3D1/hangup"
    with pytest.raises(ValueError, match="call id"), client_for(fresh_peer, FakeTime()) as client:
        client.hangup("")


def test_5xx_and_429_are_retried_with_backoff_honouring_retry_after(fresh_peer: Peer) -> None:
    fresh_peer.plan(
        ACCEPT,
        Reply(503, error("overloaded")),
        Reply(429, error("slow down"), {"retry-after": "0.7"}),
        Reply(500, error("oops")),
        Reply(200),
    )
    time = FakeTime()
    with client_for(fresh_peer, time) as client:
        client.accept("rtc_1", {"type": "realtime"})
    assert fresh_peer.paths() == [ACCEPT] * 4
    # backoff 0.1, then Retry-After 0.7 beats the backoff of 0.2, then 0.4
    assert time.sleeps == pytest.approx([0.1, 0.7, 0.4])


def test_retry_after_ms_wins_over_retry_after(fresh_peer: Peer) -> None:
    headers = {"retry-after": "5", "retry-after-ms": "250"}
    fresh_peer.plan(ACCEPT, Reply(429, error("slow down"), headers), Reply(200))
    time = FakeTime()
    with client_for(fresh_peer, time) as client:
        client.accept("rtc_1", {"type": "realtime"})
    assert time.sleeps == pytest.approx([0.25])


def test_a_persistent_outage_ends_at_the_deadline(fresh_peer: Peer) -> None:
    fresh_peer.plan(ACCEPT, Reply(503, error("down")))
    time = FakeTime()
    with (
        client_for(fresh_peer, time, deadline_s=2.0) as client,
        pytest.raises(DeadlineExceeded) as caught,
    ):
        client.accept("rtc_1", {"type": "realtime"})
    # 0.1 + 0.2 + 0.4 + 0.8 = 1.5 s of pauses; the next (1.0) would cross 2.0 s
    assert time.sleeps == pytest.approx([0.1, 0.2, 0.4, 0.8])
    assert len(fresh_peer.received) == 5
    assert isinstance(caught.value.last_error, RealtimeUnavailable)
    assert "HTTP 503" in str(caught.value)


@pytest.mark.parametrize(
    ("reply", "error_type", "status"),
    [
        (Reply(404, error("Call not found.", "call_not_found")), CallGone, 404),
        (Reply(400, error("Bad session", "invalid_value")), RealtimeRejected, 400),
        (Reply(401, error("Bad key")), RealtimeRejected, 401),
        (Reply(422, {"unexpected": "shape"}), RealtimeRejected, 422),
        # the API says a conflict about the call's state will not clear by waiting
        (
            Reply(
                409, error("already accepted", "call_already_accepted"), {"x-should-retry": "false"}
            ),
            RealtimeRejected,
            409,
        ),
    ],
)
def test_fatal_answers_are_not_retried(
    fresh_peer: Peer, reply: Reply, error_type: type[Exception], status: int
) -> None:
    fresh_peer.plan(ACCEPT, reply)
    time = FakeTime()
    with client_for(fresh_peer, time) as client, pytest.raises(error_type) as caught:
        client.accept("rtc_1", {"type": "realtime"})
    assert len(fresh_peer.received) == 1
    assert time.sleeps == []
    assert isinstance(caught.value, RealtimeRejected)
    assert caught.value.status_code == status


def test_the_api_error_code_is_kept(fresh_peer: Peer) -> None:
    fresh_peer.plan(ACCEPT, Reply(404, error("Call 'rtc_1' not found.", "call_not_found")))
    with client_for(fresh_peer, FakeTime()) as client, pytest.raises(CallGone) as caught:
        client.accept("rtc_1", {"type": "realtime"})
    assert caught.value.api_code == "call_not_found"
    assert str(caught.value) == "accept rtc_1: HTTP 404: Call 'rtc_1' not found."
    assert caught.value.after_lost_answer is False


@pytest.mark.parametrize(
    ("first", "lost"),
    [
        (httpx.ReadTimeout("slow"), True),
        (httpx.RemoteProtocolError("peer closed without an answer"), True),
        (httpx.ConnectError("refused"), False),
        (httpx.ConnectTimeout("no answer to SYN"), False),
        (httpx.Response(503, json=error("busy")), False),
    ],
    ids=["read-timeout", "dropped", "refused", "connect-timeout", "503"],
)
def test_a_404_after_a_lost_answer_says_so(first: Exception | httpx.Response, lost: bool) -> None:
    answers: list[Exception | httpx.Response] = [
        first,
        httpx.Response(404, json=error("Call not found.", "call_not_found")),
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    time = FakeTime()
    client = RealtimeClient(
        "https://api.example.invalid/v1",
        API_KEY,
        config=ClientConfig(backoff=Backoff(base_s=0.1, jitter=0.0)),
        transport=httpx.MockTransport(handler),
        clock=time.clock,
        sleep=time.sleep,
    )
    with client, pytest.raises(CallGone) as caught:
        client.accept("rtc_1", {"type": "realtime"})
    assert answers == []
    assert caught.value.after_lost_answer is lost
    assert caught.value.status_code == 404
    assert ("answer was lost" in str(caught.value)) is lost


def test_a_409_race_without_advice_is_retried(fresh_peer: Peer) -> None:
    fresh_peer.plan(ACCEPT, Reply(409, error("lock timeout")), Reply(408), Reply(200))
    with client_for(fresh_peer, FakeTime()) as client:
        client.accept("rtc_1", {"type": "realtime"})
    assert len(fresh_peer.received) == 3


def test_the_key_never_appears_in_errors_or_reprs(fresh_peer: Peer) -> None:
    fresh_peer.plan(ACCEPT, Reply(401, error(f"Incorrect API key provided: {API_KEY}.")))
    with client_for(fresh_peer, FakeTime()) as client:
        assert API_KEY not in repr(client)
        with pytest.raises(RealtimeRejected) as caught:
            client.accept("rtc_1", {"type": "realtime"})
    assert API_KEY not in str(caught.value)
    assert "[redacted]" in str(caught.value)


def test_a_missing_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        RealtimeClient("http://127.0.0.1:1/v1", None)


def test_connection_errors_are_retried_until_the_deadline() -> None:
    time = FakeTime()
    closed = f"http://127.0.0.1:{free_port()}/v1"
    client = RealtimeClient(
        closed,
        API_KEY,
        config=ClientConfig(deadline_s=1.0, backoff=Backoff(base_s=0.1, max_s=1.0, jitter=0.0)),
        clock=time.clock,
        sleep=time.sleep,
    )
    with client, pytest.raises(DeadlineExceeded) as caught:
        client.hangup("rtc_1")
    assert time.sleeps == pytest.approx([0.1, 0.2, 0.4])
    last = caught.value.last_error
    assert isinstance(last, RealtimeUnavailable)
    assert last.status_code is None
    assert "ConnectError" in str(last)


def test_a_slow_answer_times_out_and_is_retried(fresh_peer: Peer) -> None:
    fresh_peer.plan(ACCEPT, Reply(200, delay_s=1.0), Reply(200))
    seen: list[tuple[str, str]] = []
    client = RealtimeClient(
        f"{fresh_peer.url}/v1",
        API_KEY,
        config=ClientConfig(attempt_timeout_s=0.2, backoff=Backoff(base_s=0.01, jitter=0.0)),
        observe=lambda endpoint, status, _s: seen.append((endpoint, status)),
    )
    with client:
        client.accept("rtc_1", {"type": "realtime"})
    assert seen == [("accept", "ReadTimeout"), ("accept", "200")]


async def test_the_async_client_behaves_the_same(fresh_peer: Peer) -> None:
    fresh_peer.plan(ACCEPT, Reply(503, error("down"), {"retry-after": "0.01"}), Reply(200))
    fresh_peer.plan("/v1/realtime/calls/rtc_2/reject", Reply(404, error("gone")))
    config = ClientConfig(backoff=Backoff(base_s=0.01, jitter=0.0))
    async with AsyncRealtimeClient(f"{fresh_peer.url}/v1", API_KEY, config=config) as client:
        await client.accept("rtc_1", {"type": "realtime"})
        with pytest.raises(CallGone):
            await client.reject("rtc_2", 486)
    assert fresh_peer.paths() == [ACCEPT, ACCEPT, "/v1/realtime/calls/rtc_2/reject"]


def test_transport_seam_needs_no_server() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/realtime/calls/rtc_1/reject"
        return httpx.Response(200)

    with RealtimeClient(
        "https://api.example.invalid/v1", API_KEY, transport=httpx.MockTransport(handler)
    ) as client:
        client.reject("rtc_1")
