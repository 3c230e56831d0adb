"""The ingress as deployed: ``switchboard ingress`` (real uvicorn) against a real Redis."""

from __future__ import annotations

import base64
import concurrent.futures
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from shared import keys
from shared.queues import CONTROL_QUEUE, ROUTE_CALL_TASK
from tests.support.ports import free_port
from tests.support.procs import switchboard_argv
from tests.support.redis_server import start_redis
from tests.support.webhook_sender import (
    SECRET,
    incoming_event,
    metric_value,
    signed_headers,
    start_ingress,
)

WEBHOOK_PATH = "/webhooks/openai"


@pytest.fixture(scope="module")
def ingress(redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log_dir = tmp_path_factory.mktemp("ingress")
    child, url = start_ingress(log_dir, redis_server)
    try:
        yield url
    finally:
        child.stop()
        # Whatever happened in this module, the secret never reached the log.
        assert SECRET not in child.log_path.read_text(errors="replace")
        assert SECRET.removeprefix("whsec_") not in child.log_path.read_text(errors="replace")


@pytest.fixture
def http(ingress: str, redis_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=ingress, timeout=10.0) as client:
        yield client


def snapshot(client: redis.Redis) -> dict[str, Any]:
    """Every key with its type, value and whether it expires."""
    state: dict[str, Any] = {}
    for key in sorted(client.keys("*")):
        kind = client.type(key)
        reader: Callable[[str], Any] = {
            "hash": client.hgetall,
            "list": lambda k: client.lrange(k, 0, -1),
            "zset": lambda k: client.zrange(k, 0, -1, withscores=True),
            "string": client.get,
        }[kind]
        state[key] = (kind, reader(key), client.ttl(key) > 0)
    return state


def routing_messages(client: redis.Redis) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in client.lrange(CONTROL_QUEUE, 0, -1)]


def metrics(http: httpx.Client) -> str:
    response = http.get("/metrics")
    assert response.status_code == 200
    return response.text


