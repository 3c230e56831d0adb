"""The admin API on a real ``switchboard ingress`` and a real Redis: auth, every route, errors."""

from __future__ import annotations

import hmac
from collections.abc import Iterator

import httpx
import pytest
import redis
import redis.asyncio
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ingress.app import create_app
from shared import keys
from shared.commands import CommandQueue
from shared.models import CallState
from shared.settings import Settings
from tests.support.cluster_data import make_call, register_runner
from tests.support.ingress_admin import admin_ingress
from tests.support.ports import free_port
from tests.support.webhook_sender import SECRET

TOKEN = "admin-token-for-tests-0123456789"


@pytest.fixture(scope="module")
def ingress(redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with admin_ingress(tmp_path_factory.mktemp("admin-ingress"), redis_server, TOKEN) as url:
        yield url


@pytest.fixture
def api(ingress: str, redis_url: str) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=ingress, headers=headers, timeout=10.0) as client:
        yield client


def error_code(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    code: str = body["error"]["code"]
    return code


def queued(client: redis.Redis, call_id: str) -> list[tuple[str, dict[str, object]]]:
    return [(c.kind, dict(c.args)) for c in CommandQueue(client).read_commands(call_id)]


# Authentication ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {TOKEN[:-1]}"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ],
)
def test_a_missing_or_wrong_token_is_refused(
    ingress: str, redis_client: redis.Redis, headers: dict[str, str]
) -> None:
    make_call(redis_client, "rtc_auth")
    for method, path in [
        ("GET", "/v1/calls"),
        ("GET", "/v1/calls/rtc_auth"),
        ("POST", "/v1/calls/rtc_auth/hangup"),
        ("GET", "/v1/runners"),
        ("POST", "/v1/runners/r1/drain"),
    ]:
        response = httpx.request(method, ingress + path, headers=headers, timeout=5.0)
        assert error_code(response, 401) == "unauthorized"
        assert response.headers["www-authenticate"] == "Bearer"
    assert queued(redis_client, "rtc_auth") == []


async def test_every_token_check_is_a_constant_time_comparison(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Timing differences of a few nanoseconds cannot be measured reliably from a test; what
    # can be checked is that every given token reaches hmac.compare_digest, whole.
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def recording(given: bytes, expected: bytes) -> bool:
        compared.append((given, expected))
        return real(given, expected)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    client = redis.asyncio.Redis.from_url(redis_url)
    settings = Settings(openai_webhook_secret=SECRET, redis_url=redis_url, admin_token=TOKEN)
    transport = httpx.ASGITransport(app=create_app(settings, redis_client=client))
    given = [TOKEN, TOKEN[:-1] + "x", "x" + TOKEN[1:], TOKEN[:3], ""]
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://a") as http:
            statuses = [
                (
                    await http.get("/v1/runners", headers={"Authorization": f"Bearer {t}"})
                ).status_code
                for t in given
            ]
    finally:
        await client.aclose()
    assert statuses == [200, 401, 401, 401, 401]
    assert compared == [(t.encode(), TOKEN.encode()) for t in given]


async def test_without_a_configured_token_every_admin_request_is_refused(
    redis_url: str,
) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    settings = Settings(openai_webhook_secret=SECRET, redis_url=redis_url, admin_token="")
    app = create_app(settings, redis_client=client)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://admin") as http:
            for token in ("", "anything"):
                headers = {"Authorization": f"Bearer {token}"}
                for method, path in [
                    ("GET", "/v1/calls"),
                    ("GET", "/v1/calls/x"),
                    ("POST", "/v1/calls/x/say"),
                    ("GET", "/v1/runners"),
                    ("POST", "/v1/runners/x/drain"),
                ]:
                    response = await http.request(method, path, headers=headers)
                    assert error_code(response, 401) == "admin_disabled"
            # The document itself is public: it holds no data.
            assert (await http.get("/openapi.json")).status_code == 200
    finally:
        await client.aclose()


async def test_an_unreachable_redis_is_a_503_not_a_crash() -> None:
    client = redis.asyncio.Redis.from_url(
        f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5
    )
    settings = Settings(openai_webhook_secret=SECRET, admin_token=TOKEN)
    app = create_app(settings, redis_client=client)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://a") as http:
            for method, path in [("GET", "/v1/calls"), ("POST", "/v1/calls/rtc_1/hangup")]:
                response = await http.request(method, path, headers=headers)
                assert error_code(response, 503) == "unavailable"
    finally:
        await client.aclose()


# Router errors -------------------------------------------------------------------------


@pytest.mark.parametrize("token", [TOKEN, None])
def test_unknown_paths_and_wrong_methods_are_json_errors(ingress: str, token: str | None) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=ingress, headers=headers, timeout=5.0) as http:
        for method, path in [
            ("GET", "/v1/nothing"),
            ("POST", "/v1/calls/rtc_1/frobnicate"),
            ("GET", "/v1/runners/r1"),
            ("GET", "/nothing"),
        ]:
            assert error_code(http.request(method, path), 404) == "not_found", path
        for method, path, allowed in [
            ("GET", "/v1/calls/x/transfer", "POST"),
            ("DELETE", "/v1/calls/x", "GET"),
            ("POST", "/v1/calls", "GET"),
            ("GET", "/v1/runners/r1/drain", "POST"),
            ("GET", "/webhooks/openai", "POST"),
            ("POST", "/healthz", "GET"),
            ("POST", "/metrics", "GET"),
        ]:
            response = http.request(method, path)
            assert error_code(response, 405) == "method_not_allowed", path
            assert allowed in response.headers["allow"].split(", ")
        # The routes that are there still answer as before.
        assert http.get("/healthz").json() == {"status": "ok"}
        assert http.get("/metrics").headers["content-type"].startswith("text/plain")


