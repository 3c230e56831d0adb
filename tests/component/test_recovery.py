"""Recovery of cut-off routings (``workers.recovery``): the sweep on a real Redis with a
clock the test moves, then a real ``switchboard worker`` recovering calls left behind.

The sweep tests need no Celery: they check what it publishes (the control queue's
messages, the pending list) and what it frees. The last test starts a control worker
whose own recovery loop finds an unclaimed call with no message, a claim whose worker
died and a finished call still holding a slot, and puts each right.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from shared import keys
from shared.models import CallRecord, CallState
from shared.queues import CONTROL_QUEUE, ROUTE_CALL_TASK
from shared.store import CallStore
from shared.task_message import TaskMessages
from tests.support.control import create_incoming, policy_text, write_policy
from tests.support.emulator import EmulatorHandle, running_emulator
from tests.support.procs import Child, spawn, switchboard_argv, wait_until
from workers.admission import Admission
from workers.celery_app import TASK_TIME_LIMIT_S, VISIBILITY_TIMEOUT_S
from workers.recovery import Action, Recovery, RecoveryConfig, routing_action
from workers.tasks import WEBHOOK_BACKOFF

CONFIG = RecoveryConfig(dead_after_s=1.0)


class Clock:
    """Wall-clock time moved ``offset_s`` ahead by the test."""

    def __init__(self) -> None:
        self.offset_s = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset_s


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def recovery(redis_client: redis.Redis, clock: Clock) -> Recovery:
    def up_long_enough() -> bool:
        # The dead-worker rule waits until Redis has been up for ``dead_after_s``.
        return int(redis_client.info("server")["uptime_in_seconds"]) >= CONFIG.dead_after_s

    wait_until(up_long_enough, 5.0, "redis uptime")
    return Recovery(redis_client, "sweeper@test", CONFIG, clock=clock)


def queued(rdb: redis.Redis) -> list[dict[str, Any]]:
    """The headers of the messages in the control queue, next to be consumed first."""
    raws: list[str] = rdb.lrange(CONTROL_QUEUE, 0, -1)  # type: ignore[assignment]
    return [orjson.loads(raw)["headers"] for raw in reversed(raws)]


def claimed(store: CallStore, call_id: str, worker: str, ran_at: float) -> None:
    fields = {"route_claim": "task-1", "route_worker": worker, "route_run_at": ran_at}
    assert store.transition(call_id, CallState.INCOMING, CallState.ACCEPTING, fields).applied


def test_an_unclaimed_call_without_a_message_is_queued_again_once(
    recovery: Recovery, redis_client: redis.Redis, clock: Clock
) -> None:
    store = CallStore(redis_client)
    lost = create_incoming(store, "rtc_lost").id
    waiting = create_incoming(store, "rtc_waiting").id
    redis_client.lpush(CONTROL_QUEUE, TaskMessages().build(ROUTE_CALL_TASK, [waiting], "control"))

    assert recovery.sweep().requeued == []  # both just arrived
    clock.offset_s = CONFIG.incoming_after_s + 0.5
    assert recovery.sweep().requeued == [lost]  # the other's message is still queued
    first, _ = queued(redis_client)
    assert (first["task"], first["argsrepr"]) == (ROUTE_CALL_TASK, repr([lost]))
    assert recovery.sweep().requeued == []  # its new message is queued now

    redis_client.delete(CONTROL_QUEUE)  # taken by a worker that died at once
    clock.offset_s += CONFIG.incoming_after_s
    assert sorted(recovery.sweep().requeued) == [lost, waiting]
    assert len({h["id"] for h in queued(redis_client)}) == 2


def test_a_claim_cut_off_with_its_worker_is_resumed_under_the_same_task_id(
    recovery: Recovery, redis_client: redis.Redis, clock: Clock
) -> None:
    store, now_s = CallStore(redis_client), time.time()
    redis_client.zadd(keys.CONTROL_WORKERS, {"gone@host": now_s - 30, "alive@host": now_s})
    orphan = create_incoming(store, "rtc_orphan").id
    claimed(store, orphan, "gone@host", now_s)
    busy = create_incoming(store, "rtc_busy").id
    claimed(store, busy, "alive@host", now_s)

    clock.offset_s = CONFIG.resume_after_s - 1
    assert recovery.sweep().resumed == []  # may be between two runs of a slot wait
    clock.offset_s = CONFIG.resume_after_s + 0.5
    redis_client.zadd(keys.CONTROL_WORKERS, {"alive@host": clock()})
    assert recovery.sweep().resumed == [orphan]
    [message] = queued(redis_client)
    assert (message["id"], message["argsrepr"]) == ("task-1", repr([orphan]))
    assert recovery.sweep().resumed == []

    # A live worker's routing is left alone until no run could still be under way (and
    # by then the first resume, taken off the queue, is lost too).
    redis_client.delete(CONTROL_QUEUE)
    clock.offset_s = CONFIG.stale_after_s + 1
    redis_client.zadd(keys.CONTROL_WORKERS, {"alive@host": clock()})
    assert sorted(recovery.sweep().resumed) == [busy, orphan]


def test_an_accept_never_handed_to_the_runners_is_handed_over(
    recovery: Recovery, redis_client: redis.Redis, clock: Clock
) -> None:
    store = CallStore(redis_client)
    calls = [create_incoming(store, f"rtc_accepted_{n}").id for n in range(3)]
    for call_id in calls:
        claimed(store, call_id, "alive@host", time.time())
        store.update(call_id, {"accepted_at": time.time()})
    redis_client.set(keys.call_lease(calls[1]), "runner-1:1")
    redis_client.lpush(keys.PENDING_CALLS, calls[2])

    assert recovery.sweep().handed_over == []
    clock.offset_s = CONFIG.handover_after_s + 0.5
    assert recovery.sweep().handed_over == [calls[0]]
    assert recovery.sweep().handed_over == []
    assert redis_client.lrange(keys.PENDING_CALLS, 0, -1) == [calls[2], calls[0]]


def test_nothing_is_handed_over_while_the_runners_are_behind(
    redis_client: redis.Redis, clock: Clock
) -> None:
    store = CallStore(redis_client)
    config = RecoveryConfig(dead_after_s=1.0, queue_scan_limit=5)
    recovery = Recovery(redis_client, "sweeper@test", config, clock=clock)
    lost = create_incoming(store, "rtc_lost").id
    claimed(store, lost, "alive@host", time.time())
    store.update(lost, {"accepted_at": time.time()})
    backlog = [create_incoming(store, f"rtc_queued_{n}").id for n in range(6)]
    redis_client.rpush(keys.PENDING_CALLS, *backlog)

    clock.offset_s = CONFIG.handover_after_s + 0.5
    assert recovery.sweep().handed_over == []  # six waiting: the runners are behind
    redis_client.lpop(keys.PENDING_CALLS, 2)
    assert recovery.sweep().handed_over == [lost]
    assert redis_client.lrange(keys.PENDING_CALLS, 0, -1) == [*backlog[2:], lost]


def test_a_live_call_no_runner_holds_is_handed_to_the_runners_again(
    recovery: Recovery, redis_client: redis.Redis, clock: Clock
) -> None:
    store = CallStore(redis_client)
    calls = [create_incoming(store, f"rtc_live_{n}").id for n in range(3)]
    for call_id in calls:
        claimed(store, call_id, "alive@host", time.time())
        store.update(call_id, {"accepted_at": time.time()})
        assert store.transition(call_id, CallState.ACCEPTING, CallState.ACTIVE).applied
    redis_client.set(keys.call_lease(calls[1]), "7:runner-1")  # held: left alone
    redis_client.lpush(keys.PENDING_CALLS, calls[2])  # already waiting for a runner

    assert recovery.sweep().orphans == []  # a runner may be taking it over right now
    clock.offset_s = CONFIG.orphan_after_s + 0.5
    assert recovery.sweep().orphans == [calls[0]]
    assert redis_client.lrange(keys.PENDING_CALLS, 0, -1) == [calls[2], calls[0]]
    assert recovery.sweep().orphans == []  # on the pending list now
    record = store.get(calls[0])
    assert record is not None
    assert record.state is CallState.ACTIVE


def test_finished_calls_give_their_slots_and_live_entries_back(
    recovery: Recovery, redis_client: redis.Redis, clock: Clock
) -> None:
    store, admission = CallStore(redis_client), Admission(redis_client)
    live, ended = create_incoming(store, "rtc_live").id, create_incoming(store, "rtc_ended").id
    for call_id in (live, ended, "rtc_no_record"):
        admission.acquire(call_id, "support", max_calls=None, profile_cap=None)
    store.transition(ended, CallState.INCOMING, CallState.REJECTED, {"end_reason": "blocked"})
    redis_client.zadd(keys.LIVE_CALLS, {ended: time.time()})  # as if its removal was lost

    assert recovery.sweep().released == ["rtc_no_record"]  # the ender may release it yet
    assert redis_client.zrange(keys.LIVE_CALLS, 0, -1) == [live]
    clock.offset_s = CONFIG.release_after_s
    assert recovery.sweep().released == [ended]
    assert [h.call_id for h in admission.holders()] == [live]
    assert redis_client.zrange(keys.LIVE_CALLS, 0, -1) == [live]


def test_one_worker_sweeps_at_a_time(redis_client: redis.Redis) -> None:
    first, second = (Recovery(redis_client, name, CONFIG) for name in ("w1@host", "w2@host"))
    assert first.tick() is not None
    assert second.tick() is None
    assert first.tick() is not None  # renewed by its holder
    assert set(redis_client.zrange(keys.CONTROL_WORKERS, 0, -1)) == {"w1@host", "w2@host"}
    first.step_down()
    assert second.tick() is not None
    assert first.tick() is None


@pytest.mark.parametrize(
    ("state", "extra", "age_s", "trusted", "action"),
    [
        ("incoming", {}, 1.0, True, Action.NONE),
        ("incoming", {}, 4.0, True, Action.REQUEUE),
        ("incoming", {"route_requeued_at": -1.0}, 4.0, True, Action.NONE),
        ("accepting", {"route_worker": "gone"}, 7.0, True, Action.RESUME),
        ("accepting", {"route_worker": "gone"}, 7.0, False, Action.NONE),
        ("accepting", {"route_worker": "alive"}, 7.0, True, Action.NONE),
        ("accepting", {"route_worker": "unknown"}, 7.0, True, Action.NONE),
        ("accepting", {"route_worker": "alive"}, 61.0, True, Action.RESUME),
        ("accepting", {"route_worker": "gone", "accepted_at": -6.0}, 7.0, True, Action.HAND_OVER),
        ("accepting", {"route_worker": "gone", "accepted_at": -1.0}, 7.0, True, Action.NONE),
        ("active", {"route_worker": "gone"}, 100.0, True, Action.NONE),
    ],
)
def test_routing_rules(
    state: str, extra: dict[str, Any], age_s: float, trusted: bool, action: Action
) -> None:
    # Times are relative to now = 0: the call was created and last run ``age_s`` ago.
    fields = {"route_claim": "t", "route_run_at": -age_s} if state != "incoming" else {}
    record = CallRecord.model_validate(
        {"id": "rtc_x", "state": state, "created_at": -age_s, **fields, **extra}
    )
    beats = {"gone": -age_s, "alive": 0.0}
    assert routing_action(record, 0.0, beats, trusted, RecoveryConfig()) is action


def test_the_broker_returns_messages_only_after_any_countdown_and_run() -> None:
    assert WEBHOOK_BACKOFF.max_s + TASK_TIME_LIMIT_S < VISIBILITY_TIMEOUT_S


# -- a real control worker -------------------------------------------------------------


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorHandle]:
    with running_emulator(time_scale=0.05) as handle:
        yield handle


@pytest.fixture(scope="module")
def worker(
    redis_server: str, emu: EmulatorHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Child]:
    folder = tmp_path_factory.mktemp("recovery-worker")
    policy = Path(folder) / "policy.yaml"
    write_policy(policy, policy_text())
    client = redis.Redis.from_url(redis_server)
    client.flushall()  # the sweep would act on calls other tests left behind
    client.close()
    env = {
        "SWITCHBOARD_REDIS_URL": redis_server,
        "SWITCHBOARD_CONFIG": str(policy),
        "OPENAI_BASE_URL": emu.api_url,
        "OPENAI_API_KEY": emu.api_key,
        "SWITCHBOARD_RECOVERY_EVERY_S": "0.2",
    }
    argv = switchboard_argv("worker", "--queues", CONTROL_QUEUE, "--concurrency", "1")
    child = spawn("recovery-worker", argv, folder, env=env)
    try:
        wait_until(lambda: " ready." in child.tail(200), 60.0, "celery worker ready", child)
        yield child
    finally:
        child.stop()


def test_a_control_worker_recovers_calls_left_behind(
    worker: Child, emu: EmulatorHandle, redis_server: str
) -> None:
    rdb = redis.Redis.from_url(redis_server, decode_responses=True)
    store, admission, now_s = CallStore(rdb), Admission(rdb), time.time()
    # Its message was lost: recorded 10 s ago, never claimed.
    lost = create_incoming(store, emu.place_call(scenario="quick-question")).id
    store.update(lost, {"created_at": now_s - 10})
    # Its worker died mid-accept 10 s ago, holding a slot.
    orphan = create_incoming(store, emu.place_call(scenario="quick-question")).id
    rdb.zadd(keys.CONTROL_WORKERS, {"switchboard-gone@nowhere": now_s - 10})
    claimed(store, orphan, "switchboard-gone@nowhere", now_s - 10)
    admission.acquire(orphan, "support", max_calls=None, profile_cap=None)
    # Ended without giving its slot back.
    ended = create_incoming(store, emu.place_call(scenario="quick-question")).id
    admission.acquire(ended, "support", max_calls=None, profile_cap=None)
    earlier = CallStore(rdb, clock=lambda: now_s - 10)  # ten seconds ago
    earlier.transition(ended, CallState.INCOMING, CallState.FAILED, {"end_reason": "error"})

    def accepted() -> bool:
        records = [store.get(call_id) for call_id in (lost, orphan)]
        return all(record is not None and record.accepted_at is not None for record in records)

    try:
        wait_until(accepted, 15.0, "both calls accepted", worker)
        resumed = store.get(orphan)
        assert resumed is not None
        extra = resumed.model_extra or {}
        assert extra["route_claim"] == "task-1"  # the same routing, resumed
        assert extra["route_worker"] in rdb.zrange(keys.CONTROL_WORKERS, 0, -1)
        assert extra["route_worker"] != "switchboard-gone@nowhere"
        for call_id in (lost, orphan):
            assert emu.call(call_id, events=False)["state"] == "active"
        assert sorted(h.call_id for h in admission.holders()) == sorted([lost, orphan])
    finally:
        for call_id in (lost, orphan):
            admission.release(call_id)
        rdb.close()
