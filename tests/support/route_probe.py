"""A tiny Celery app standing in for the control worker: it records each routed call.

Run as ``celery -A tests.support.route_probe worker -Q control -P solo``; the broker is
``SWITCHBOARD_REDIS_URL``. The task has the production name and signature, so it
consumes exactly what the ingress enqueues, and appends the call id it got to
``PROBE_KEY`` (plus the task id and delivery count, to prove single delivery).
"""

from __future__ import annotations

import os

import redis
from celery import Celery

from shared.queues import CONTROL_QUEUE, ROUTE_CALL_TASK

PROBE_KEY = "probe:routed"

app = Celery("route_probe", broker=os.environ["SWITCHBOARD_REDIS_URL"])
app.conf.update(
    task_default_queue=CONTROL_QUEUE,
    worker_prefetch_multiplier=1,
    task_acks_late=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name=ROUTE_CALL_TASK, bind=True)
def route_call(self, call_id: str) -> None:  # type: ignore[no-untyped-def]
    client = redis.Redis.from_url(os.environ["SWITCHBOARD_REDIS_URL"], decode_responses=True)
    try:
        client.rpush(PROBE_KEY, f"{call_id} {self.request.id} {self.request.retries}")
    finally:
        client.close()
