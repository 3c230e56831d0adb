"""Fuzzed webhook bodies, validly signed, against a real ``switchboard ingress`` process.

Whatever the body, the answer is 200 or 400 (never 5xx), and a refused delivery leaves
Redis exactly as it was: no record, no dedupe marker, nothing queued.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emulator.webhooks_out import sign, signing_key
from tests.support.webhook_sender import SECRET, start_ingress

pytestmark = pytest.mark.timeout(300)

JSON_LEAF = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40)
JSON = st.recursive(
    JSON_LEAF,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
HEADER = st.fixed_dictionaries({"name": st.text(max_size=20), "value": st.text(max_size=60)})
WEIRD_HEADER = HEADER | JSON
CALL_ID = st.text(max_size=140) | st.integers() | st.none()
EVENT = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["realtime.call.incoming", "realtime.call.other"]) | JSON,
        "data": st.fixed_dictionaries(
            {"call_id": CALL_ID, "sip_headers": st.lists(WEIRD_HEADER, max_size=5) | JSON}
        )
        | JSON,
    },
    optional={"id": JSON, "object": JSON, "created_at": JSON},
)


@pytest.fixture(scope="module")
def ingress(redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    child, url = start_ingress(Path(tmp_path_factory.mktemp("ingress-fuzz")), redis_server)
    try:
        yield url
    finally:
        child.stop()


@pytest.fixture(scope="module")
def rdb(redis_server: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server)
    client.flushall()
    try:
        yield client
    finally:
        client.close()


def snapshot(rdb: redis.Redis) -> dict[bytes, Any]:
    return {key: rdb.dump(key) for key in sorted(rdb.keys("*"))}


def post(ingress: str, body: bytes, webhook_id: str) -> httpx.Response:
    timestamp = str(int(time.time()))
    headers = {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": sign(signing_key(SECRET), webhook_id, timestamp, body),
    }
    return httpx.post(f"{ingress}/webhooks/openai", content=body, headers=headers, timeout=10)


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=st.binary(max_size=300) | JSON.map(lambda v: json.dumps(v).encode()))
def test_arbitrary_bodies_get_200_or_400_and_refusals_change_nothing(
    ingress: str, rdb: redis.Redis, body: bytes
) -> None:
    before = snapshot(rdb)
    response = post(ingress, body, "wh_fuzz_raw")
    assert response.status_code in (200, 400), response.text
    if response.status_code == 400:
        assert response.json()["error"]["code"]
        assert snapshot(rdb) == before


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(event=EVENT)
def test_event_shaped_bodies_get_200_or_400_and_refusals_change_nothing(
    ingress: str, rdb: redis.Redis, event: dict[str, Any]
) -> None:
    body = json.dumps(event).encode()
    before = snapshot(rdb)
    response = post(ingress, body, "wh_fuzz_event")
    assert response.status_code in (200, 400), response.text
    if response.status_code == 400:
        assert snapshot(rdb) == before
