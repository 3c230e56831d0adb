"""Admission control on a real Redis: caps, idempotence, races, leaks made visible."""

from __future__ import annotations

import threading

import pytest
import redis
import redis.asyncio

from shared import keys
from workers.admission import Admission, AsyncAdmission
from workers.policy import Load


@pytest.fixture
def admission(redis_client: redis.Redis) -> Admission:
    return Admission(redis_client, clock=lambda: 1000.0)


def test_slots_are_taken_up_to_the_cluster_cap(admission: Admission) -> None:
    grants = [
        admission.acquire(f"rtc_{i}", "support", max_calls=2, profile_cap=None) for i in range(3)
    ]
    assert [(g.granted, g.why) for g in grants] == [
        (True, "taken"),
        (True, "taken"),
        (False, "cluster_full"),
    ]
    assert (grants[2].active, grants[2].profile_active) == (2, 2)
    assert admission.load(["support", "sales"]) == Load(
        active=2, per_profile={"support": 2, "sales": 0}
    )


def test_a_profile_cap_holds_while_the_cluster_has_room(admission: Admission) -> None:
    assert admission.acquire("rtc_1", "sales", max_calls=10, profile_cap=1).granted
    denied = admission.acquire("rtc_2", "sales", max_calls=10, profile_cap=1)
    assert (denied.granted, denied.why) == (False, "profile_full")
    assert admission.acquire("rtc_3", "support", max_calls=10, profile_cap=1).granted


def test_acquire_and_release_are_idempotent(
    admission: Admission, redis_client: redis.Redis
) -> None:
    assert admission.acquire("rtc_1", "support", max_calls=1, profile_cap=None).why == "taken"
    again = admission.acquire("rtc_1", "support", max_calls=1, profile_cap=None)
    assert (again.granted, again.why, again.active) == (True, "held", 1)

    assert admission.release("rtc_1") is True
    assert admission.release("rtc_1") is False
    assert admission.release("rtc_never") is False
    assert redis_client.zcard(keys.ADMISSION_ACTIVE) == 0
    assert redis_client.zcard(keys.admission_profile("support")) == 0
    assert redis_client.hlen(keys.ADMISSION_HOLDERS) == 0
    # the freed slot is available again
    assert admission.acquire("rtc_2", "support", max_calls=1, profile_cap=None).granted


def test_a_release_frees_exactly_the_callers_slot(admission: Admission) -> None:
    for call_id, profile in (("rtc_a", "support"), ("rtc_b", "sales"), ("rtc_c", "support")):
        admission.acquire(call_id, profile, max_calls=None, profile_cap=None)
    admission.release("rtc_a")
    assert admission.load(["support", "sales"]) == Load(
        active=2, per_profile={"support": 1, "sales": 1}
    )
    assert [(h.call_id, h.profile) for h in admission.holders()] == [
        ("rtc_b", "sales"),
        ("rtc_c", "support"),
    ]


def test_slots_show_their_age_so_leaks_are_visible(redis_client: redis.Redis) -> None:
    now = [100.0]
    admission = Admission(redis_client, clock=lambda: now[0])
    admission.acquire("rtc_old", "support", max_calls=None, profile_cap=None)
    now[0] = 5000.0
    admission.acquire("rtc_new", "support", max_calls=None, profile_cap=None)
    assert [(h.call_id, h.admitted_at) for h in admission.holders()] == [
        ("rtc_old", 100.0),
        ("rtc_new", 5000.0),
    ]


def test_racing_workers_never_exceed_the_cap(redis_url: str) -> None:
    cap, racers = 5, 24
    granted: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(racers)

    def race(i: int) -> None:
        client = redis.Redis.from_url(redis_url)
        try:
            admission = Admission(client)
            start.wait()
            if admission.acquire(f"rtc_{i}", "support", max_calls=cap, profile_cap=None).granted:
                with lock:
                    granted.append(f"rtc_{i}")
        finally:
            client.close()

    threads = [threading.Thread(target=race, args=(i,)) for i in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(granted) == cap
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        assert sorted(client.zrange(keys.ADMISSION_ACTIVE, 0, -1)) == sorted(granted)
    finally:
        client.close()


def test_all_admission_keys_share_one_cluster_slot() -> None:
    tags = {
        keys.hash_slot_tag(key)
        for key in (keys.ADMISSION_ACTIVE, keys.ADMISSION_HOLDERS, keys.admission_profile("x"))
    }
    assert tags == {"admission"}


def test_ids_that_would_break_the_key_scheme_are_refused(admission: Admission) -> None:
    with pytest.raises(ValueError, match="braces"):
        admission.acquire("rtc_{x}", "support", max_calls=None, profile_cap=None)


async def test_runners_release_with_the_async_face(redis_url: str, admission: Admission) -> None:
    admission.acquire("rtc_1", "support", max_calls=None, profile_cap=None)
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        runner_side = AsyncAdmission(client)
        assert await runner_side.release("rtc_1") is True
        assert await runner_side.release("rtc_1") is False
        grant = await runner_side.acquire("rtc_2", "support", max_calls=1, profile_cap=None)
        assert grant.granted
    finally:
        await client.aclose()
    assert admission.load([]).active == 1
