"""The live view of ``up --demo`` reading a real Redis and a real runner ``/metrics``."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis
from prometheus_client import CollectorRegistry, Histogram, start_http_server
from rich.console import Console

from shared.accounting import Accounting
from switchboard.live_view import SETUP_HISTOGRAM as SETUP
from switchboard.live_view import TURN_HISTOGRAM as TURN
from switchboard.live_view import LiveView
from tests.support.cluster_data import make_call, register_runner
from tests.support.ports import free_port

USAGE = {
    "input_tokens": 1000,
    "output_tokens": 500,
    "input_token_details": {"text_tokens": 1000},
    "output_token_details": {"audio_tokens": 500},
}


@contextmanager
def metrics_endpoint(name: str, buckets: tuple[float, ...], values: list[float]) -> Iterator[str]:
    """A ``/metrics`` endpoint with one histogram, on a free port."""
    registry = CollectorRegistry()
    histogram = Histogram(name, name, buckets=buckets, registry=registry)
    for value in values:
        histogram.observe(value)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        yield f"http://127.0.0.1:{port}/metrics"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def runner_metrics() -> Iterator[str]:
    """A runner's turn latencies: 0.1 s nine times, 2 s once."""
    turns = [0.1] * 9 + [2.0]
    with metrics_endpoint(TURN, (0.05, 0.2, 1.0, 5.0), turns) as url:
        yield url


@pytest.fixture
def worker_metrics() -> Iterator[str]:
    """A worker's call setups: ten of 15 ms."""
    with metrics_endpoint(SETUP, (0.01, 0.02, 0.05), [0.015] * 10) as url:
        yield url


def populate(client: redis.Redis) -> None:
    make_call(client, "rtc_a")
    make_call(client, "rtc_b")
    register_runner(client, "runner-a", capacity=50, load=2)
    books = Accounting(client)
    books.accrue("rtc_a", "support", "gpt-realtime", "resp_1", USAGE)
    books.count_outcome("ended", "support", "caller_hangup", call_id="rtc_old")


def test_the_terminal_view_shows_calls_latency_cost_and_runners(
    redis_client: redis.Redis, runner_metrics: str, worker_metrics: str
) -> None:
    populate(redis_client)
    sink = io.StringIO()
    console = Console(file=sink, force_terminal=True, width=120, color_system=None)
    view = LiveView(
        redis.Redis(connection_pool=redis_client.connection_pool),
        [runner_metrics],
        console,
        plain=False,
        worker_metrics=[worker_metrics],
    )
    try:
        view.tick()
        view.tick()
    finally:
        view.close()
    text = sink.getvalue()
    assert "2 active" in text
    assert "runner-a" in text
    assert "2/50" in text
    # 1000 text in at $4/M + 500 audio out at $64/M.
    assert "$0.0360" in text
    # Nine of ten turns took 0.1 s: p50 interpolated inside the (0.05, 0.2] bucket
    # (0.05 + 0.15 * 5/9), p99 inside (1, 5] (1 + 4 * 0.9).
    assert "p50 133ms p99 4600ms" in text
    # Setup from the workers' histogram, inside (0.01, 0.02]: not the records' 1 s.
    assert "setup      p50 15ms p99 20ms" in text


def test_without_a_terminal_it_prints_plain_lines(
    redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    populate(redis_client)
    console = Console(file=io.StringIO(), force_terminal=False)
    view = LiveView(
        redis.Redis(connection_pool=redis_client.connection_pool), [], console, plain=True
    )
    try:
        view.tick()
        view.tick()  # within PLAIN_EVERY_S: no second line
    finally:
        view.close()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("switchboard 0.0s: calls 2 active | ")
    # No worker metrics: setup latency from the live calls' records (accepted after 1 s).
    assert "| setup p50 1000ms p99 1000ms |" in lines[0]
    assert "| turn p50 - p99 - |" in lines[0]
    assert "| cost $0.0360 |" in lines[0]
    assert lines[0].endswith("| runners runner-a=2/50")


def test_an_unreachable_redis_skips_the_reading(capsys: pytest.CaptureFixture[str]) -> None:
    client = redis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2)
    view = LiveView(client, [], Console(file=io.StringIO()), plain=True)
    view.tick()
    view.close()
    assert capsys.readouterr().out == ""
