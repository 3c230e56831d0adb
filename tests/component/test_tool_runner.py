"""Tools as a session runner runs them: HTTP against a real uvicorn server, async Python
in-process, blocking Python through a real Celery worker on the ``tools`` queue."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import pytest
import redis.asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from shared.profile import ToolDef
from shared.queues import TOOLS_QUEUE
from tests.support.emulator import serve_in_thread
from tests.support.ports import free_port
from tests.support.procs import REPO, Child, spawn, switchboard_argv, wait_until
from workers.sessions.tool_runner import ToolOutcome, ToolRunner, aclose_default_runner, run_tool

SEEN: list[dict[str, Any]] = []


async def ok(request: Request) -> Response:
    SEEN.append({"body": await request.body(), "type": request.headers.get("content-type")})
    args = await request.json()
    return JSONResponse({"status": "shipped", "order_id": args["order_id"]})


async def fail(request: Request) -> Response:
    return JSONResponse({"error": "boom"}, status_code=503)


async def slow(request: Request) -> Response:
    # Simulates an endpoint slower than the tool's timeout.
    await asyncio.sleep(1.5)
    return JSONResponse({"late": True})


async def not_json(request: Request) -> Response:
    return PlainTextResponse("shipped, probably")


APP = Starlette(
    routes=[
        Route("/ok", ok, methods=["POST"]),
        Route("/fail", fail, methods=["POST"]),
        Route("/slow", slow, methods=["POST"]),
        Route("/not-json", not_json, methods=["POST"]),
    ]
)


@pytest.fixture(scope="module")
def tool_server() -> Iterator[str]:
    with serve_in_thread(APP) as url:
        yield url


def http_tool(url: str, timeout_s: float = 2.0) -> ToolDef:
    return ToolDef.model_validate(
        {"description": "t", "handler": {"type": "http", "url": url, "timeout_s": timeout_s}}
    )


def python_tool(function: str, timeout_s: float = 5.0, run_in_worker: bool = False) -> ToolDef:
    return ToolDef.model_validate(
        {
            "description": "t",
            "handler": {"type": "python", "function": function, "timeout_s": timeout_s},
            "run_in_worker": run_in_worker,
        }
    )


@pytest.fixture
async def runner() -> AsyncIterator[ToolRunner]:
    tools = ToolRunner()
    try:
        yield tools
    finally:
        await tools.aclose()


def error_of(outcome: ToolOutcome) -> str:
    assert not outcome.ok
    message = orjson.loads(outcome.output)["error"]
    assert isinstance(message, str)
    return message


async def test_an_http_tool_gets_the_arguments_as_json(
    runner: ToolRunner, tool_server: str
) -> None:
    SEEN.clear()
    outcome = await runner.run_tool(http_tool(f"{tool_server}/ok"), '{"order_id": "123"}')
    assert outcome.ok
    assert orjson.loads(outcome.output) == {"status": "shipped", "order_id": "123"}
    assert orjson.loads(SEEN[0]["body"]) == {"order_id": "123"}
    assert SEEN[0]["type"] == "application/json"


async def test_http_failures_become_error_outputs(runner: ToolRunner, tool_server: str) -> None:
    assert "HTTP 503" in error_of(await runner.run_tool(http_tool(f"{tool_server}/fail"), "{}"))
    assert "not JSON" in error_of(await runner.run_tool(http_tool(f"{tool_server}/not-json"), "{}"))
    slow = await runner.run_tool(http_tool(f"{tool_server}/slow"), "{}", timeout_s=0.2)
    assert "timed out after 0.2s" in error_of(slow)
    closed = f"http://127.0.0.1:{free_port()}/"
    assert "unreachable" in error_of(await runner.run_tool(http_tool(closed), "{}"))


async def test_bad_arguments_are_refused_before_anything_runs(
    runner: ToolRunner, tool_server: str
) -> None:
    SEEN.clear()
    assert "not valid JSON" in error_of(await runner.run_tool(http_tool(f"{tool_server}/ok"), "{"))
    assert "JSON object" in error_of(await runner.run_tool(http_tool(f"{tool_server}/ok"), "[1]"))
    assert SEEN == []
    lookup = python_tool("workers.demo_tools:lookup_order")
    assert "do not fit lookup_order" in error_of(await runner.run_tool(lookup, {"order": "1"}))
    # Once the function's signature is known (kept after a good call), still checked.
    assert (await runner.run_tool(lookup, {"order_id": "1"})).ok
    assert "do not fit lookup_order" in error_of(await runner.run_tool(lookup, {"order": "1"}))


async def test_the_demo_order_lookup_runs_in_process_and_is_deterministic(
    runner: ToolRunner,
) -> None:
    lookup = python_tool("workers.demo_tools:lookup_order")
    first = await runner.run_tool(lookup, '{"order_id": "4711-23"}')
    second = await runner.run_tool(lookup, {"order_id": "471123"})
    assert first.ok
    assert first == second
    answer = orjson.loads(first.output)
    assert answer["found"] is True
    assert answer["order_id"] == "471123"
    assert answer["status"] in ("processing", "shipped", "out_for_delivery", "delivered")
    missing = orjson.loads((await runner.run_tool(lookup, {"order_id": "12340"})).output)
    assert missing["found"] is False


async def test_async_python_tools_run_under_their_deadline(runner: ToolRunner) -> None:
    echo = await runner.run_tool(
        python_tool("tests.support.tool_functions:async_echo"), {"text": "hi"}
    )
    assert echo == ToolOutcome(True, "HI")
    pid = await runner.run_tool(python_tool("tests.support.tool_functions:async_pid"), {})
    assert orjson.loads(pid.output) == {"pid": os.getpid()}
    sleepy = python_tool("tests.support.tool_functions:async_sleep", timeout_s=0.2)
    assert "timed out after 0.2s" in error_of(await runner.run_tool(sleepy, {"seconds": 5}))
    broken = python_tool("tests.support.tool_functions:async_broken")
    assert "KeyError" in error_of(await runner.run_tool(broken, {}))
    odd = python_tool("tests.support.tool_functions:async_not_json")
    assert "not JSON data" in error_of(await runner.run_tool(odd, {}))


async def test_a_bad_import_path_is_a_clear_error(runner: ToolRunner) -> None:
    missing_module = python_tool("no_such_package.tools:lookup")
    assert "cannot import tool module 'no_such_package.tools'" in error_of(
        await runner.run_tool(missing_module, {})
    )
    missing_function = python_tool("workers.demo_tools:no_such_function")
    assert "has no function 'no_such_function'" in error_of(
        await runner.run_tool(missing_function, {})
    )


async def test_a_blocking_tool_without_redis_is_an_error_not_a_blocked_loop(
    runner: ToolRunner,
) -> None:
    blocking = python_tool("tests.support.tool_functions:blocking_sleep")
    assert "need a Redis connection" in error_of(await runner.run_tool(blocking, {"seconds": 5}))


# Blocking tools through a real Celery worker.


@pytest.fixture(scope="module")
def tools_worker(redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Child]:
    env = {"SWITCHBOARD_REDIS_URL": redis_server, "PYTHONPATH": str(REPO)}
    argv = switchboard_argv("worker", "--queues", TOOLS_QUEUE, "--concurrency", "2")
    child = spawn("tools-worker", argv, tmp_path_factory.mktemp("tools-worker"), env=env)
    try:
        wait_until(lambda: " ready." in child.tail(200), 60.0, "celery worker ready", child)
        yield child
    finally:
        child.stop()


@pytest.fixture
async def celery_runner(redis_server: str, tools_worker: Child) -> AsyncIterator[ToolRunner]:
    client = redis.asyncio.Redis.from_url(redis_server)
    tools = ToolRunner(client)
    try:
        yield tools
    finally:
        await tools.aclose()
        await client.aclose()


async def test_a_blocking_tool_runs_in_a_celery_worker(celery_runner: ToolRunner) -> None:
    adder = python_tool("tests.support.tool_functions:blocking_add")
    outcomes = await asyncio.gather(
        *(celery_runner.run_tool(adder, {"a": n, "b": 1}) for n in range(5))
    )
    for n, outcome in enumerate(outcomes):
        assert outcome.ok, outcome.output
        answer = orjson.loads(outcome.output)
        assert answer["sum"] == n + 1
        assert answer["pid"] != os.getpid()


async def test_run_in_worker_sends_even_an_async_tool_to_the_worker(
    celery_runner: ToolRunner,
) -> None:
    tool = python_tool("tests.support.tool_functions:async_pid", run_in_worker=True)
    outcome = await celery_runner.run_tool(tool, {})
    assert outcome.ok
    assert orjson.loads(outcome.output)["pid"] != os.getpid()
    # The worker resolves the path itself and answers a bad one with an error output.
    bad = python_tool("no_such_package.tools:lookup", run_in_worker=True)
    assert "cannot import" in error_of(await celery_runner.run_tool(bad, {}))


async def test_a_slow_blocking_tool_times_out_and_its_late_reply_is_dropped(
    celery_runner: ToolRunner,
) -> None:
    sleeper = python_tool("tests.support.tool_functions:blocking_sleep")
    late = await celery_runner.run_tool(sleeper, {"seconds": 1.0}, timeout_s=0.3)
    assert "timed out after 0.3s" in error_of(late)
    # The next call still gets its own answer, not the late one.
    adder = python_tool("tests.support.tool_functions:blocking_add")
    outcome = await celery_runner.run_tool(adder, {"a": 2, "b": 2}, timeout_s=10)
    assert outcome.ok
    assert orjson.loads(outcome.output)["sum"] == 4


async def test_the_free_function_uses_a_default_runner_per_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SWITCHBOARD_REDIS_URL", raising=False)
    lookup = python_tool("workers.demo_tools:lookup_order")
    try:
        outcome = await run_tool(lookup, {"order_id": "5551"})
        assert outcome.ok
        assert orjson.loads(outcome.output)["order_id"] == "5551"
    finally:
        await aclose_default_runner()
