"""Chaos on the processes: Redis killed and restarted (append-only) while calls are
being routed, a session runner SIGKILLed with live calls, and a Celery worker SIGKILLed
in the middle of accepts (its routings are resumed by ``workers.recovery``).

One stack serves the module (two runners, so a dead runner's calls have somewhere to
go); each test kills something, starts it again, and reconciles its calls, tool runs by
tool-call id included. The Redis holds the calls of the tests before too, all over by
then: the cluster-wide check (cost totals, live index) covers every call the stack placed.
"""

from __future__ import annotations

import signal
import time
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
    return reconcile(
        stack.emulator,
        rdb,
        call_ids,
        recorder=stack.recorder,
        tool_runs=stack.tool_run_ids(),
        cluster_calls=stack.placed,
    )


def place_mix(stack: ChaosStack, count: int) -> list[str]:
    return [stack.place(MIX[n % len(MIX)]) for n in range(count)]


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


REDIS_AWAY_S = 3.0
"""An outage longer than a runner's self-fence (1.5 s without a renewal): every runner
lets its calls go, and takes them on again once Redis is back."""


@pytest.mark.chaos
def test_tool_calls_made_while_redis_is_away_are_answered_by_the_next_runner(
    stack: ChaosStack, rdb: redis.Redis
) -> None:
    """The function calls come while Redis is away: the runner that hears one cannot
    claim its tool, and lets the call go before Redis is back; whoever takes the call on
    runs the tool once and answers it."""
    emu = stack.emulator
    call_ids = [stack.place("steady-order") for _ in range(size(4, 20))]

    def first_reply_played() -> bool:
        return any(
            event["type"] == "output_audio_buffer.stopped"
            for call_id in call_ids
            for event in emu.call(call_id)["events_sent"]
        )

    # The caller's next turn, the order number, comes 0.4 s after the agent's first reply
    # has played, and the model's lookup right after it: within the second or so that
    # runners go on hearing their calls with Redis away, before they let them go.
    wait_until(first_reply_played, 30.0, "a call's first reply played")
    away_at = time.time()
    stack.redis_proc.stop(signal.SIGKILL)
    time.sleep(REDIS_AWAY_S)  # the outage itself, not a wait for anything
    stack.redis_proc.start()
    back_at = time.time()

    result = settle(stack, rdb, call_ids, timeout_s=120.0)
    result.assert_clean()
    truths = [emu.call(call_id, events=False) for call_id in call_ids]
    heard_meanwhile = [
        issued["call_id"]
        for truth in truths
        for issued in truth["function_calls"]
        if issued["delivered"] and away_at <= issued["at"] <= back_at
    ]
    assert heard_meanwhile, "no function call reached a runner while Redis was away"
    for truth in truths:  # every function call a runner heard got its output
        heard = {issued["call_id"] for issued in truth["function_calls"] if issued["delivered"]}
        assert heard <= {output["call_id"] for output in truth["tool_outputs"]}, truth
    assert all(child.alive() for child in stack.all_children())


@pytest.mark.chaos
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

    stack.kill_runner(victim)
    stack.runners.pop(victim)
    stack.start_runner()

    result = reconcile_after(stack, rdb, call_ids)
    result.assert_clean()
    moved = [c for c, owner in zip(call_ids, owners, strict=True) if owner == victim]
    for call_id in moved:
        assert len(stack.emulator.call(call_id, events=False)["attachments"]) >= 2
    assert result.end_reasons == {"caller_hangup": len(call_ids)}
    assert result.tool_calls >= len(call_ids)
    assert result.tool_runs  # the per-id check saw runs (at most one per tool call)


def reconcile_after(stack: ChaosStack, rdb: redis.Redis, call_ids: list[str]) -> Reconciliation:
    return settle(stack, rdb, call_ids, timeout_s=120.0)


@pytest.mark.chaos
def test_a_worker_killed_in_the_middle_of_accepts_loses_no_call(
    stack: ChaosStack, rdb: redis.Redis
) -> None:
    # Slow answers keep accepts in flight long enough to kill the worker under them.
    stack.emulator.set_faults(rest_latency_ms_min=300.0, rest_latency_ms_max=600.0)
    recorder = stack.recorder
    assert recorder is not None
    call_ids = place_mix(stack, size(6, 30))
    wait_until(lambda: recorder.in_flight("accept") > 0, 20.0, "an accept request in flight")

    killing_at = time.monotonic()
    stack.kill_worker(0)
    dead_at = time.monotonic()
    stack.workers.pop(0)
    stack.start_worker()

    result = settle(stack, rdb, call_ids, timeout_s=120.0)
    result.assert_clean()
    assert result.accounted == len(call_ids)
    # An accept was asked before the kill and answered only once the worker was dead.
    cut_off = [e for e in recorder.spanning("accept", killing_at) if e.answered_at >= dead_at]
    assert cut_off, "no accept was in flight when the worker died"
