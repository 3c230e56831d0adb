"""``RunnerMetrics`` on its own registry: names from the catalogue, bounded labels."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from shared import metrics
from tests.observability.exposition import names, parse, value
from workers.sessions.runner_metrics import MAX_EVENT_TYPES, RunnerMetrics
from workers.worker_metrics import WorkerMetrics


def scrape(registry: CollectorRegistry) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return parse(generate_latest(registry).decode())


def test_a_fresh_runner_exports_every_runner_metric_with_zeros() -> None:
    registry = CollectorRegistry()
    runner = RunnerMetrics(registry, "r1")
    runner.capacity.set(500)
    samples = scrape(registry)
    expected = {series for spec in metrics.RUNNER for series in spec.series}
    # Labelled families appear with their first child; the rest are there from the start.
    labelled = {"switchboard_session_events_total", "switchboard_session_calls_ended_total"}
    labelled |= set(metrics.REST_DURATION.series)
    assert expected - labelled <= names(samples)
    assert value(samples, "switchboard_runner_capacity_calls", runner="r1") == 500
    assert value(samples, "switchboard_runner_draining", runner="r1") == 0
    for kind in ("first", "reattach", "takeover"):
        assert value(samples, "switchboard_session_attaches_total", kind=kind) == 0


def test_observations_land_in_their_metrics() -> None:
    registry = CollectorRegistry()
    runner = RunnerMetrics(registry, "r1")
    runner.observe("turn_latency_s", 0.4)
    runner.observe("command_latency_s", 0.02)
    runner.observe("tool_timeouts", 1.0)
    runner.attached("takeover")
    runner.ended("caller_hangup")
    runner.call_cost_usd.observe(0.031)
    runner.drain_started()
    runner.observe_rest("refer", "503", 0.01)
    runner.loop_lag_s.observe(0.012)
    samples = scrape(registry)
    assert value(samples, "switchboard_turn_latency_seconds_sum") == 0.4
    assert value(samples, "switchboard_turn_latency_seconds_bucket", le="0.5") == 1
    assert value(samples, "switchboard_turn_latency_seconds_bucket", le="0.3") == 0
    assert value(samples, "switchboard_command_latency_seconds_count") == 1
    assert value(samples, "switchboard_tool_timeouts_total") == 1
    assert value(samples, "switchboard_session_attaches_total", kind="takeover") == 1
    assert value(samples, "switchboard_session_calls_ended_total", reason="caller_hangup") == 1
    assert value(samples, "switchboard_call_cost_usd_bucket", le="0.05") == 1
    assert value(samples, "switchboard_call_cost_usd_bucket", le="0.025") == 0
    assert value(samples, "switchboard_runner_drains_total") == 1
    assert value(samples, "switchboard_runner_draining", runner="r1") == 1
    rest = "switchboard_rest_request_duration_seconds_count"
    assert value(samples, rest, endpoint="refer", status="503") == 1
    # The lag buckets tell a 12 ms stall from the 10 ms target and from 25 ms.
    lag = "switchboard_runner_event_loop_lag_seconds_bucket"
    assert value(samples, lag, le="0.01") == 0
    assert value(samples, lag, le="0.015") == 1


def test_event_types_are_a_bounded_label_set() -> None:
    registry = CollectorRegistry()
    runner = RunnerMetrics(registry, "r1")
    for _ in range(3):
        runner.event("response.done")
    runner.event(None)
    runner.event("x" * 500)
    for i in range(MAX_EVENT_TYPES + 50):
        runner.event(f"made.up.{i}")
    samples = scrape(registry)
    types = {
        dict(labels)["type"]
        for name, labels in samples
        if name == "switchboard_session_events_total"
    }
    assert len(types) <= MAX_EVENT_TYPES + 1
    assert value(samples, "switchboard_session_events_total", type="response.done") == 3
    assert value(samples, "switchboard_session_events_total", type="other") >= 52
    total = sum(v for (n, _), v in samples.items() if n == "switchboard_session_events_total")
    assert total == 3 + 2 + MAX_EVENT_TYPES + 50


def test_worker_metrics_count_task_attempts_by_state() -> None:
    registry = CollectorRegistry()
    worker = WorkerMetrics(registry)
    worker.task_started("t1")
    worker.task_finished("t1", "switchboard.route_call", "SUCCESS")
    worker.task_started("t2")
    worker.task_finished("t2", "switchboard.route_call", "RETRY")
    worker.task_finished("t3", "switchboard.post_call", "FAILURE")  # start never seen
    worker.call_setup_s.observe(0.004)
    samples = scrape(registry)
    tasks = "switchboard_tasks_total"
    assert value(samples, tasks, task="switchboard.route_call", state="success") == 1
    assert value(samples, tasks, task="switchboard.route_call", state="retry") == 1
    assert value(samples, tasks, task="switchboard.post_call", state="failure") == 1
    duration = "switchboard_task_duration_seconds_count"
    assert value(samples, duration, task="switchboard.route_call") == 2
    assert (
        "switchboard_task_duration_seconds_count",
        frozenset({("task", "switchboard.post_call")}),
    ) not in samples
    assert value(samples, "switchboard_call_setup_latency_seconds_bucket", le="0.005") == 1
    assert value(samples, "switchboard_call_setup_latency_seconds_bucket", le="0.002") == 0
