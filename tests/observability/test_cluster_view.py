"""The cluster view on a real Redis: live calls, counters, slots, queues, runners.

State is written with the same code that writes it in production (the store, the
accounting, admission control, the runner registry), then read back through
``ClusterView`` and through the ingress app's ``/metrics``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio
from pydantic import SecretStr

from ingress.app import create_app
from ingress.cluster_view import ClusterView
from shared import keys
from shared.accounting import Accounting
from shared.models import CallRecord, CallState
from shared.pricing import default_price_table
from shared.runner_registry import RunnerRegistry
from shared.settings import Settings
from shared.store import CallStore
from tests.observability.exposition import Samples, names, parse, value
from tests.support.ports import free_port
from tests.support.webhook_sender import SECRET
from workers.admission import Admission

TABLE = default_price_table()
ADMIN_TOKEN = "observability-admin-token"


def usage(text_in: int, audio_in: int, cached_text: int, text_out: int, audio_out: int) -> Any:
    return {
        "input_tokens": text_in + audio_in,
        "output_tokens": text_out + audio_out,
        "input_token_details": {
            "text_tokens": text_in,
            "audio_tokens": audio_in,
            "cached_tokens": cached_text,
            "cached_tokens_details": {"text_tokens": cached_text, "audio_tokens": 0},
        },
        "output_token_details": {"text_tokens": text_out, "audio_tokens": audio_out},
    }


def new_call(store: CallStore, call_id: str) -> None:
    record = CallRecord.model_validate(
        {"id": call_id, "webhook_id": f"wh_{call_id}", "from": "+1415", "to": "+1800"}
        | {"created_at": time.time()}
    )
    store.create_incoming(record)


def move(store: CallStore, call_id: str, *states: CallState, profile: str | None = None) -> None:
    current = CallState.INCOMING
    for state in states:
        fields = {"profile": profile} if profile and state is CallState.ACCEPTING else None
        assert store.transition(call_id, current, state, fields).applied
        current = state


@pytest.fixture
async def aclient(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        # The fake queue entries must not reach a Celery worker of a later test.
        await client.flushall()
        await client.aclose()


async def populate(rdb: redis.Redis, aclient: redis.asyncio.Redis) -> Accounting:
    store, books = CallStore(rdb), Accounting(rdb, TABLE)
    for call_id in ("rtc_in", "rtc_acc", "rtc_act1", "rtc_act2", "rtc_sales", "rtc_done"):
        new_call(store, call_id)
    move(store, "rtc_acc", CallState.ACCEPTING, profile="support")
    for call_id in ("rtc_act1", "rtc_act2"):
        move(store, call_id, CallState.ACCEPTING, CallState.ACTIVE, profile="support")
    move(store, "rtc_sales", CallState.ACCEPTING, CallState.ACTIVE, profile="sales")
    move(store, "rtc_done", CallState.ACCEPTING, CallState.ACTIVE, CallState.ENDED)
    rdb.zadd(keys.LIVE_CALLS, {"rtc_ghost": 1.0})  # a stale index entry: no record

    books.accrue("rtc_act1", "support", "gpt-realtime", "resp_1", usage(1000, 500, 100, 200, 300))
    books.accrue("rtc_act2", "support", "gpt-realtime", "resp_2", usage(10, 20, 0, 30, 40))
    books.accrue("rtc_act2", "support", "gpt-realtime", "resp_2", usage(10, 20, 0, 30, 40))
    books.accrue("rtc_sales", "sales", "gpt-realtime-mini", "resp_3", usage(70, 0, 0, 5, 0))
    books.count_outcome("accepted", "support", call_id="rtc_act1")
    books.count_outcome("accepted", "support", call_id="rtc_act2")
    books.count_outcome("rejected", None, "blocked", call_id="rtc_blocked")
    books.count_outcome("ended", "support", "caller_hangup", call_id="rtc_done")

    admission = Admission(rdb)
    for call_id, profile in (("rtc_act1", "support"), ("rtc_act2", "support")):
        admission.acquire(call_id, profile, max_calls=None, profile_cap=None)
    admission.acquire("rtc_sales", "sales", max_calls=None, profile_cap=None)

    rdb.lpush("control", "m1", "m2", "m3")
    rdb.lpush("control\x06\x163", "m4")  # kombu's list for priority 3
    rdb.lpush("post_call", "m5")
    rdb.lpush(keys.PENDING_CALLS, "rtc_x", "rtc_y")

    await RunnerRegistry(aclient, "r-alive").beat(capacity=100, load=10, draining=False)
    await RunnerRegistry(aclient, "r-draining").beat(capacity=50, load=5, draining=True)
    await RunnerRegistry(aclient, "r-dead").beat(capacity=30, load=3, draining=False)
    rdb.zadd(keys.RUNNERS, {"r-dead": time.time() - 60})
    return books


async def scrape(view: ClusterView) -> Samples:
    return parse((await view.render()).decode())


async def test_the_view_reports_what_redis_holds(
    redis_client: redis.Redis, aclient: redis.asyncio.Redis
) -> None:
    books = await populate(redis_client, aclient)
    samples = await scrape(ClusterView(aclient, lambda: TABLE))

    def active(profile: str, state: str) -> float:
        return value(samples, "switchboard_calls_active", profile=profile, state=state)

    assert active("", "incoming") == 1
    assert active("support", "accepting") == 1
    assert active("support", "active") == 2
    assert active("sales", "active") == 1
    # Known profiles get a zero row for every live state; ended calls and ghosts are gone.
    assert active("sales", "transferring") == 0
    live = sum(v for (n, _), v in samples.items() if n == "switchboard_calls_active")
    assert live == 5

    assert value(samples, "switchboard_calls_total", outcome="accepted", reason="") == 2
    assert value(samples, "switchboard_calls_total", outcome="rejected", reason="blocked") == 1
    assert value(samples, "switchboard_calls_total", outcome="ended", reason="caller_hangup") == 1

    # Cost and tokens per profile, model and component reconcile with the accounting.
    for profile, model in (("support", "gpt-realtime"), ("sales", "gpt-realtime-mini")):
        totals = books.profile_totals(profile)
        for component, usd in totals.cost_by_model[model].components_usd().items():
            labels = {"profile": profile, "model": model, "component": component}
            if usd:
                assert value(samples, "switchboard_cost_usd_total", **labels) == float(usd)
            else:
                assert ("switchboard_cost_usd_total", frozenset(labels.items())) not in samples
        reported = value(samples, "switchboard_responses_total", profile=profile, model=model)
        assert reported == totals.responses_by_model[model]
    tokens = {"profile": "support", "model": "gpt-realtime"}
    assert value(samples, "switchboard_tokens_total", component="input_text", **tokens) == 1010
    assert value(samples, "switchboard_tokens_total", component="cached_text", **tokens) == 100
    assert value(samples, "switchboard_tokens_total", component="output_audio", **tokens) == 340
    spent = sum(v for (n, _), v in samples.items() if n == "switchboard_cost_usd_total")
    assert spent == pytest.approx(float(books.cluster_totals().cost_usd), rel=1e-12)

    assert value(samples, "switchboard_admission_slots_used", profile="support") == 2
    assert value(samples, "switchboard_admission_slots_used", profile="sales") == 1
    assert value(samples, "switchboard_queue_length", queue="control") == 4
    assert value(samples, "switchboard_queue_length", queue="post_call") == 1
    assert value(samples, "switchboard_queue_length", queue="tools") == 0
    assert value(samples, "switchboard_queue_length", queue="pending_calls") == 2

    assert value(samples, "switchboard_runners", state="alive") == 1
    assert value(samples, "switchboard_runners", state="draining") == 1
    assert value(samples, "switchboard_runners", state="dead") == 1
    assert value(samples, "switchboard_runner_pool_capacity_calls") == 100
    assert value(samples, "switchboard_runner_pool_calls") == 15
    assert value(samples, "switchboard_redis_up") == 1


async def test_an_empty_cluster_reports_zeros_not_gaps(aclient: redis.asyncio.Redis) -> None:
    samples = await scrape(ClusterView(aclient, lambda: TABLE))
    assert value(samples, "switchboard_runners", state="alive") == 0
    assert value(samples, "switchboard_runner_pool_capacity_calls") == 0
    assert value(samples, "switchboard_queue_length", queue="control") == 0
    assert value(samples, "switchboard_calls_active", profile="", state="active") == 0
    assert value(samples, "switchboard_redis_up") == 1


async def test_unreachable_redis_is_reported_not_raised() -> None:
    client = redis.asyncio.Redis(port=free_port(), socket_connect_timeout=0.2)
    try:
        samples = await scrape(ClusterView(client, lambda: TABLE, timeout_s=1.0))
    finally:
        await client.aclose()
    assert value(samples, "switchboard_redis_up") == 0
    assert names(samples) == {
        "switchboard_redis_up",
        "switchboard_cluster_scrape_duration_seconds",
    }


async def test_ingress_metrics_join_its_own_and_the_cluster_view_and_time_admin_calls(
    redis_client: redis.Redis, aclient: redis.asyncio.Redis
) -> None:
    await populate(redis_client, aclient)
    settings = Settings(
        openai_webhook_secret=SecretStr(SECRET),
        redis_url="redis://unused",
        admin_token=SecretStr(ADMIN_TOKEN),
    )
    app = create_app(settings, redis_client=aclient)
    auth = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as http:
        assert (await http.get("/v1/calls", headers=auth)).status_code == 200
        assert (await http.get("/v1/calls/rtc_missing", headers=auth)).status_code == 404
        assert (await http.get("/v1/calls/rtc_act1", headers=auth)).status_code == 200
        assert (await http.get("/v1/runners")).status_code == 401
        assert (await http.post("/webhooks/openai", content=b"{}")).status_code == 400
        response = await http.get("/metrics")
    assert response.status_code == 200
    samples = parse(response.text)

    def admin(route: str, status: str) -> float:
        return value(
            samples, "switchboard_admin_requests_total", route=route, method="GET", status=status
        )

    assert admin("/v1/calls", "200") == 1
    assert admin("/v1/calls/{call_id}", "404") == 1
    assert admin("/v1/calls/{call_id}", "200") == 1
    assert admin("/v1/runners", "401") == 1
    duration = "switchboard_admin_request_duration_seconds_count"
    assert value(samples, duration, route="/v1/calls/{call_id}", method="GET") == 2
    # The webhook path has its own metrics, not the admin ones.
    routes = {
        dict(labels).get("route") for n, labels in samples if n.startswith("switchboard_admin_")
    }
    assert routes == {"/v1/calls", "/v1/calls/{call_id}", "/v1/runners"}
    webhooks = value(
        samples, "switchboard_webhooks_total", result="invalid_signature", reason="missing_header"
    )
    assert webhooks == 1
    assert value(samples, "switchboard_calls_active", profile="support", state="active") == 2
    assert value(samples, "switchboard_redis_up") == 1
