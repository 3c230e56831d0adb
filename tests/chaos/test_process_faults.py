"""Chaos on the processes: Redis killed and restarted (append-only) while calls are
being routed, a session runner SIGKILLed with live calls, and a Celery worker SIGKILLed
in the middle of accepts (its routings are resumed by ``workers.recovery``).

One stack serves the module (two runners, so a dead runner's calls have somewhere to
go); each test kills something, starts it again, and reconciles its calls.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from shared import keys
from tests.chaos.conftest import size
from tests.support.chaos_stack import ChaosStack, StackOptions, chaos_stack
from tests.support.procs import wait_until
from tests.support.reconcile import Reconciliation, reconcile, wait_settled, wait_slots_free

pytestmark = pytest.mark.timeout(600 if size(0, 1) else 150)

MIX = ("quick-question", "order-status", "transfer-to-human", "steady-order")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChaosStack]:
    workdir = Path(tmp_path_factory.mktemp("chaos-processes"))
    options = StackOptions(runners=2, ring_timeout_s=15.0, max_calls=200)
    with chaos_stack(workdir, options) as running:
        yield running


@pytest.fixture
def rdb(stack: ChaosStack) -> Iterator[redis.Redis]:
    client = stack.client()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(autouse=True)
def clear_faults(stack: ChaosStack) -> Iterator[None]:
    yield
    stack.emulator.set_faults(rest_latency_ms_min=0.0, rest_latency_ms_max=0.0)


def settle(
    stack: ChaosStack, rdb: redis.Redis, call_ids: list[str], timeout_s: float = 90.0
) -> Reconciliation:
    wait_settled(stack.emulator, rdb, call_ids, timeout_s)
    wait_slots_free(rdb, 10.0)
    return reconcile(stack.emulator, rdb, call_ids, recorder=stack.recorder)


def place_mix(stack: ChaosStack, count: int) -> list[str]:
    return [stack.place(MIX[n % len(MIX)]) for n in range(count)]


def accept_requests(stack: ChaosStack) -> int:
    assert stack.recorder is not None
    return sum(stack.recorder.counts("accept").values())


@pytest.mark.chaos
def test_redis_killed_and_restarted_while_routing_loses_no_call(
    stack: ChaosStack, rdb: redis.Redis
) -> None:
    stack.emulator.set_faults(rest_latency_ms_min=100.0, rest_latency_ms_max=300.0)
    call_ids = place_mix(stack, size(6, 30))
    wait_until(
        lambda: rdb.exists(*(keys.call_record(c) for c in call_ids)) >= 2,
        20.0,
        "the first calls recorded",
    )

    stack.restart_redis(signal.SIGKILL)
    stack.emulator.set_faults(rest_latency_ms_min=0.0, rest_latency_ms_max=0.0)

    result = settle(stack, rdb, call_ids, timeout_s=120.0)
    result.assert_clean()
    assert result.accounted == len(call_ids)
    assert all(child.alive() for child in stack.all_children())


def test_a_runner_killed_with_live_calls_hands_them_over_intact(
    stack: ChaosStack, rdb: redis.Redis
) -> None:
    call_ids = [stack.place("steady-order") for _ in range(size(4, 30))]
    wait_until(
        lambda: all(rdb.hget(keys.call_record(c), "state") == "active" for c in call_ids),
        30.0,
        "all calls active",
    )
    owners = [rdb.hget(keys.call_record(c), "owner") for c in call_ids]
    victim = max(set(owners), key=owners.count)
    assert victim is not None
    runs_before = len(stack.tool_runs())

    stack.kill_runner(victim)
    stack.runners.pop(victim)
    stack.start_runner()

    result = reconcile_after(stack, rdb, call_ids)
    result.assert_clean()
    moved = [c for c, owner in zip(call_ids, owners, strict=True) if owner == victim]
    for call_id in moved:
        assert len(stack.emulator.call(call_id, events=False)["attachments"]) >= 2
    assert result.end_reasons == {"caller_hangup": len(call_ids)}
    assert len(stack.tool_runs()) - runs_before <= result.tool_calls


def reconcile_after(stack: ChaosStack, rdb: redis.Redis, call_ids: list[str]) -> Reconciliation:
    return settle(stack, rdb, call_ids, timeout_s=120.0)


@pytest.mark.chaos
def test_a_worker_killed_in_the_middle_of_accepts_loses_no_call(
    stack: ChaosStack, rdb: redis.Redis
) -> None:
    # Slow answers keep accepts in flight long enough to kill the worker under them.
    stack.emulator.set_faults(rest_latency_ms_min=300.0, rest_latency_ms_max=600.0)
    before = accept_requests(stack)
    call_ids = place_mix(stack, size(6, 30))
    wait_until(lambda: accept_requests(stack) > before, 20.0, "the first accept answered")

    stack.kill_worker(0)
    stack.workers.pop(0)
    stack.start_worker()

    result = settle(stack, rdb, call_ids, timeout_s=120.0)
    result.assert_clean()
    assert result.accounted == len(call_ids)
