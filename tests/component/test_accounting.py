"""Cost accounting on a real Redis: once per response id, exact totals, per profile/model."""

from __future__ import annotations

import math
import random
import threading
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
import redis
import redis.asyncio

from shared import keys
from shared.accounting import Accounting, AsyncAccounting
from shared.accrual import PENDING_TAKEOVER_S, plan_accrual, taken_pending
from shared.errors import CallNotFound
from shared.models import CallRecord
from shared.pricing import Cost, UnknownModelError, cost_of, default_price_table
from shared.store import CallStore
from shared.usage import UsageError

TABLE = default_price_table()


def usage(
    text_in: int = 0,
    audio_in: int = 0,
    cached_text: int = 0,
    cached_audio: int = 0,
    text_out: int = 0,
    audio_out: int = 0,
) -> dict[str, Any]:
    """A ``response.done`` usage object in the GA shape."""
    return {
        "input_tokens": text_in + audio_in,
        "output_tokens": text_out + audio_out,
        "total_tokens": text_in + audio_in + text_out + audio_out,
        "input_token_details": {
            "text_tokens": text_in,
            "audio_tokens": audio_in,
            "cached_tokens": cached_text + cached_audio,
            "cached_tokens_details": {"text_tokens": cached_text, "audio_tokens": cached_audio},
        },
        "output_token_details": {"text_tokens": text_out, "audio_tokens": audio_out},
    }


def random_usage(rng: random.Random) -> dict[str, Any]:
    text_in, audio_in = rng.randint(0, 5000), rng.randint(0, 3000)
    return usage(
        text_in=text_in,
        audio_in=audio_in,
        cached_text=rng.randint(0, text_in),
        cached_audio=rng.randint(0, audio_in),
        text_out=rng.randint(0, 400),
        audio_out=rng.randint(0, 2000),
    )


def new_call(client: redis.Redis, call_id: str, profile: str = "support") -> None:
    record = CallRecord.model_validate(
        {"id": call_id, "webhook_id": f"wh_{call_id}", "from": "+1415", "to": "+1800"}
        | {"created_at": 1000.0, "profile": profile}
    )
    CallStore(client).create_incoming(record)


@pytest.fixture
def books(redis_client: redis.Redis) -> Accounting:
    return Accounting(redis_client, TABLE)


def test_the_same_response_id_is_counted_once(books: Accounting, redis_client: redis.Redis) -> None:
    new_call(redis_client, "rtc_a")
    u = usage(text_in=1200, audio_in=600, cached_text=1000, text_out=40, audio_out=900)
    first = books.accrue("rtc_a", "support", "gpt-realtime", "resp_1", u)
    again = books.accrue("rtc_a", "support", "gpt-realtime", "resp_1", u)

    expected = cost_of(u, "gpt-realtime", TABLE)
    assert first.counted
    assert not again.counted
    assert first.cost == expected
    assert first.call_cost_usd == again.call_cost_usd == expected.total_usd
    assert books.call_cost("rtc_a").cost == expected
    assert books.cluster_totals().cost_usd == expected.total_usd
    assert books.cluster_totals().responses == 1
    record = CallStore(redis_client).get("rtc_a")
    assert record is not None
    assert Decimal(redis_client.hget(keys.call_record("rtc_a"), "cost_usd")) == expected.total_usd
    assert record.usage["input_audio_tokens"] == 600
    assert record.usage["total_tokens"] == 1200 + 600 + 40 + 900


