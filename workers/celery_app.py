"""The Celery application: Redis broker, one queue per kind of work, tuned for short tasks.

Queues (``shared.queues``): ``control`` (routing: accept or reject of incoming calls),
``commands`` (the reject, refer and hang-up tasks that commands send), ``tools`` and
``post_call``; a deployment can run a worker per queue so neither slow tool calls nor
a burst of commands ever delays a ringing call. Choices and why:

- prefetch 1: a worker takes one message per process, so a slow task never holds
  others that another process could start now (call setup is latency-bound);
- ``acks_late`` is off by default and switched on per task only where running twice is
  harmless (``route_call`` is guarded by its claim, ``hangup_call`` by 404 = done,
  ``post_call`` by its records): those survive a worker crash, the others are never
  repeated (a cut-off ``reject_call`` holds its call's claim, which recovery resumes;
  ``run_tool`` runs a tool at most once; a refer is not repeated). The broker hands a
  dead worker's unacknowledged messages out again only after the visibility timeout,
  far too late for a ringing call: ``workers.recovery`` resumes those routings within
  seconds;
- JSON only, no result backend (nothing reads task results; outcomes live in the
  call record);
- time limits well above the REST client's deadline, so a stuck task is killed
  rather than holding a process forever;
- the root logger is left alone: the process configures logging once, Celery adds to it;
- a worker on the ``tools`` queue alone runs without kombu's ack emulation
  (``transport_options``): every task there is acknowledged on receipt and never run
  again, so the emulation (a MULTI/EXEC to note each message unacknowledged before the
  task starts, another to acknowledge it, a periodic scan to restore) buys nothing,
  and the first of those round trips lay on every tool call's path. A message taken
  by a worker that then dies is lost either way: with the emulation it came back after
  the visibility timeout, long past its deadline, and was skipped.

``create_app`` builds an app from ``Settings``; ``app`` is the one the worker command
and ``celery -A workers.celery_app`` use, configured from the environment.
"""

from __future__ import annotations

from collections.abc import Iterable

from celery import Celery
from kombu import Queue

from shared.queues import (
    ALL_QUEUES,
    COMMANDS_QUEUE,
    CONTROL_QUEUE,
    HANGUP_CALL_TASK,
    POST_CALL_QUEUE,
    POST_CALL_TASK,
    REFER_CALL_TASK,
    REJECT_CALL_TASK,
    ROUTE_CALL_TASK,
    RUN_TOOL_TASK,
    TOOLS_QUEUE,
)
from shared.settings import Settings

AT_MOST_ONCE_QUEUES = frozenset({TOOLS_QUEUE})
"""Queues whose tasks are all acknowledged early and never retried (``run_tool``)."""

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
"""Used only when no Redis URL is configured, so that importing the app never fails."""

TASK_SOFT_TIME_LIMIT_S = 30
TASK_TIME_LIMIT_S = 45
VISIBILITY_TIMEOUT_S = 600
"""A late-acked message unacknowledged this long is delivered again.

Must exceed the longest countdown of a late-acked task plus its time limit (a
``post_call`` webhook retry waits up to 300 s), or a message a live worker holds for
later would run twice.
"""


def transport_options(queues: Iterable[str]) -> dict[str, object]:
    """The Redis transport's options for a worker consuming ``queues``."""
    if set(queues) <= AT_MOST_ONCE_QUEUES:
        return {"ack_emulation": False}
    return {"visibility_timeout": VISIBILITY_TIMEOUT_S}


def create_app(settings: Settings) -> Celery:
    """A Celery app on the Redis named by ``settings``."""
    broker = settings.redis_url or DEFAULT_REDIS_URL
    app = Celery("switchboard", broker=broker, include=["workers.tasks"])
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        result_backend=None,
        task_ignore_result=True,
        task_queues=[Queue(name, routing_key=name) for name in ALL_QUEUES],
        task_default_queue=CONTROL_QUEUE,
        task_routes={
            ROUTE_CALL_TASK: {"queue": CONTROL_QUEUE},
            REJECT_CALL_TASK: {"queue": COMMANDS_QUEUE},
            REFER_CALL_TASK: {"queue": COMMANDS_QUEUE},
            HANGUP_CALL_TASK: {"queue": COMMANDS_QUEUE},
            RUN_TOOL_TASK: {"queue": TOOLS_QUEUE},
            POST_CALL_TASK: {"queue": POST_CALL_QUEUE},
        },
        worker_prefetch_multiplier=1,
        task_acks_late=False,
        task_soft_time_limit=TASK_SOFT_TIME_LIMIT_S,
        task_time_limit=TASK_TIME_LIMIT_S,
        broker_connection_retry_on_startup=True,
        broker_transport_options=transport_options(ALL_QUEUES),
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_send_task_events=False,
        enable_utc=True,
        timezone="UTC",
    )
    return app


app = create_app(Settings())
