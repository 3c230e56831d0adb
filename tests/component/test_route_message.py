"""The routing message the ingress enqueues is a Celery task a real worker runs.

The ingress builds the kombu message itself (``shared.task_message``) instead of calling
``send_task``; these tests hold it to what ``send_task`` produces in this environment and
to what a real ``celery worker`` actually consumes.
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from celery import Celery

from shared.queues import CONTROL_QUEUE, ROUTE_CALL_TASK
from shared.task_message import TaskMessages
from tests.support.procs import Child, spawn, wait_until
from tests.support.webhook_sender import incoming_event, signed_headers, start_ingress

PROBE_KEY = "probe:routed"  # tests/support/route_probe.py appends each routed call here
IDS = ("id", "root_id", "correlation_id", "delivery_tag", "reply_to", "origin")


def without_ids(message: dict[str, Any]) -> dict[str, Any]:
    """The message with per-message identifiers blanked, and its body decoded."""
    copy = json.loads(json.dumps(message))
    for section in (copy["headers"], copy["properties"]):
        for name in IDS:
            if name in section:
                section[name] = "<id>"
    copy["body"] = json.loads(base64.b64decode(copy["body"]))
    return copy


def test_the_message_matches_what_send_task_produces(redis_client: redis.Redis) -> None:
    url = redis_client.connection_pool.connection_kwargs
    broker = f"redis://{url['host']}:{url['port']}/{url.get('db', 0)}"
    celery = Celery("reference", broker=broker)
    try:
        celery.send_task(ROUTE_CALL_TASK, args=["rtc_ref"], queue=CONTROL_QUEUE)
    finally:
        celery.close()
    [reference] = [json.loads(m) for m in redis_client.lrange(CONTROL_QUEUE, 0, -1)]
    ours = json.loads(TaskMessages().build(ROUTE_CALL_TASK, ["rtc_ref"], CONTROL_QUEUE))
    assert without_ids(ours) == without_ids(reference)
    assert (
        ours["headers"]["id"] == ours["headers"]["root_id"] == ours["properties"]["correlation_id"]
    )
    assert ours["properties"]["delivery_tag"] != ours["headers"]["id"]


def test_every_message_gets_fresh_ids() -> None:
    messages = TaskMessages()
    first = json.loads(messages.build(ROUTE_CALL_TASK, ["a"], CONTROL_QUEUE))
    second = json.loads(messages.build(ROUTE_CALL_TASK, ["a"], CONTROL_QUEUE))
    assert first["headers"]["id"] != second["headers"]["id"]
    assert first["properties"]["delivery_tag"] != second["properties"]["delivery_tag"]


@pytest.fixture
def worker(redis_url: str, tmp_path: Path) -> Iterator[Child]:
    argv = [
        str(Path(sys.executable).parent / "celery"),
        "-A", "tests.support.route_probe", "worker",
        "-Q", CONTROL_QUEUE, "-P", "solo", "-c", "1",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
        "-l", "info",
    ]  # fmt: skip
    child = spawn("celery-worker", argv, tmp_path, env={"SWITCHBOARD_REDIS_URL": redis_url})
    try:
        wait_until(lambda: "ready." in child.tail(200), 60.0, "celery worker ready", child)
        yield child
    finally:
        child.stop()


def test_a_real_worker_runs_route_call_once_per_call(
    worker: Child, redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    ingress, url = start_ingress(tmp_path, redis_url)
    try:
        with httpx.Client(base_url=url, timeout=10.0) as http:
            body = incoming_event("rtc_worked")
            for webhook_id in ("wh_w1", "wh_w1", "wh_w2"):
                response = http.post(
                    "/webhooks/openai", content=body, headers=signed_headers(body, webhook_id)
                )
                assert response.status_code == 200
            # A later call: once the worker has run it, anything queued before was run too.
            marker = incoming_event("rtc_marker")
            http.post("/webhooks/openai", content=marker, headers=signed_headers(marker, "wh_m"))
    finally:
        ingress.stop()

    def both_routed() -> bool:
        return redis_client.llen(PROBE_KEY) >= 2

    wait_until(both_routed, 30.0, "the worker to run route_call", worker)
    routed = [entry.split() for entry in redis_client.lrange(PROBE_KEY, 0, -1)]
    assert [call_id for call_id, _, _ in routed] == ["rtc_worked", "rtc_marker"]
    assert all(retries == "0" for _, _, retries in routed)
    assert redis_client.llen(CONTROL_QUEUE) == 0
    task_id = routed[0][1]
    assert f"Task {ROUTE_CALL_TASK}[{task_id}] succeeded" in worker.tail(400)