def test_totals_equal_the_exact_sum_of_costs_per_profile_and_model(
    books: Accounting, redis_client: redis.Redis
) -> None:
    rng = random.Random(7)
    calls = {"rtc_s1": "support", "rtc_s2": "support", "rtc_m1": "sales"}
    for call_id, profile in calls.items():
        new_call(redis_client, call_id, profile)
    expected: dict[tuple[str, str], Cost] = {}
    per_call: dict[str, Cost] = {}
    for n in range(60):
        call_id = rng.choice(list(calls))
        profile = calls[call_id]
        model = rng.choice(["gpt-realtime", "gpt-realtime-mini", "gpt-realtime-2025-08-28"])
        u = random_usage(rng)
        cost = cost_of(u, model, TABLE)
        books.accrue(call_id, profile, model, f"resp_{n}", u)
        expected[(profile, model)] = expected.get((profile, model), Cost()) + cost
        per_call[call_id] = per_call.get(call_id, Cost()) + cost

    cluster = books.cluster_totals()
    assert cluster.cost_usd == sum((c.total_usd for c in expected.values()), Decimal(0))
    assert cluster.tokens == sum((c.tokens for c in expected.values()), Cost().tokens)
    assert cluster.responses == 60
    for profile in ("support", "sales"):
        totals = books.profile_totals(profile)
        mine = {m: c for (p, m), c in expected.items() if p == profile}
        assert set(totals.tokens_by_model) == set(mine)
        for model, cost in mine.items():
            assert totals.tokens_by_model[model] == cost.tokens
            assert totals.cost_by_model[model] == cost
    for call_id, cost in per_call.items():
        assert books.call_cost(call_id).cost_usd == cost.total_usd
        stored = Decimal(redis_client.hget(keys.call_record(call_id), "cost_usd"))
        assert stored == cost.total_usd
    json_form = cluster.to_json()
    assert Decimal(json_form["cost_usd"]) == cluster.cost_usd


def test_concurrent_accruals_from_threads_count_each_response_once(
    redis_url: str, redis_client: redis.Redis
) -> None:
    new_call(redis_client, "rtc_t")
    rng = random.Random(3)
    usages = [random_usage(rng) for _ in range(40)]
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def worker() -> None:
        client = redis.Redis.from_url(redis_url)
        books = Accounting(client, TABLE)
        try:
            barrier.wait()
            # Every thread offers every response: a failover's replays, all at once.
            for n, u in enumerate(usages):
                books.accrue("rtc_t", "support", "gpt-realtime-mini", f"resp_{n}", u)
        except BaseException as exc:
            errors.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    expected = sum((cost_of(u, "gpt-realtime-mini", TABLE) for u in usages), Cost())
    books = Accounting(redis_client, TABLE)
    assert books.cluster_totals().cost == expected
    assert books.profile_totals("support").responses == 40
    assert books.call_cost("rtc_t").cost == expected
    assert Decimal(redis_client.hget(keys.call_record("rtc_t"), "cost_usd")) == expected.total_usd


def half_count(books: Accounting, call_id: str, response_id: str, u: dict[str, Any]) -> None:
    """Step 1 of an accrual alone, as a process leaves it that died before the cluster
    counters (step 2)."""
    plan = plan_accrual(call_id, "support", "gpt-realtime", response_id, u, TABLE)
    books._accrue(keys=plan.script_keys, args=plan.script_args)


def age_mark(redis_client: redis.Redis, call_id: str, response_id: str, age_s: int) -> None:
    counted = keys.call_counted(call_id)
    mark = redis_client.hget(counted, response_id)
    assert isinstance(mark, str)
    assert mark.startswith("pending:")
    _, since, counters = mark.split(":", 2)
    redis_client.hset(counted, response_id, f"pending:{int(since) - age_s}:{counters}")


def test_a_stale_pending_response_is_finished_by_the_replay(
    books: Accounting, redis_client: redis.Redis
) -> None:
    new_call(redis_client, "rtc_p")
    u = usage(text_in=100, text_out=10)
    half_count(books, "rtc_p", "resp_x", u)
    books.accrue("rtc_p", "support", "gpt-realtime", "resp_x", u)
    assert books.cluster_totals().responses == 0, "a young pending mark is a live writer's"

    age_mark(redis_client, "rtc_p", "resp_x", 60)
    result = books.accrue("rtc_p", "support", "gpt-realtime", "resp_x", u)
    assert not result.counted
    assert books.cluster_totals().cost == cost_of(u, "gpt-realtime", TABLE)
    assert books.profile_totals("support").responses == 1
    assert redis_client.hget(keys.call_counted("rtc_p"), "resp_x") == "done"
    books.accrue("rtc_p", "support", "gpt-realtime", "resp_x", u)
    assert books.cluster_totals().responses == 1
    assert books.call_cost("rtc_p").responses == 1


