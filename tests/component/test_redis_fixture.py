"""The Redis fixture gives a real server and a clean database to every test."""

from __future__ import annotations

import pytest
import redis


def test_the_server_is_a_real_redis(redis_client: redis.Redis) -> None:
    assert redis_client.dbsize() == 0
    redis_client.set("key", "1")
    # A real server runs Lua, which fakeredis-free behaviour depends on.
    assert redis_client.eval("return redis.call('GET', KEYS[1])", 1, "key") == "1"


def test_each_test_gets_an_empty_server(redis_server: str, request: pytest.FixtureRequest) -> None:
    for db in (0, 3):
        with redis.Redis.from_url(redis_server, db=db) as writer:
            writer.set("left-by-an-earlier-test", "1")
            assert writer.exists("left-by-an-earlier-test") == 1
    url = request.getfixturevalue("redis_url")  # the fixture a test gets, set up now
    for db in (0, 3):
        with redis.Redis.from_url(url, db=db) as reader:
            assert reader.dbsize() == 0
