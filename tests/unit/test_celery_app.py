"""The Celery configuration: queues, routing, prefetch, late acks and time limits.

Read from the app the worker runs (``workers.celery_app.app`` with ``workers.tasks``
registered), the way Celery itself resolves it, so a changed setting shows here.
"""

from __future__ import annotations

import pytest
from celery import Celery

from shared.profile import HttpHandler, PythonHandler
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
from shared.realtime_client import ClientConfig
from shared.settings import Settings
from workers import tasks
from workers.celery_app import VISIBILITY_TIMEOUT_S, app, create_app, transport_options

OURS = (
    ROUTE_CALL_TASK,
    REJECT_CALL_TASK,
    REFER_CALL_TASK,
    HANGUP_CALL_TASK,
    RUN_TOOL_TASK,
    POST_CALL_TASK,
)
SAFE_TO_REPEAT = {ROUTE_CALL_TASK, HANGUP_CALL_TASK, POST_CALL_TASK}


def queue_of(celery: Celery, task: str) -> str:
    route = celery.amqp.router.route({}, task, (), {})
    return str(route["queue"].name)


def test_one_queue_per_kind_of_work() -> None:
    assert ALL_QUEUES == ("control", "commands", "tools", "post_call")
    assert [q.name for q in app.conf.task_queues] == list(ALL_QUEUES)
    assert app.conf.task_default_queue == CONTROL_QUEUE


@pytest.mark.parametrize(
    ("task", "queue"),
    [
        (ROUTE_CALL_TASK, CONTROL_QUEUE),
        (REJECT_CALL_TASK, COMMANDS_QUEUE),
        (REFER_CALL_TASK, COMMANDS_QUEUE),
        (HANGUP_CALL_TASK, COMMANDS_QUEUE),
        (RUN_TOOL_TASK, TOOLS_QUEUE),
        (POST_CALL_TASK, POST_CALL_QUEUE),
    ],
)
def test_each_task_is_routed_to_its_queue(task: str, queue: str) -> None:
    assert queue_of(app, task) == queue
    # An app built from other settings routes the same way.
    assert queue_of(create_app(Settings(redis_url="redis://127.0.0.1:1/0")), task) == queue


def test_every_task_is_registered_under_its_shared_name() -> None:
    assert set(OURS) <= set(app.tasks)
    assert tasks.route_call.name == ROUTE_CALL_TASK


def test_workers_take_one_message_at_a_time() -> None:
    assert app.conf.worker_prefetch_multiplier == 1


def test_only_tasks_safe_to_repeat_are_acknowledged_late() -> None:
    assert app.conf.task_acks_late is False
    late = {name for name in OURS if app.tasks[name].acks_late}
    assert late == SAFE_TO_REPEAT
    for name in SAFE_TO_REPEAT:
        # A worker killed mid-task hands the message back rather than dropping it.
        assert app.tasks[name].reject_on_worker_lost is True


def test_time_limits_bound_every_task_above_its_own_work() -> None:
    soft_s, hard_s = app.conf.task_soft_time_limit, app.conf.task_time_limit
    assert soft_s is not None
    assert hard_s is not None
    assert 0 < soft_s < hard_s
    # The REST client gives up well inside the soft limit, so routing ends on its own.
    assert ClientConfig().deadline_s * 2 < soft_s
    tool = app.tasks[RUN_TOOL_TASK]
    for handler in (PythonHandler, HttpHandler):
        assert tool.soft_time_limit > _max_allowed(handler.model_fields["timeout_s"].metadata)
    assert tool.time_limit > tool.soft_time_limit
    for name in set(OURS) - {RUN_TOOL_TASK}:
        # No task overrides the defaults downwards (None: the app's limits apply).
        assert app.tasks[name].soft_time_limit in (None, soft_s)
        assert app.tasks[name].time_limit in (None, hard_s)


def test_a_held_message_is_not_redelivered_while_it_may_still_run() -> None:
    longest_countdown_s = tasks.WEBHOOK_BACKOFF.max_s
    assert longest_countdown_s + app.conf.task_time_limit < VISIBILITY_TIMEOUT_S
    options = app.conf.broker_transport_options
    assert options["visibility_timeout"] == VISIBILITY_TIMEOUT_S


@pytest.mark.parametrize(
    "queues",
    [
        ALL_QUEUES,
        (CONTROL_QUEUE,),
        (COMMANDS_QUEUE,),
        (POST_CALL_QUEUE,),
        (TOOLS_QUEUE, CONTROL_QUEUE),
    ],
)
def test_a_worker_with_late_acknowledged_work_keeps_the_ack_emulation(
    queues: tuple[str, ...],
) -> None:
    # Its late-acknowledged tasks come back after the visibility timeout if it dies.
    assert transport_options(queues) == {"visibility_timeout": VISIBILITY_TIMEOUT_S}


def test_a_worker_on_the_tools_queue_alone_does_without_ack_emulation() -> None:
    assert transport_options([TOOLS_QUEUE]) == {"ack_emulation": False}
    # Which is sound only because no task of that queue is acknowledged late or retried.
    tool = app.tasks[RUN_TOOL_TASK]
    assert queue_of(app, RUN_TOOL_TASK) == TOOLS_QUEUE
    assert not tool.acks_late
    assert tool.max_retries == 0
    on_tools = [name for name in OURS if queue_of(app, name) == TOOLS_QUEUE]
    assert on_tools == [RUN_TOOL_TASK]


def test_json_only_and_no_result_backend() -> None:
    assert app.conf.task_serializer == "json"
    assert app.conf.accept_content == ["json"]
    assert app.conf.task_ignore_result is True
    assert app.conf.result_backend is None


def _max_allowed(metadata: list[object]) -> float:
    """The ``le`` bound of a pydantic field's constraints."""
    bounds = [getattr(item, "le", None) for item in metadata]
    found = [float(b) for b in bounds if isinstance(b, int | float)]
    assert found, "the field has no upper bound"
    return max(found)