async def test_an_unexpected_exception_is_a_json_500(redis_url: str) -> None:
    async def broken(request: Request) -> Response:
        raise RuntimeError("unexpected secret-free failure")

    client = redis.asyncio.Redis.from_url(redis_url)
    settings = Settings(openai_webhook_secret=SECRET, redis_url=redis_url, admin_token=TOKEN)
    app = create_app(settings, redis_client=client, extra_routes=[Route("/v1/broken", broken)])
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://a") as http:
            response = await http.get("/v1/broken")
        assert error_code(response, 500) == "internal_error"
        assert "secret-free" not in response.text
    finally:
        await client.aclose()


# Calls ---------------------------------------------------------------------------------


def test_calls_lists_live_calls_only_with_their_documents(
    api: httpx.Client, redis_client: redis.Redis
) -> None:
    make_call(redis_client, "rtc_live", usage={"input_tokens": 10}, cost_usd="0.0125")
    make_call(redis_client, "rtc_ringing", CallState.ACCEPTING)
    make_call(redis_client, "rtc_over", CallState.ENDED)
    response = api.get("/v1/calls")
    assert response.status_code == 200
    calls = {call["id"]: call for call in response.json()["calls"]}
    assert set(calls) == {"rtc_live", "rtc_ringing"}
    live = calls["rtc_live"]
    assert live["state"] == "active"
    assert live["profile"] == "support"
    assert live["from"] == "+14155550100"
    assert live["to"] == "+18005550100"
    assert live["runner"] == "runner-a"
    assert live["usage"] == {"input_tokens": 10}
    assert live["cost_usd"] == pytest.approx(0.0125)
    assert live["duration_s"] >= 4.0
    assert live["ended_at"] is None

    only_active = api.get("/v1/calls", params={"state": "active"}).json()["calls"]
    assert [call["id"] for call in only_active] == ["rtc_live"]
    assert api.get("/v1/calls", params={"limit": 1}).json()["calls"][0]["id"] in calls


