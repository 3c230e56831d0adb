"""Post-call work: a real Celery worker on the ``post_call`` queue writes the summary and
delivers a signed ``call.completed`` webhook to a real uvicorn receiver, retrying a 500.

The broker's database is not flushed between these tests (that would drop kombu's queue
bindings under the running worker); every test uses its own call ids.
"""

from __future__ import annotations

import base64
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import httpx
import openai
import orjson
import pytest
import redis
import redis.asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from shared import keys
from shared.accounting import Accounting
from shared.errors import ConfigError
from shared.models import CallRecord, CallState, EndReason
from shared.policy_file import PolicySource
from shared.pricing import cost_of, default_price_table
from shared.queues import POST_CALL_QUEUE
from shared.settings import Settings
from shared.store import CallStore
from tests.support.emulator import serve_in_thread
from tests.support.procs import Child, spawn, switchboard_argv, wait_until
from workers.post_call import (
    PostCallContext,
    PostCallOutcome,
    WebhookFailed,
    WebhookTarget,
    enqueue_post_call,
    post_call,
)

SECRET = "whsec_" + base64.b64encode(b"post-call test signing key").decode()
USAGE = {
    "input_tokens": 1500,
    "output_tokens": 700,
    "input_token_details": {
        "text_tokens": 900,
        "audio_tokens": 600,
        "cached_tokens": 800,
        "cached_tokens_details": {"text_tokens": 800},
    },
    "output_token_details": {"text_tokens": 100, "audio_tokens": 600},
}


