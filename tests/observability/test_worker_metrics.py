"""A real ``switchboard worker --metrics-port`` under the prefork pool, against the emulator.

Tasks run in forked pool processes; the parent serves their sum (multiprocess mode),
so everything read from the endpoint was recorded in another process than the one
serving it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from shared.accounting import Accounting
from shared.queues import CONTROL_QUEUE, ROUTE_CALL_TASK
from shared.settings import Settings
from shared.store import CallStore
from tests.observability.exposition import Samples, parse, value
from tests.support.control import create_incoming
from tests.support.emulator import EmulatorHandle, running_emulator
from tests.support.ports import free_port
from tests.support.procs import Child, http_ok, spawn, switchboard_argv, wait_until
from workers.celery_app import create_app

ROUTE = {"task": ROUTE_CALL_TASK}


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorHandle]:
    with running_emulator(time_scale=0.05) as handle:
        yield handle


class Worker:
    def __init__(self, child: Child, metrics_url: str, multiproc_dir: Path) -> None:
        self.child, self.metrics_url, self.multiproc_dir = child, metrics_url, multiproc_dir

    def scrape(self) -> Samples:
        response = httpx.get(self.metrics_url, timeout=5.0)
        assert response.status_code == 200
        return parse(response.text)


@pytest.fixture(scope="module")
def worker(
    redis_server: str, emu: EmulatorHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Worker]:
    logs = tmp_path_factory.mktemp("worker")
    client = redis.Redis.from_url(redis_server)
    client.flushall()  # before the worker starts: nothing left by other tests in its queue
    client.close()
    multiproc_dir = logs / "prometheus"
    multiproc_dir.mkdir()
    (multiproc_dir / "counter_999999.db").write_bytes(b"stale")  # from an earlier run
    port = free_port()
    env = {
        "SWITCHBOARD_REDIS_URL": redis_server,
        "OPENAI_BASE_URL": emu.api_url,
        "OPENAI_API_KEY": emu.api_key,
        "PROMETHEUS_MULTIPROC_DIR": str(multiproc_dir),
    }
    argv = switchboard_argv(
        "worker", "--queues", CONTROL_QUEUE, "--concurrency", "2", "--metrics-port", str(port)
    )
    child = spawn("metrics-worker", argv, logs, env=env)
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        wait_until(http_ok(url), 30.0, "worker metrics endpoint", child)
        wait_until(lambda: " ready." in child.tail(200), 60.0, "celery worker ready", child)
        yield Worker(child, url, multiproc_dir)
    finally:
        child.stop()


def route_calls(redis_url: str, emu: EmulatorHandle, count: int) -> list[str]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    app = create_app(Settings(redis_url=redis_url))
    try:
        store, call_ids = CallStore(client), []
        for _ in range(count):
            call_id = emu.place_call(scenario="quick-question")
            create_incoming(store, call_id)
            app.send_task(
                ROUTE_CALL_TASK, args=(call_id,), queue=CONTROL_QUEUE, task_id=str(uuid.uuid4())
            )
            call_ids.append(call_id)
        return call_ids
    finally:
        app.close()
        client.close()


@pytest.fixture
def rdb(redis_server: str) -> Iterator[redis.Redis]:
    # Not flushed: that would drop kombu's bindings under the running worker.
    client = redis.Redis.from_url(redis_server, decode_responses=True)
    try:
        yield client
    finally:
        client.close()


def test_pool_processes_report_tasks_rest_calls_and_setup_latency_through_the_parent(
    worker: Worker, emu: EmulatorHandle, redis_server: str, rdb: redis.Redis
) -> None:
    assert not (worker.multiproc_dir / "counter_999999.db").exists(), "stale files are cleared"
    before = worker.scrape()
    assert (
        "switchboard_tasks_total",
        frozenset({**ROUTE, "state": "success"}.items()),
    ) not in before
    accepted_before = Accounting(rdb).cluster_totals().outcome_count("accepted")
    call_ids = route_calls(redis_server, emu, 4)
    store = CallStore(rdb)

    def accepted() -> bool:
        return all((r := store.get(c)) is not None and r.accepted_at is not None for c in call_ids)

    wait_until(accepted, 30.0, "calls accepted", worker.child)

    def counted() -> bool:
        samples = worker.scrape()
        key = ("switchboard_tasks_total", frozenset({**ROUTE, "state": "success"}.items()))
        return samples.get(key, 0) >= 4

    # The task's postrun signal comes just after the accept is recorded.
    wait_until(counted, 10.0, "route tasks counted", worker.child)
    samples = worker.scrape()
    assert value(samples, "switchboard_tasks_total", **ROUTE, state="success") == 4
    assert value(samples, "switchboard_task_duration_seconds_count", **ROUTE) == 4
    accepts = value(
        samples, "switchboard_rest_request_duration_seconds_count", endpoint="accept", status="200"
    )
    assert accepts == 4
    assert value(samples, "switchboard_call_setup_latency_seconds_count") == 4
    setup_s = value(samples, "switchboard_call_setup_latency_seconds_sum")
    assert 0 < setup_s < 4 * 5.0
    # Written by the pool's children, not by the process serving them.
    pids = {int(path.stem.rpartition("_")[2]) for path in worker.multiproc_dir.glob("*.db")}
    assert pids
    assert worker.child.proc.pid not in pids
    # The accepted outcomes went into the cluster counters in Redis too.
    assert Accounting(rdb).cluster_totals().outcome_count("accepted") == accepted_before + 4


def test_a_503_storm_shows_in_rest_metrics(
    worker: Worker, emu: EmulatorHandle, redis_server: str
) -> None:
    emu.set_faults(rest_5xx_rate=1.0, retry_after_s=0.05)
    try:
        route_calls(redis_server, emu, 1)

        def storming() -> bool:
            key = (
                "switchboard_rest_request_duration_seconds_count",
                frozenset({"endpoint": "accept", "status": "503"}.items()),
            )
            return worker.scrape().get(key, 0) >= 3

        wait_until(storming, 15.0, "503 answers counted", worker.child)
    finally:
        emu.set_faults(rest_5xx_rate=0.0)