@pytest.mark.parametrize(
    "params",
    [
        {"state": "bogus"},
        {"limit": "0"},
        {"limit": "1001"},
        {"limit": "x"},
        {"limit": ""},
        # Digits to str.isdigit() that int() refuses, or reads though they are no JSON integer.
        {"limit": "\u00b2"},
        {"limit": "\u0663"},
        {"limit": "\uff15"},
        {"limit": "+5"},
        {"limit": " 5"},
        {"limit": "1_0"},
        {"limit": "9" * 5000},
        [("limit", "1"), ("limit", "2")],
        {"bogus": "1"},
    ],
)
def test_bad_list_parameters_are_422(
    api: httpx.Client, params: dict[str, str] | list[tuple[str, str]]
) -> None:
    assert error_code(api.get("/v1/calls", params=params), 422) == "invalid_parameter"


def test_one_call_live_or_ended_and_unknown_ids(
    api: httpx.Client, redis_client: redis.Redis
) -> None:
    make_call(redis_client, "rtc_done", CallState.ENDED)
    done = api.get("/v1/calls/rtc_done").json()
    assert done["state"] == "ended"
    assert done["end_reason"] == "caller_hangup"
    assert done["ended_at"] is not None
    for unknown in ("rtc_nobody", "has{braces}", "x" * 300):
        assert error_code(api.get(f"/v1/calls/{unknown}"), 404) == "call_not_found"


# Commands ------------------------------------------------------------------------------


def test_transfer_say_and_hangup_are_queued_for_the_runner(
    api: httpx.Client, redis_client: redis.Redis
) -> None:
    make_call(redis_client, "rtc_cmd")
    sent = [
        ("transfer", {"target": "human"}),
        ("transfer", {"target": "sip:desk@pbx.example.com", "announcement": "One moment."}),
        ("say", {"text": "Your order ships today."}),
        ("hangup", {"goodbye": "Goodbye!"}),
    ]
    ids = []
    for kind, body in sent:
        response = api.post(f"/v1/calls/rtc_cmd/{kind}", json=body)
        assert response.status_code == 202, response.text
        answer = response.json()
        assert answer["call_id"] == "rtc_cmd"
        assert answer["kind"] == kind
        assert answer["status"] == "queued"
        assert answer["command_id"].startswith("cmd_")
        ids.append(answer["command_id"])
    # Hang-up needs no body at all.
    assert api.post("/v1/calls/rtc_cmd/hangup").status_code == 202
    assert queued(redis_client, "rtc_cmd") == [*sent, ("hangup", {})]
    assert len(set(ids)) == len(ids)


def test_a_command_result_is_pending_until_the_runner_answers(
    api: httpx.Client, redis_client: redis.Redis
) -> None:
    make_call(redis_client, "rtc_res")
    command_id = api.post("/v1/calls/rtc_res/say", json={"text": "hi"}).json()["command_id"]
    path = f"/v1/calls/rtc_res/commands/{command_id}"
    pending = api.get(path).json()
    assert pending["status"] == "pending"
    assert pending["ok"] is None
    CommandQueue(redis_client).record_result("rtc_res", command_id, True, "will be said")
    done = api.get(path).json()
    assert (done["status"], done["ok"], done["detail"]) == ("done", True, "will be said")
    assert error_code(api.get(f"/v1/calls/rtc_x/commands/{command_id}"), 404) == "call_not_found"


@pytest.mark.parametrize(
    ("kind", "body", "status", "code"),
    [
        ("transfer", {"target": "nowhere"}, 422, "invalid_command"),
        ("transfer", {"target": "http://example.com"}, 422, "invalid_command"),
        ("transfer", {}, 422, "invalid_body"),
        ("transfer", {"target": 7}, 422, "invalid_body"),
        ("transfer", {"target": "human", "extra": 1}, 422, "invalid_body"),
        ("say", {"text": "   "}, 422, "invalid_body"),
        ("say", {"text": "x" * 4001}, 422, "invalid_body"),
        ("say", ["text"], 422, "invalid_body"),
        ("hangup", {"goodbye": ""}, 422, "invalid_body"),
    ],
)
def test_invalid_commands_are_refused_and_queue_nothing(
    api: httpx.Client,
    redis_client: redis.Redis,
    kind: str,
    body: object,
    status: int,
    code: str,
) -> None:
    make_call(redis_client, "rtc_bad")
    response = api.post(f"/v1/calls/rtc_bad/{kind}", json=body)
    assert error_code(response, status) == code
    assert queued(redis_client, "rtc_bad") == []