class Receiver:
    """Records every delivery; answers 500 the first ``failures[call_id]`` times."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.deliveries: list[tuple[dict[str, str], bytes]] = []
        self.failures: dict[str, int] = {}

    async def hook(self, request: Request) -> Response:
        body = await request.body()
        call_id = orjson.loads(body)["data"]["call_id"]
        with self.lock:
            self.deliveries.append((dict(request.headers), body))
            if self.failures.get(call_id, 0) > 0:
                self.failures[call_id] -= 1
                return Response("try later", status_code=500)
        return Response(status_code=204)

    def for_call(self, call_id: str) -> list[tuple[dict[str, str], bytes]]:
        with self.lock:
            return [d for d in self.deliveries if orjson.loads(d[1])["data"]["call_id"] == call_id]


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[Receiver, str]]:
    recording = Receiver()
    app = Starlette(routes=[Route("/hooks", recording.hook, methods=["POST"])])
    with serve_in_thread(app) as url:
        yield recording, f"{url}/hooks"


@pytest.fixture(scope="module")
def worker(
    redis_server: str, receiver: tuple[Receiver, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Child]:
    env = {
        "SWITCHBOARD_REDIS_URL": redis_server,
        "SWITCHBOARD_POST_CALL_WEBHOOK_URL": receiver[1],
        "SWITCHBOARD_POST_CALL_WEBHOOK_SECRET": SECRET,
    }
    argv = switchboard_argv("worker", "--queues", POST_CALL_QUEUE, "--concurrency", "1")
    child = spawn("post-call-worker", argv, tmp_path_factory.mktemp("post-call"), env=env)
    try:
        wait_until(lambda: " ready." in child.tail(200), 60.0, "celery worker ready", child)
        yield child
    finally:
        child.stop()


@pytest.fixture(scope="module")
def rdb(redis_server: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server, decode_responses=True)
    try:
        yield client
    finally:
        client.close()


def ended_call(rdb: redis.Redis, state: CallState = CallState.ENDED) -> str:
    """A call with a transcript and one priced response, ended by the caller."""
    call_id = f"rtc_{uuid.uuid4().hex}"
    store = CallStore(rdb)
    record = CallRecord.model_validate(
        {"id": call_id, "webhook_id": f"wh_{call_id}", "from": "+14155550100"}
        | {"to": "+18005550100", "created_at": 1000.0, "profile": "support"}
    )
    store.create_incoming(record)
    store.transition(call_id, CallState.INCOMING, CallState.ACCEPTING, {"accepted_at": 1001.0})
    store.transition(call_id, CallState.ACCEPTING, CallState.ACTIVE)
    for role, text, at in [("agent", "Acme support, hello.", 1002.0), ("caller", "Bye.", 1005.5)]:
        rdb.xadd(keys.call_transcript(call_id), {"role": role, "text": text, "at": at})
    Accounting(rdb).accrue(call_id, "support", "gpt-realtime", "resp_1", USAGE)
    if state is CallState.ENDED:
        fields = {"ended_at": 1031.0, "end_reason": EndReason.CALLER_HANGUP}
        store.transition(call_id, CallState.ACTIVE, CallState.ENDED, fields)
    return call_id


def verify(headers: dict[str, str], body: bytes) -> None:
    client = openai.OpenAI(api_key="unused", webhook_secret=SECRET)
    try:
        client.webhooks.verify_signature(body, headers, tolerance=600)
    finally:
        client.close()


@pytest.fixture
async def aredis(redis_server: str) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(redis_server)
    try:
        yield client
    finally:
        await client.aclose()


async def test_the_worker_writes_the_summary_and_retries_the_webhook_until_2xx(
    worker: Child, receiver: tuple[Receiver, str], rdb: redis.Redis, aredis: redis.asyncio.Redis
) -> None:
    recording, _ = receiver
    call_id = ended_call(rdb)
    recording.failures[call_id] = 1
    await enqueue_post_call(aredis, call_id)

    summary_key = keys.call_summary(call_id)
    wait_until(
        lambda: rdb.hget(summary_key, "webhook_status") == "delivered", 30.0, "delivery", worker
    )
    deliveries = recording.for_call(call_id)
    assert len(deliveries) == 2, "one 500, then one success"
    (first_headers, first_body), (headers, body) = deliveries
    assert first_headers["webhook-id"] == headers["webhook-id"]
    assert first_body == body
    for h, b in deliveries:
        verify(h, b)
    with pytest.raises(openai.InvalidWebhookSignatureError):
        verify(headers, body.replace(b"Bye.", b"Hi!!"))

    event = orjson.loads(body)
    assert event["type"] == "call.completed"
    data = event["data"]
    assert data == orjson.loads(rdb.hget(summary_key, "summary"))
    expected = cost_of(USAGE, "gpt-realtime", default_price_table())
    assert Decimal(data["cost_usd"]) == expected.total_usd
    assert data["usage"]["input_audio_tokens"] == 600
    assert data["end_reason"] == "caller_hangup"
    assert data["duration_s"] == 30.0
    assert data["turns"] == {"caller": 1, "agent": 1, "total": 2}
    assert [line["text"] for line in data["transcript"]] == ["Acme support, hello.", "Bye."]
    assert (data["from"], data["to"], data["profile"]) == (
        "+14155550100",
        "+18005550100",
        "support",
    )
    assert rdb.hget(summary_key, "webhook_attempts") == "2"


@pytest.fixture
def context(rdb: redis.Redis, receiver: tuple[Receiver, str]) -> Iterator[PostCallContext]:
    ctx = PostCallContext(
        redis=rdb,
        policies=PolicySource(None),
        http=httpx.Client(timeout=5),
        env_target=WebhookTarget(receiver[1], SECRET),
    )
    try:
        yield ctx
    finally:
        ctx.http.close()


def test_running_again_after_delivery_sends_nothing(
    context: PostCallContext, receiver: tuple[Receiver, str], rdb: redis.Redis
) -> None:
    call_id = ended_call(rdb)
    assert post_call(context, call_id) is PostCallOutcome.DELIVERED
    assert post_call(context, call_id) is PostCallOutcome.ALREADY_DELIVERED
    assert len(receiver[0].for_call(call_id)) == 1


def test_failures_retry_until_the_last_attempt_gives_up(
    context: PostCallContext, receiver: tuple[Receiver, str], rdb: redis.Redis
) -> None:
    call_id = ended_call(rdb)
    receiver[0].failures[call_id] = 5
    with pytest.raises(WebhookFailed, match="HTTP 500"):
        post_call(context, call_id)
    assert post_call(context, call_id, final_attempt=True) is PostCallOutcome.GAVE_UP
    assert rdb.hget(keys.call_summary(call_id), "webhook_status") == "failed"
    ids = {h["webhook-id"] for h, _ in receiver[0].for_call(call_id)}
    assert len(ids) == 1


def test_live_and_unknown_calls_get_no_summary(context: PostCallContext, rdb: redis.Redis) -> None:
    live = ended_call(rdb, CallState.ACTIVE)
    assert post_call(context, live) is PostCallOutcome.NOT_ENDED
    assert post_call(context, "rtc_never_seen") is PostCallOutcome.MISSING
    assert not rdb.exists(keys.call_summary(live), keys.call_summary("rtc_never_seen"))


def test_without_a_webhook_only_the_summary_is_written(rdb: redis.Redis) -> None:
    ctx = PostCallContext(redis=rdb, policies=PolicySource(None), http=httpx.Client())
    try:
        call_id = ended_call(rdb)
        assert post_call(ctx, call_id) is PostCallOutcome.SUMMARY_ONLY
        summary: dict[str, Any] = orjson.loads(rdb.hget(keys.call_summary(call_id), "summary"))
        assert summary["call_id"] == call_id
    finally:
        ctx.http.close()


def test_a_webhook_url_without_a_usable_secret_is_a_config_error(redis_server: str) -> None:
    url = "http://127.0.0.1:9/hooks"
    with pytest.raises(ConfigError, match="SECRET is not set"):
        PostCallContext.from_settings(Settings(redis_url=redis_server, post_call_webhook_url=url))
    with pytest.raises(ConfigError, match="base64"):
        PostCallContext.from_settings(
            Settings(
                redis_url=redis_server,
                post_call_webhook_url=url,
                post_call_webhook_secret="whsec_***",  # type: ignore[arg-type]
            )
        )