def post(http: httpx.Client, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return http.post(WEBHOOK_PATH, content=body, headers=headers)


def test_a_signed_call_is_recorded_and_queued_for_routing(
    http: httpx.Client, redis_client: redis.Redis
) -> None:
    body = incoming_event("rtc_new1")
    response = post(http, body, signed_headers(body, "wh_new1"))
    assert response.status_code == 200
    assert response.json() == {"result": "queued"}

    record = redis_client.hgetall(keys.call_record("rtc_new1"))
    assert record["state"] == "incoming"
    assert record["from"] == "+14155550100"
    assert record["to"] == "+18005550100"
    assert record["webhook_id"] == "wh_new1"
    assert record["event_id"] == "evt_rtc_new1"
    headers = json.loads(record["sip_headers"])
    assert {"name": "X-Account", "value": "<script>alert(1)</script>"} in headers
    assert len(headers) == 4

    [message] = routing_messages(redis_client)
    assert message["headers"]["task"] == ROUTE_CALL_TASK
    assert message["properties"]["delivery_info"]["routing_key"] == CONTROL_QUEUE
    args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
    assert (args, kwargs) == (["rtc_new1"], {})


def test_repeated_and_concurrent_deliveries_act_once(
    http: httpx.Client, ingress: str, redis_client: redis.Redis
) -> None:
    body = incoming_event("rtc_dup")
    headers = signed_headers(body, "wh_dup")
    before = metric_value(metrics(http), "switchboard_webhooks_total", result="duplicate")
    sequential = [post(http, body, headers) for _ in range(5)]

    def send(_: int) -> httpx.Response:
        with httpx.Client(base_url=ingress, timeout=10.0) as own:
            return post(own, body, headers)

    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        concurrent_ = list(pool.map(send, range(5)))
    other_body = incoming_event("rtc_dup", callee="<sip:+19995550100@elsewhere>")
    redelivered = post(http, other_body, signed_headers(other_body, "wh_dup_second"))

    responses = [*sequential, *concurrent_, redelivered]
    assert [r.status_code for r in responses] == [200] * 11
    assert sorted(r.json()["result"] for r in responses).count("queued") == 1
    assert redis_client.keys("sb:call:*") == [keys.call_record("rtc_dup")]
    assert redis_client.hget(keys.call_record("rtc_dup"), "to") == "+18005550100"
    assert len(routing_messages(redis_client)) == 1
    after = metric_value(metrics(http), "switchboard_webhooks_total", result="duplicate")
    assert after - before == 10


def _oversized_chunks() -> Iterator[bytes]:
    for _ in range(20):
        yield b" " * 4096


BODY = incoming_event("rtc_bad")
HUGE = b"{" + b" " * 70_000 + b"}"
NO_CALL_ID = b'{"type":"realtime.call.incoming","data":{"sip_headers":[]}}'
BRACES = b'{"type":"realtime.call.incoming","data":{"call_id":"rtc_{x}","sip_headers":[]}}'
SIGNATURE_FAILURES = {"mismatch", "too_old", "too_new", "missing_header", "bad_timestamp"}
Headers = Callable[[bytes], dict[str, str]]


def good(body: bytes) -> dict[str, str]:
    return signed_headers(body, "wh_bad")


def aged(age_s: int) -> Headers:
    return lambda body: signed_headers(body, "wh_bad", timestamp_s=int(time.time()) - age_s)


def changed(**overrides: str) -> Headers:
    return lambda body: {**good(body), **overrides}


def signed_for(other_body: bytes) -> Headers:
    return lambda body: good(other_body)


def without_id(body: bytes) -> dict[str, str]:
    return {k: v for k, v in good(body).items() if k != "webhook-id"}


def other_secret(body: bytes) -> dict[str, str]:
    return signed_headers(body, "wh_bad", secret="whsec_b3RoZXI=")


# (body, headers for that body, status, reason), signed at send time.
BAD_CASES: list[Any] = [
    pytest.param(BODY, changed(**{"webhook-signature": "v1,AAAA"}), 400, "mismatch", id="bad-sig"),
    pytest.param(BODY, other_secret, 400, "mismatch", id="other-secret"),
    pytest.param(BODY, aged(301), 400, "too_old", id="stale"),
    pytest.param(BODY, aged(-301), 400, "too_new", id="future"),
    pytest.param(
        BODY.replace(b"+1415", b"+1416"), signed_for(BODY), 400, "mismatch", id="tampered"
    ),
    pytest.param(BODY, without_id, 400, "missing_header", id="no-id"),
    pytest.param(BODY, changed(**{"webhook-timestamp": "x"}), 400, "bad_timestamp", id="bad-ts"),
    pytest.param(HUGE, good, 413, "", id="oversized-with-length"),
    pytest.param(_oversized_chunks, signed_for(BODY), 413, "", id="oversized-chunked"),
    pytest.param(b'{"type": "realtime.call', good, 400, "malformed_json", id="bad-json"),
    pytest.param(b'["realtime.call.incoming"]', good, 400, "malformed_payload", id="array"),
    pytest.param(NO_CALL_ID, good, 400, "malformed_payload", id="no-call-id"),
    pytest.param(BRACES, good, 400, "malformed_payload", id="brace-call-id"),
]


@pytest.mark.parametrize(("body", "headers", "status", "reason"), BAD_CASES)
def test_bad_deliveries_are_refused_and_change_nothing(
    http: httpx.Client,
    redis_client: redis.Redis,
    body: Any,
    headers: Headers,
    status: int,
    reason: str,
) -> None:
    # Some state from an earlier good call, which must stay exactly as it is.
    good = incoming_event("rtc_existing")
    assert post(http, good, signed_headers(good, "wh_existing")).status_code == 200
    before = snapshot(redis_client)
    text_before = metrics(http)
    content = body() if callable(body) else body
    response = http.post(WEBHOOK_PATH, content=content, headers=headers(content))
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"code", "message"}
    assert SECRET not in response.text
    assert snapshot(redis_client) == before
    result = {
        400: "invalid_signature"
        if reason in ("mismatch", "too_old", "too_new", "missing_header", "bad_timestamp")
        else "invalid",
        413: "too_large",
    }[status]
    labels = {"result": result, "reason": reason}
    counted = metric_value(metrics(http), "switchboard_webhooks_total", **labels)
    assert counted - metric_value(text_before, "switchboard_webhooks_total", **labels) == 1


def test_unknown_event_types_are_acknowledged_ignored_and_counted(
    http: httpx.Client, redis_client: redis.Redis
) -> None:
    labels = {"result": "ignored", "reason": "unknown_event"}
    before = metric_value(metrics(http), "switchboard_webhooks_total", **labels)
    body = incoming_event("rtc_other", event_type="realtime.call.something_new")
    response = post(http, body, signed_headers(body, "wh_other"))
    assert response.status_code == 200
    assert response.json() == {"result": "ignored"}
    assert redis_client.dbsize() == 0
    assert metric_value(metrics(http), "switchboard_webhooks_total", **labels) - before == 1