def test_malformed_oversized_unknown_and_ended(
    api: httpx.Client, redis_client: redis.Redis
) -> None:
    make_call(redis_client, "rtc_live")
    make_call(redis_client, "rtc_gone", CallState.ENDED)
    malformed = api.post("/v1/calls/rtc_live/say", content=b"{not json")
    assert error_code(malformed, 400) == "malformed_json"
    huge = api.post("/v1/calls/rtc_live/say", content=b'{"text": "' + b"a" * 70_000 + b'"}')
    assert error_code(huge, 413) == "body_too_large"
    unknown = api.post("/v1/calls/rtc_nobody/hangup")
    assert error_code(unknown, 404) == "call_not_found"
    ended = api.post("/v1/calls/rtc_gone/say", json={"text": "hello?"})
    assert error_code(ended, 409) == "call_ended"
    assert queued(redis_client, "rtc_live") == []
    assert queued(redis_client, "rtc_gone") == []
    assert not redis_client.exists(keys.call_record("rtc_nobody"))


# Runners -------------------------------------------------------------------------------


def test_runners_with_load_heartbeat_and_drain(
    api: httpx.Client, redis_client: redis.Redis
) -> None:
    register_runner(redis_client, "runner-a", capacity=100, load=7)
    register_runner(redis_client, "runner-b", capacity=50, load=0, age_s=20.0)
    runners = {r["id"]: r for r in api.get("/v1/runners").json()["runners"]}
    assert set(runners) == {"runner-a", "runner-b"}
    a, b = runners["runner-a"], runners["runner-b"]
    assert (a["capacity"], a["load"], a["draining"], a["alive"]) == (100, 7, False, True)
    assert a["heartbeat_age_s"] < 5.0
    assert (b["alive"], b["heartbeat_age_s"] >= 20.0) == (False, True)

    response = api.post("/v1/runners/runner-a/drain")
    assert response.status_code == 202
    assert response.json() == {"runner_id": "runner-a", "draining": True}
    assert redis_client.hexists(keys.runner("runner-a"), "drain_requested")
    assert not redis_client.hexists(keys.runner("runner-b"), "drain_requested")
    drained = {r["id"]: r for r in api.get("/v1/runners").json()["runners"]}
    assert drained["runner-a"]["draining"] is True
    assert error_code(api.post("/v1/runners/nobody/drain"), 404) == "runner_not_found"


def test_a_runner_id_that_names_another_key_is_no_runner(
    api: httpx.Client, redis_client: redis.Redis
) -> None:
    register_runner(redis_client, "runner-a")
    redis_client.rpush(keys.runner_commands("runner-a"), "rtc_1")
    redis_client.sadd(keys.runner_calls("runner-a"), "rtc_1")
    redis_client.rpush(keys.runner_inbox("runner-a"), "rtc_2")
    before = {key: redis_client.dump(key) for key in redis_client.keys("*")}
    for bad in ("runner-a:commands", "runner-a:calls", "runner-a:inbox", "{runner-a}", "a%20b"):
        response = api.post(f"/v1/runners/{bad}/drain")
        assert error_code(response, 404) == "runner_not_found", bad
        assert "runner ids are" in response.json()["error"]["message"]
    assert {key: redis_client.dump(key) for key in redis_client.keys("*")} == before


def test_the_openapi_document_lists_every_route(ingress: str) -> None:
    document = httpx.get(f"{ingress}/openapi.json", timeout=5.0).json()
    assert document["openapi"].startswith("3.1")
    assert set(document["paths"]) == {
        "/v1/calls",
        "/v1/calls/{call_id}",
        "/v1/calls/{call_id}/transfer",
        "/v1/calls/{call_id}/hangup",
        "/v1/calls/{call_id}/say",
        "/v1/calls/{call_id}/commands/{command_id}",
        "/v1/runners",
        "/v1/runners/{runner_id}/drain",
    }
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
