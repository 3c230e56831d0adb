"""The call-state store on a real Redis: create-if-absent, compare-and-set, races, faults."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import pytest
import redis
import redis.asyncio

from shared import keys
from shared.errors import RetryableError
from shared.models import CallRecord, CallState, InvalidTransitionError
from shared.store import (
    AsyncCallStore,
    CallStore,
    ChangeResult,
    ClaimOutcome,
    CreateResult,
    QueuedMessage,
    StoreUnavailable,
)
from tests.support.ports import free_port

S = CallState
T = TypeVar("T")


def new_record(call_id: str = "rtc_1", webhook_id: str = "wh_1", **extra: Any) -> CallRecord:
    return CallRecord.model_validate(
        {"id": call_id, "webhook_id": webhook_id, "from": "+1415", "to": "+1800"}
        | {"created_at": 1000.0}
        | extra
    )


def snapshot(client: redis.Redis) -> dict[str, Any]:
    """Every key with its type and value, to prove an operation changed nothing."""
    state: dict[str, Any] = {}
    for key in sorted(client.keys("*")):
        kind = client.type(key)
        if kind == "hash":
            state[key] = client.hgetall(key)
        elif kind == "list":
            state[key] = client.lrange(key, 0, -1)
        elif kind == "zset":
            state[key] = client.zrange(key, 0, -1, withscores=True)
        else:
            state[key] = client.get(key)
    return state


@pytest.fixture
def store(redis_client: redis.Redis) -> CallStore:
    return CallStore(redis_client, clock=lambda: 2000.0)


@pytest.fixture
async def async_store(redis_url: str) -> AsyncIterator[AsyncCallStore]:
    client = redis.asyncio.Redis.from_url(redis_url)
    yield AsyncCallStore(client)
    await client.aclose()


def race(count: int, work: Callable[[int], T]) -> list[T]:
    """Run ``work(i)`` on ``count`` threads released together; return the results."""
    barrier = threading.Barrier(count)
    results: list[T | None] = [None] * count
    errors: list[BaseException] = []

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = work(index)
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors
    return [r for r in results if r is not None]


def test_create_then_get_returns_the_same_record(store: CallStore, redis_client: redis.Redis):
    record = new_record()
    assert store.create_incoming(record) is CreateResult.CREATED
    assert store.get("rtc_1") == record
    assert store.get("rtc_unknown") is None
    ttl_s = redis_client.ttl(keys.call_record("rtc_1"))
    assert keys.CALL_TTL_S - 5 <= ttl_s <= keys.CALL_TTL_S
    dedupe_ttl_s = redis_client.ttl(keys.webhook_dedupe("rtc_1", "wh_1"))
    assert keys.WEBHOOK_DEDUPE_TTL_S - 5 <= dedupe_ttl_s <= keys.WEBHOOK_DEDUPE_TTL_S


def test_get_many_reads_the_records_that_exist_in_order(store: CallStore) -> None:
    first, second = new_record("rtc_1", "wh_1"), new_record("rtc_2", "wh_2")
    for record in (first, second):
        assert store.create_incoming(record) is CreateResult.CREATED
    assert store.get_many(["rtc_2", "rtc_unknown", "rtc_1"]) == [second, first]
    assert store.get_many([]) == []


def test_duplicates_change_nothing_and_enqueue_nothing(
    store: CallStore, redis_client: redis.Redis
) -> None:
    message = QueuedMessage("control", b"route rtc_1")
    assert store.create_incoming(new_record(), enqueue=message) is CreateResult.CREATED
    before = snapshot(redis_client)
    again = store.create_incoming(new_record(profile="x"), enqueue=message)
    assert again is CreateResult.DUPLICATE_WEBHOOK
    other_delivery = new_record(webhook_id="wh_2", to="+1999")
    assert store.create_incoming(other_delivery, enqueue=message) is CreateResult.DUPLICATE_CALL
    assert snapshot(redis_client) == before
    assert redis_client.lrange("control", 0, -1) == ["route rtc_1"]


def test_only_a_new_incoming_record_with_a_webhook_id_can_be_created(
    store: CallStore, redis_client: redis.Redis
) -> None:
    with pytest.raises(ValueError, match="incoming"):
        store.create_incoming(new_record(state="active"))
    with pytest.raises(ValueError, match="webhook id"):
        store.create_incoming(new_record(webhook_id=None))
    assert redis_client.dbsize() == 0


def test_concurrent_creates_of_one_call_yield_exactly_one_record_and_message(
    redis_url: str, redis_client: redis.Redis
) -> None:
    pool = redis.ConnectionPool.from_url(redis_url)
    shared_store = CallStore(redis.Redis(connection_pool=pool))

    def create(i: int) -> CreateResult:
        # Half repeat one delivery, half are other deliveries of the same call.
        record = new_record(webhook_id=f"wh_{i % 2 * i}")
        return shared_store.create_incoming(record, enqueue=QueuedMessage("control", b"m"))

    results = race(16, create)
    pool.disconnect()
    assert results.count(CreateResult.CREATED) == 1
    assert redis_client.llen("control") == 1
    assert len(redis_client.keys("sb:call:*")) == 1


async def test_concurrent_async_creates_yield_exactly_one(
    async_store: AsyncCallStore, redis_client: redis.Redis
) -> None:
    message = QueuedMessage("control", b"m")
    results = await asyncio.gather(
        *(
            async_store.create_incoming(new_record(webhook_id=f"wh_{i}"), enqueue=message)
            for i in range(20)
        )
    )
    assert results.count(CreateResult.CREATED) == 1
    assert results.count(CreateResult.DUPLICATE_CALL) == 19
    assert redis_client.llen("control") == 1


def test_a_cas_race_has_exactly_one_winner(store: CallStore, redis_url: str) -> None:
    store.create_incoming(new_record())
    pool = redis.ConnectionPool.from_url(redis_url)
    racer = CallStore(redis.Redis(connection_pool=pool))

    def take(i: int) -> tuple[int, ChangeResult]:
        return i, racer.transition("rtc_1", S.INCOMING, S.ACCEPTING, {"owner": f"w{i}"})

    results = race(16, take)
    pool.disconnect()
    winners = [i for i, result in results if result.applied]
    assert len(winners) == 1
    assert all(result.state is S.ACCEPTING for _, result in results)
    record = store.get("rtc_1")
    assert record is not None
    assert record.owner == f"w{winners[0]}"


def test_transition_writes_fields_only_when_it_applies(
    store: CallStore, redis_client: redis.Redis
) -> None:
    store.create_incoming(new_record())
    applied = store.transition("rtc_1", S.INCOMING, S.ACCEPTING, {"profile": "sales"})
    assert applied == ChangeResult(True, S.ACCEPTING)
    before = snapshot(redis_client)
    refused = store.transition("rtc_1", S.INCOMING, S.REJECTED, {"reject_code": 486})
    assert refused == ChangeResult(False, S.ACCEPTING)
    assert snapshot(redis_client) == before
    record = store.get("rtc_1")
    assert record is not None
    assert (record.state, record.profile, record.updated_at) == (S.ACCEPTING, "sales", 2000.0)
    assert record.reject_code is None


def test_a_claim_takes_an_incoming_call_once_and_its_holder_resumes_it(
    store: CallStore, redis_client: redis.Redis
) -> None:
    store.create_incoming(new_record())
    claimed = store.claim("rtc_1", "route_claim", "task-1", {"route_run_at": 1.5})
    assert claimed.outcome is ClaimOutcome.CLAIMED
    assert claimed.record is not None
    assert claimed.record.state is S.ACCEPTING
    assert claimed.record.updated_at == 2000.0
    extra = claimed.record.model_extra or {}
    assert (extra["route_claim"], extra["route_run_at"]) == ("task-1", "1.5")
    assert claimed.record.from_ == "+1415"

    before = snapshot(redis_client)
    taken = store.claim("rtc_1", "route_claim", "task-2", {"route_run_at": 9.0})
    assert (taken.outcome, taken.record) == (ClaimOutcome.TAKEN, None)
    assert snapshot(redis_client) == before

    resumed = store.claim("rtc_1", "route_claim", "task-1", {"route_run_at": 2.5})
    assert resumed.outcome is ClaimOutcome.RESUMED
    assert resumed.record is not None
    assert (resumed.record.model_extra or {})["route_run_at"] == "2.5"
    assert redis_client.ttl(keys.call_record("rtc_1")) > 0

    store.transition("rtc_1", S.ACCEPTING, S.REJECTED)
    before = snapshot(redis_client)
    assert store.claim("rtc_1", "route_claim", "task-1", {}).outcome is ClaimOutcome.TAKEN
    assert snapshot(redis_client) == before


def test_a_claim_of_an_unknown_call_creates_nothing_and_bad_fields_are_refused(
    store: CallStore, redis_client: redis.Redis
) -> None:
    missing = store.claim("rtc_gone", "route_claim", "task-1", {"route_run_at": 1.0})
    assert (missing.outcome, missing.record) == (ClaimOutcome.MISSING, None)
    assert redis_client.dbsize() == 0
    with pytest.raises(ValueError, match="state"):
        store.claim("rtc_gone", "route_claim", "task-1", {"state": "active"})
    with pytest.raises(ValueError, match="route_claim"):
        store.claim("rtc_gone", "route_claim", "task-1", {"route_claim": "task-2"})
    with pytest.raises(ValueError, match="state"):
        store.claim("rtc_gone", "state", "task-1", {})


def test_claim_races_have_exactly_one_winner(store: CallStore, redis_url: str) -> None:
    store.create_incoming(new_record())
    pool = redis.ConnectionPool.from_url(redis_url)
    racer = CallStore(redis.Redis(connection_pool=pool))
    results = race(16, lambda i: (i, racer.claim("rtc_1", "route_claim", f"t{i}", {})))
    pool.disconnect()
    outcomes = [claim.outcome for _, claim in results]
    assert outcomes.count(ClaimOutcome.CLAIMED) == 1
    assert outcomes.count(ClaimOutcome.TAKEN) == 15


def test_update_and_push_writes_then_pushes_in_one_go(
    store: CallStore, redis_client: redis.Redis
) -> None:
    store.create_incoming(new_record())
    store.transition("rtc_1", S.INCOMING, S.ACCEPTING)
    done = store.update_and_push(
        "rtc_1", {"profile": "sales"}, only_in=[S.ACCEPTING], queue="pending"
    )
    assert done == ChangeResult(True, S.ACCEPTING)
    assert redis_client.hget(keys.call_record("rtc_1"), "profile") == "sales"
    assert redis_client.lrange("pending", 0, -1) == ["rtc_1"]
    # A script cache emptied by a restart changes nothing: the script goes whole.
    redis_client.script_flush()
    refused = store.update_and_push("rtc_1", {"profile": "x"}, only_in=[S.ACTIVE], queue="pending")
    assert refused == ChangeResult(False, S.ACCEPTING)
    assert redis_client.hget(keys.call_record("rtc_1"), "profile") == "sales"
    assert redis_client.lrange("pending", 0, -1) == ["rtc_1", "rtc_1"]


def test_a_transition_of_an_unknown_call_creates_nothing(
    store: CallStore, redis_client: redis.Redis
) -> None:
    assert store.transition("rtc_gone", S.INCOMING, S.ACCEPTING) == ChangeResult(False, None)
    assert store.update("rtc_gone", {"owner": "x"}) == ChangeResult(False, None)
    assert redis_client.dbsize() == 0


def test_impossible_or_unsafe_requests_are_refused_before_redis(
    store: CallStore, redis_client: redis.Redis
) -> None:
    store.create_incoming(new_record())
    before = snapshot(redis_client)
    with pytest.raises(InvalidTransitionError):
        store.transition("rtc_1", S.INCOMING, S.ACTIVE)
    with pytest.raises(InvalidTransitionError):
        store.transition("rtc_1", [S.INCOMING, S.ENDED], S.ACCEPTING)
    with pytest.raises(ValueError, match="state"):
        store.transition("rtc_1", S.INCOMING, S.ACCEPTING, {"state": "active"})
    with pytest.raises(ValueError, match="id"):
        store.update("rtc_1", {"id": "rtc_2"})
    assert snapshot(redis_client) == before


def test_a_full_life_and_the_live_index(store: CallStore) -> None:
    store.create_incoming(new_record("rtc_a", "wh_a"))
    store.create_incoming(new_record("rtc_b", "wh_b", created_at=1001.0))
    store.transition("rtc_a", S.INCOMING, S.ACCEPTING)
    store.transition("rtc_a", S.ACCEPTING, S.ACTIVE, {"accepted_at": 1002.0, "owner": "r1"})
    assert [r.id for r in store.list_calls()] == ["rtc_a", "rtc_b"]
    assert [r.id for r in store.list_calls([S.ACTIVE])] == ["rtc_a"]
    store.transition("rtc_b", S.INCOMING, S.REJECTED, {"reject_code": 486})
    ended = store.transition(
        "rtc_a",
        [S.ACTIVE, S.TRANSFERRING],
        S.ENDED,
        {"ended_at": 1003.0, "end_reason": "caller_hangup"},
    )
    assert ended == ChangeResult(True, S.ENDED)
    assert store.list_calls() == []
    record = store.get("rtc_a")
    assert record is not None
    assert (record.end_reason, record.accepted_at, record.owner) == ("caller_hangup", 1002.0, "r1")


def test_stale_index_entries_are_dropped_when_listing(
    store: CallStore, redis_client: redis.Redis
) -> None:
    store.create_incoming(new_record("rtc_a", "wh_a"))
    store.create_incoming(new_record("rtc_b", "wh_b"))
    redis_client.delete(keys.call_record("rtc_b"))  # as if its TTL ran out
    assert [r.id for r in store.list_calls()] == ["rtc_a"]
    assert redis_client.zrange(keys.LIVE_CALLS, 0, -1) == ["rtc_a"]


def test_update_respects_only_in(store: CallStore) -> None:
    store.create_incoming(new_record())
    assert store.update("rtc_1", {"cost_usd": 0.5}, only_in=[S.ACTIVE]) == ChangeResult(
        False, S.INCOMING
    )
    assert store.update("rtc_1", {"usage": {"input_text_tokens": 3}}) == ChangeResult(
        True, S.INCOMING
    )
    record = store.get("rtc_1")
    assert record is not None
    assert (record.cost_usd, record.usage) == (0.0, {"input_text_tokens": 3})


def test_scripts_are_reloaded_after_redis_forgets_them(
    store: CallStore, redis_client: redis.Redis
) -> None:
    store.create_incoming(new_record())
    redis_client.script_flush()
    assert store.transition("rtc_1", S.INCOMING, S.ACCEPTING).applied
    redis_client.script_flush()
    assert store.create_incoming(new_record("rtc_2", "wh_2")) is CreateResult.CREATED


async def test_both_faces_share_records(store: CallStore, async_store: AsyncCallStore) -> None:
    assert await async_store.create_incoming(new_record()) is CreateResult.CREATED
    assert store.transition("rtc_1", S.INCOMING, S.ACCEPTING).applied
    assert await async_store.transition("rtc_1", S.ACCEPTING, S.ACTIVE) == ChangeResult(
        True, S.ACTIVE
    )
    record = await async_store.get("rtc_1")
    assert record is not None
    assert record.state is S.ACTIVE
    assert [r.id for r in await async_store.list_calls()] == ["rtc_1"]
    assert await async_store.update("rtc_1", {"owner": "r2"}) == ChangeResult(True, S.ACTIVE)
    assert await async_store.transition("rtc_1", S.ACTIVE, S.ENDED) == ChangeResult(True, S.ENDED)
    assert await async_store.list_calls() == []


def test_an_unreachable_redis_is_a_retryable_error() -> None:
    client = redis.Redis(port=free_port(), socket_connect_timeout=0.5)
    dead = CallStore(client)
    with pytest.raises(StoreUnavailable) as err:
        dead.get("rtc_1")
    assert isinstance(err.value, RetryableError)
    with pytest.raises(StoreUnavailable):
        dead.create_incoming(new_record())
    client.close()


async def test_an_unreachable_redis_is_a_retryable_error_async() -> None:
    client = redis.asyncio.Redis(port=free_port(), socket_connect_timeout=0.5)
    with pytest.raises(StoreUnavailable):
        await AsyncCallStore(client).transition("rtc_1", S.INCOMING, S.ACCEPTING)
    await client.aclose()
