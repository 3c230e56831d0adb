"""Chaos on the way in and on the wire: webhooks duplicated, delayed, reordered and skewed;
REST 5xx/429 storms; sideband drops; malformed sideband events; a tool that hangs.

One stack serves the module (Redis, the emulator, ingress, a Celery worker and a session
runner, all real processes); each test injects one fault, places real calls, waits
until both sides consider every call over and reconciles them (``tests.support.reconcile``),
tool runs by tool-call id included. The Redis holds the calls of the tests before too,
all over by then: the cluster-wide check (cost totals, live index) covers every call
the stack placed.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import redis

from shared import keys
from tests.chaos.conftest import size
from tests.support.chaos_stack import ChaosStack, HeldDelivery, StackOptions, chaos_stack
from tests.support.procs import wait_until
from tests.support.reconcile import Reconciliation, reconcile, wait_settled, wait_slots_free
from tests.support.webhook_sender import metric_value

pytestmark = pytest.mark.timeout(600 if size(0, 1) else 120)

MIX = ("quick-question", "order-status", "transfer-to-human", "hanging-tool")
NO_FAULTS = {
    "rest_5xx_rate": 0.0,
    "rest_429_rate": 0.0,
    "ws_drop_rate": 0.0,
    "webhook_duplicate_rate": 0.0,
    "webhook_delay_ms": 0.0,
    "malformed_event_rate": 0.0,
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChaosStack]:
    workdir = Path(tmp_path_factory.mktemp("chaos-delivery"))
    with chaos_stack(workdir, StackOptions(ring_timeout_s=10.0, max_calls=200)) as running:
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
    stack.emulator.set_faults(**NO_FAULTS)
    stack.relay.holding = False
    stack.relay.take_held()


def place_mix(stack: ChaosStack, count: int, scenarios: tuple[str, ...] = MIX) -> list[str]:
    return [stack.place(scenarios[n % len(scenarios)]) for n in range(count)]


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


def metrics_text(stack: ChaosStack) -> str:
    return httpx.get(f"{stack.ingress_url}/metrics", timeout=10).text


def hold(stack: ChaosStack, count: int) -> tuple[list[str], list[HeldDelivery]]:
    """Place ``count`` calls while the relay holds their webhooks; the calls and webhooks."""
    stack.relay.holding = True
    call_ids = place_mix(stack, count)
    wait_until(lambda: len(stack.relay.held) >= count, 20.0, "webhooks held by the relay")
    stack.relay.holding = False
    return call_ids, stack.relay.take_held()


def early_in_second() -> None:
    """Wait for a fresh wall-clock second, so ``now`` cannot tick before the ingress reads it."""
    wait_until(lambda: time.time() % 1.0 < 0.5, 2.0, "the first half of a second")


def test_duplicate_and_delayed_webhooks_are_acted_on_once(
    stack: ChaosStack, rdb: redis.Redis
) -> None:
    before = metric_value(metrics_text(stack), "switchboard_webhooks_total", result="duplicate")
    stack.emulator.set_faults(webhook_duplicate_rate=1.0, webhook_delay_ms=300)
    call_ids = place_mix(stack, size(6, 40))

    result = settle(stack, rdb, call_ids)

    result.assert_clean()
    assert result.accounted == len(call_ids)
    for call_id in call_ids:
        deliveries = stack.emulator.call(call_id, events=False)["webhook_deliveries"]
        assert len(deliveries) >= 2
        assert {d["status"] for d in deliveries} == {200}
    after = metric_value(metrics_text(stack), "switchboard_webhooks_total", result="duplicate")
    assert after - before >= len(call_ids)


def test_reordered_and_replayed_webhooks_are_acted_on_once(
    stack: ChaosStack, rdb: redis.Redis
) -> None:
    call_ids, held = hold(stack, size(6, 40))
    # The network delivers each webhook three times, in a shuffled order, concurrently;
    # one copy of each comes with a new webhook-id (a redelivered event, same call).
    copies = [d for d in held for _ in range(2)]
    copies += [HeldDelivery(d.webhook_id + "_again", d.body) for d in held]
    random.Random(7).shuffle(copies)
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda d: stack.relay.deliver(d).status_code, copies))

    assert statuses == [200] * len(copies)
    result = settle(stack, rdb, call_ids)
    result.assert_clean()
    assert result.accounted == len(call_ids)
    assert sum(result.accept_statuses.values()) == len(call_ids)


@pytest.mark.parametrize(("skew_s", "status"), [(-299, 200), (299, 200), (-301, 400), (301, 400)])
def test_timestamps_at_the_edge_of_the_tolerance(
    stack: ChaosStack, rdb: redis.Redis, skew_s: int, status: int
) -> None:
    [call_id], [delivery] = hold(stack, 1)
    early_in_second()
    response = stack.relay.deliver(delivery, skew_s=skew_s)

    assert response.status_code == status, response.text
    if status == 400:
        assert response.json()["error"]["code"] == "invalid_signature"
        assert rdb.exists(keys.call_record(call_id)) == 0
        assert rdb.keys(f"*{call_id}*") == []
        # Refusing the stale copy poisoned nothing: the fresh delivery is acted on.
        assert stack.relay.deliver(delivery).status_code == 200
    result = settle(stack, rdb, [call_id])
    result.assert_clean()


def test_rest_5xx_and_429_storms_are_retried_without_deciding_twice(
    stack: ChaosStack, rdb: redis.Redis
) -> None:
    stack.emulator.set_faults(rest_5xx_rate=0.3, rest_429_rate=0.3, retry_after_s=0.05)
    # Each first accept meets a fault with p = 0.51: with 12 calls, the chance that none
    # does (and the check below cannot tell) is 0.49 ** 12, about 2 in 10,000.
    call_ids = place_mix(stack, size(12, 40))

    result = settle(stack, rdb, call_ids)

    result.assert_clean()
    assert stack.recorder is not None
    answers = stack.recorder.counts("accept")
    assert answers[503] + answers[429] > 0, answers
    assert result.accounted == len(call_ids)


def test_sideband_drops_mid_call_reattach_without_overlap(
    stack: ChaosStack, rdb: redis.Redis
) -> None:
    stack.emulator.set_faults(ws_drop_rate=0.05)
    call_ids = place_mix(stack, size(4, 30), ("steady-call", "steady-order", "order-status"))

    result = settle(stack, rdb, call_ids, timeout_s=120.0)

    result.assert_clean()
    attachments = [len(stack.emulator.call(c, events=False)["attachments"]) for c in call_ids]
    assert max(attachments) >= 2, "no sideband was dropped: the fault did not bite"


def test_malformed_sideband_events_leave_sessions_running_or_ending_cleanly(
    stack: ChaosStack, rdb: redis.Redis
) -> None:
    stack.emulator.set_faults(malformed_event_rate=0.2)
    call_ids = place_mix(stack, size(4, 30))

    result = settle(stack, rdb, call_ids)

    result.assert_clean()
    sent = sum(stack.emulator.call(c, events=False)["malformed_sent"] for c in call_ids)
    assert sent > 0, "no malformed event was sent: the fault did not bite"
    assert set(result.end_reasons) <= {"caller_hangup", "transferred", "agent_hangup"}
    assert all(child.alive() for child in stack.runners.values())


def test_a_hanging_tool_times_out_once_and_the_call_goes_on(
    stack: ChaosStack, rdb: redis.Redis
) -> None:
    call_ids = place_mix(stack, size(3, 20), ("hanging-tool",))

    result = settle(stack, rdb, call_ids)

    result.assert_clean()
    assert result.tool_calls == len(call_ids)
    assert result.tool_outputs == len(call_ids)
    assert result.tool_runs == len(call_ids)  # each tool call ran once (reconcile: per id)
    assert result.end_reasons == {"caller_hangup": len(call_ids)}