def test_a_takeover_says_when_the_youngest_mark_it_left_comes_due(
    books: Accounting, redis_client: redis.Redis
) -> None:
    new_call(redis_client, "rtc_d")
    for response_id, age_s in (("resp_old", 60), ("resp_1s", 1), ("resp_2s", 2)):
        half_count(books, "rtc_d", response_id, usage(text_in=10, text_out=1))
        age_mark(redis_client, "rtc_d", response_id, age_s)
    mark = redis_client.hget(keys.call_counted("rtc_d"), "resp_1s")
    assert isinstance(mark, str)
    youngest = int(mark.split(":")[1])
    reply = books._take_pending(keys=[keys.call_counted("rtc_d")], args=[PENDING_TAKEOVER_S])
    taken = taken_pending(reply, PENDING_TAKEOVER_S)
    assert [step.response_id for step in taken.steps] == ["resp_old"]
    now_s = int(reply[1]) + int(reply[2]) / 1e6
    assert taken.due_in_s == pytest.approx(youngest + PENDING_TAKEOVER_S - now_s)


def test_a_stale_pending_response_is_finished_without_a_replay(
    books: Accounting, redis_client: redis.Redis
) -> None:
    """The runner ending a call finishes what a killed runner left half counted."""
    new_call(redis_client, "rtc_h")
    first, second = usage(text_in=100, text_out=10), usage(audio_in=300, audio_out=40)
    half_count(books, "rtc_h", "resp_1", first)
    half_count(books, "rtc_h", "resp_2", second)
    age_mark(redis_client, "rtc_h", "resp_1", 60)
    assert books.finish_pending("rtc_h") == 1, "resp_2's young mark is a live writer's"
    assert books.cluster_totals().cost == cost_of(first, "gpt-realtime", TABLE)
    assert books.profile_totals("support").responses == 1

    age_mark(redis_client, "rtc_h", "resp_2", 60)
    assert books.finish_pending("rtc_h") == 1
    assert books.finish_pending("rtc_h", takeover_s=0) == 0, "nothing is finished twice"
    both = cost_of(first, "gpt-realtime", TABLE) + cost_of(second, "gpt-realtime", TABLE)
    assert books.cluster_totals().cost == both
    assert books.cluster_totals().cost == books.call_cost("rtc_h").cost
    assert redis_client.hgetall(keys.call_counted("rtc_h")) == {"resp_1": "done", "resp_2": "done"}


def test_bad_input_is_refused_and_changes_nothing(
    books: Accounting, redis_client: redis.Redis
) -> None:
    new_call(redis_client, "rtc_b")
    before = {k: redis_client.dump(k) for k in redis_client.keys("*")}
    with pytest.raises(CallNotFound):
        books.accrue("rtc_nope", "support", "gpt-realtime", "resp_1", usage(text_in=5))
    with pytest.raises(UsageError):
        books.accrue("rtc_b", "support", "gpt-realtime", "resp_1", {"input_tokens": -1})
    with pytest.raises(UnknownModelError):
        books.accrue("rtc_b", "support", "gpt-unknown", "resp_1", usage(text_in=5))
    with pytest.raises(ValueError, match="response id"):
        books.accrue("rtc_b", "support", "gpt-realtime", "", usage(text_in=5))
    with pytest.raises(ValueError, match="profile"):
        books.accrue("rtc_b", "a|b", "gpt-realtime", "resp_1", usage(text_in=5))
    after = {k: redis_client.dump(k) for k in redis_client.keys("*")}
    assert after == before


