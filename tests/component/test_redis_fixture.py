"""The Redis fixture gives a real server and a clean database to every test."""

from __future__ import annotations

import redis


def test_first_test_writes_a_key(redis_client: redis.Redis) -> None:
    assert redis_client.dbsize() == 0
    redis_client.set("leftover", "1")
    # A real server runs Lua, which fakeredis-free behaviour depends on.
    assert redis_client.eval("return redis.call('GET', KEYS[1])", 1, "leftover") == "1"


def test_second_test_sees_a_clean_database(redis_client: redis.Redis) -> None:
    assert redis_client.get("leftover") is None
    assert redis_client.dbsize() == 0