def test_health_readiness_and_latency_histogram(http: httpx.Client) -> None:
    assert http.get("/healthz").status_code == 200
    assert http.get("/readyz").json() == {"status": "ready"}
    body = incoming_event("rtc_timed")
    post(http, body, signed_headers(body, "wh_timed"))
    assert metric_value(metrics(http), "switchboard_webhook_duration_seconds_count") >= 1
    assert http.get(WEBHOOK_PATH).status_code == 405


def test_readiness_fails_while_redis_is_down(tmp_path: Path) -> None:
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    child, url = start_ingress(tmp_path, dead_redis)
    try:
        assert httpx.get(f"{url}/healthz").status_code == 200
        ready = httpx.get(f"{url}/readyz", timeout=10.0)
        assert ready.status_code == 503
        assert ready.json()["error"]["code"] == "not_ready"
        body = incoming_event("rtc_nowhere")
        refused = httpx.post(
            f"{url}{WEBHOOK_PATH}", content=body, headers=signed_headers(body, "wh_x"), timeout=10
        )
        assert refused.status_code == 503  # so that OpenAI delivers it again later
    finally:
        child.stop()


def test_a_redis_that_refuses_writes_gets_a_json_503_and_keeps_nothing(tmp_path: Path) -> None:
    redis_child, redis_url = start_redis(tmp_path / "redis")
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        child, url = start_ingress(tmp_path, redis_url)
    except BaseException:
        redis_child.stop()
        raise
    refusals = {
        # Out of memory with nothing to evict: every write is answered -OOM.
        "oom": (
            [("maxmemory-policy", "noeviction"), ("maxmemory", "1")],
            [("maxmemory", "0")],
        ),
        # A replica of an unreachable primary: every write is answered -READONLY.
        "readonly": ([], []),
    }
    try:
        with httpx.Client(base_url=url, timeout=10.0) as http:
            for kind, (refuse, restore) in refusals.items():
                before = snapshot(client)
                if kind == "readonly":
                    client.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))
                for name, value in refuse:
                    client.config_set(name, value)
                counted_before = metric_value(
                    metrics(http), "switchboard_webhooks_total", result="unavailable"
                )
                body = incoming_event(f"rtc_refused_{kind}")
                response = post(http, body, signed_headers(body, f"wh_refused_{kind}"))
                for name, value in restore:
                    client.config_set(name, value)
                if kind == "readonly":
                    client.execute_command("REPLICAOF", "NO", "ONE")

                assert response.status_code == 503, kind
                assert response.headers["content-type"] == "application/json"
                assert response.json() == {
                    "error": {
                        "code": "unavailable",
                        "message": "state store unavailable; retry later",
                    }
                }
                assert snapshot(client) == before, kind
                labels = {"result": "unavailable", "reason": "redis_error"}
                text = metrics(http)
                assert metric_value(text, "switchboard_webhooks_total", **labels) == (
                    1 if kind == "oom" else 2
                )
                assert (
                    metric_value(text, "switchboard_webhooks_total", result="unavailable")
                    - counted_before
                    == 1
                )
                # The same delivery, sent again once Redis takes writes, is recorded.
                again = post(http, body, signed_headers(body, f"wh_refused_{kind}"))
                assert again.json() == {"result": "queued"}, kind
                assert client.hget(keys.call_record(f"rtc_refused_{kind}"), "state") == "incoming"
        log = child.log_path.read_text(errors="replace")
        assert "OutOfMemoryError" in log
        assert "ReadOnlyError" in log
    finally:
        child.stop()
        client.close()
        redis_child.stop()


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        (None, "OPENAI_WEBHOOK_SECRET is not set"),
        ("whsec_***not-base64***", "OPENAI_WEBHOOK_SECRET: the webhook secret is not valid"),
    ],
)
def test_the_ingress_will_not_start_without_a_usable_secret(
    secret: str | None, message: str, redis_url: str
) -> None:
    env = {"SWITCHBOARD_REDIS_URL": redis_url, "PATH": "/usr/bin:/bin"}
    if secret is not None:
        env["OPENAI_WEBHOOK_SECRET"] = secret
    done = subprocess.run(
        switchboard_argv("ingress", "--port", str(free_port())),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert message in lines[0]
    if secret is not None:
        assert secret not in done.stderr + done.stdout