def test_outcomes_are_counted_by_reason_and_once_per_call(books: Accounting) -> None:
    assert books.count_outcome("accepted", "support", call_id="rtc_1")
    assert not books.count_outcome("accepted", "support", call_id="rtc_1")
    books.count_outcome("rejected", None, "capacity")
    books.count_outcome("ended", "support", "caller_hangup", call_id="rtc_1")
    books.count_outcome("ended", "sales", "budget", call_id="rtc_2")

    cluster = books.cluster_totals()
    assert cluster.outcome_count("accepted") == 1
    assert cluster.outcome_count("rejected", "capacity") == 1
    assert cluster.outcome_count("ended") == 2
    support = books.profile_totals("support")
    assert support.outcome_count("ended", "caller_hangup") == 1
    assert support.outcome_count("ended", "budget") == 0
    assert support.outcome_count("rejected") == 0
    with pytest.raises(ValueError, match="outcome"):
        books.count_outcome("", "support")


def test_setup_latency_is_a_cluster_histogram_counted_once_per_call(books: Accounting) -> None:
    latencies = {"rtc_1": 0.004, "rtc_2": 0.004, "rtc_3": 0.015, "rtc_4": 0.3, "rtc_5": 42.0}
    for call_id, latency_s in latencies.items():
        assert books.count_outcome("accepted", "support", call_id=call_id, setup_s=latency_s)
    # A retried count of the same call adds nothing, not even to the histogram.
    assert not books.count_outcome("accepted", "support", call_id="rtc_1", setup_s=9.0)
    books.count_outcome("accepted", "sales", call_id="rtc_6", setup_s=-1.0)  # clock skew: 0
    books.count_outcome("ended", "support", "caller_hangup", call_id="rtc_1")

    cumulative = dict(books.cluster_totals().setup_histogram())
    assert (cumulative[0.001], cumulative[0.002], cumulative[0.005]) == (1, 1, 3)
    assert (cumulative[0.02], cumulative[0.25], cumulative[0.5], cumulative[10.0]) == (4, 4, 5, 5)
    assert cumulative[math.inf] == 6
    support = dict(books.profile_totals("support").setup_histogram())
    assert (support[0.001], support[math.inf]) == (0, 5)


@pytest.fixture
async def async_books(redis_url: str) -> AsyncIterator[AsyncAccounting]:
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        yield AsyncAccounting(client, TABLE)
    finally:
        await client.aclose()


async def test_the_async_face_shares_the_books(
    async_books: AsyncAccounting, books: Accounting, redis_client: redis.Redis
) -> None:
    new_call(redis_client, "rtc_async")
    u = usage(audio_in=600, audio_out=1200)
    first = await async_books.accrue("rtc_async", "support", "gpt-realtime", "resp_1", u)
    again = books.accrue("rtc_async", "support", "gpt-realtime", "resp_1", u)
    assert first.counted
    assert not again.counted
    expected = cost_of(u, "gpt-realtime", TABLE)
    assert (await async_books.call_cost("rtc_async")).cost == expected
    assert (await async_books.cluster_totals()).cost == expected
    assert (await async_books.profile_totals("support")).responses == 1
    assert await async_books.count_outcome("ended", "support", "idle", call_id="rtc_async")
    assert not await async_books.count_outcome("ended", "support", "idle", call_id="rtc_async")
    with pytest.raises(CallNotFound):
        await async_books.accrue("rtc_none", "support", "gpt-realtime", "resp_1", u)


def test_the_keys_one_script_touches_share_the_calls_hash_slot() -> None:
    for key in (
        keys.call_record("rtc_9"),
        keys.call_counted("rtc_9"),
        keys.call_usage("rtc_9"),
        keys.call_commands("rtc_9"),
        keys.call_command_results("rtc_9"),
        keys.call_command_done("rtc_9", "cmd_1"),
        keys.call_summary("rtc_9"),
    ):
        assert keys.hash_slot_tag(key) == "rtc_9"
