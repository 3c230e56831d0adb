"""Celery tasks for call control: thin wrappers that unpack, call ``workers.actions``, retry.

Each task unpacks its arguments, calls the plain function in ``workers.actions`` and
maps transient failures (Redis unreachable, a ``RetryableError``) to a retry with
jittered backoff. Fatal errors are logged by Celery and not retried. ``route_call`` also
retries, with a short countdown, while its call waits for a free slot: the caller keeps
ringing but no worker process is held while it waits.

The ``Control`` (Redis pool, REST client, policy source) is built lazily once per
worker process, after the fork, from the environment, and shared by the threads of a
``threads`` pool (its clients are thread-safe).
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from typing import Any

import redis

from shared import keys
from shared.errors import RetryableError
from shared.queues import (
    HANGUP_CALL_TASK,
    POST_CALL_TASK,
    REFER_CALL_TASK,
    REJECT_CALL_TASK,
    ROUTE_CALL_TASK,
    RUN_TOOL_TASK,
)
from shared.retry import Backoff, backoff_delay_s
from shared.settings import Settings
from workers import actions, python_tools, worker_metrics
from workers import post_call as post_call_actions
from workers.celery_app import app

logger = logging.getLogger(__name__)

TRANSIENT = (RetryableError, redis.ConnectionError, redis.TimeoutError)
MAX_TRANSIENT_RETRIES = 5
TASK_BACKOFF = Backoff(base_s=0.2, factor=2.0, max_s=5.0, jitter=0.5)

WEBHOOK_ATTEMPTS = 8
WEBHOOK_BACKOFF = Backoff(base_s=1.0, factor=2.0, max_s=300.0, jitter=0.2)
TOOL_TIME_LIMIT_S = 75
"""Above the longest tool timeout a policy allows (60 s), which the default limits are not."""

_control: actions.Control | None = None
_control_pid = 0
_post_call: post_call_actions.PostCallContext | None = None
_post_call_pid = 0
_replies: redis.Redis | None = None
_replies_pid = 0
_building = threading.Lock()
"""Held while a context is built, so the threads of a pool build it once."""


def control() -> actions.Control:
    """This process's ``Control``; rebuilt in a forked child, never shared across a fork."""
    global _control, _control_pid
    if _control is None or _control_pid != os.getpid():
        with _building:
            if _control is None or _control_pid != os.getpid():
                settings, metrics = Settings(), worker_metrics.current()
                _control = actions.Control.from_settings(settings, metrics)
                _control_pid = os.getpid()
    return _control


def post_call_context() -> post_call_actions.PostCallContext:
    """This process's post-call context; rebuilt in a forked child."""
    global _post_call, _post_call_pid
    if _post_call is None or _post_call_pid != os.getpid():
        with _building:
            if _post_call is None or _post_call_pid != os.getpid():
                settings = Settings()
                _post_call = post_call_actions.PostCallContext.from_settings(settings)
                _post_call_pid = os.getpid()
    return _post_call


def reply_redis() -> redis.Redis:
    """This process's Redis client for tool replies; rebuilt in a forked child."""
    global _replies, _replies_pid
    if _replies is None or _replies_pid != os.getpid():
        with _building:
            if _replies is None or _replies_pid != os.getpid():
                _replies = redis.Redis.from_url(Settings().redis_url or "")
                _replies_pid = os.getpid()
    return _replies


def _backoff_s(failures: int) -> float:
    return backoff_delay_s(failures, random.random(), TASK_BACKOFF)


@app.task(
    name=ROUTE_CALL_TASK, bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None
)
def route_call(self: Any, call_id: str, failures: int = 0) -> str:
    """Route, admit and accept or reject one incoming call (exactly once per call)."""
    try:
        worker = self.request.hostname or ""
        result = actions.route_call(control(), call_id, claim=self.request.id, worker=worker)
    except TRANSIENT as exc:
        if failures >= MAX_TRANSIENT_RETRIES:
            logger.error("route %s: giving up after %d transient failures", call_id, failures)
            _abandon(call_id, self.request.id, exc)
            raise
        raise self.retry(
            args=(call_id,),
            kwargs={"failures": failures + 1},
            countdown=_backoff_s(failures + 1),
            exc=exc,
        ) from exc
    except Exception as exc:
        # Whatever broke, the call must not stay claimed and holding a slot for ever.
        _abandon(call_id, self.request.id, exc)
        raise
    if result.retry_in_s is not None:
        # Unlimited on purpose: ``decide`` ends the wait (a reject) at ``max_wait_s``.
        raise self.retry(countdown=result.retry_in_s)
    return result.outcome.value


def _abandon(call_id: str, claim: str, exc: BaseException) -> None:
    try:
        actions.abandon(control(), call_id, claim, f"{type(exc).__name__}: {exc}")
    except Exception:
        logger.exception("route %s: could not record the failure", call_id)


@app.task(name=REJECT_CALL_TASK, bind=True, max_retries=MAX_TRANSIENT_RETRIES)
def reject_call(self: Any, call_id: str, status_code: int, reason: str = "rejected") -> bool:
    """Refuse a call that has not been answered yet; False if another task holds it.

    The task id is the claim (``workers.actions.reject_call``): a retry resumes the same
    reject, and one cut off for good is finished by recovery's ``route_call`` resume.
    """
    try:
        worker = self.request.hostname or ""
        return actions.reject_call(
            control(), call_id, status_code, reason, claim=self.request.id, worker=worker
        )
    except TRANSIENT as exc:
        raise self.retry(exc=exc, countdown=_backoff_s(self.request.retries + 1)) from exc


@app.task(name=REFER_CALL_TASK, bind=True, max_retries=MAX_TRANSIENT_RETRIES)
def refer_call(self: Any, call_id: str, target: str) -> str:
    """Blind-transfer a live call to a named target or a sip:/tel: URI."""
    try:
        return actions.refer_call(control(), call_id, target)
    except TRANSIENT as exc:
        raise self.retry(exc=exc, countdown=_backoff_s(self.request.retries + 1)) from exc


@app.task(
    name=HANGUP_CALL_TASK,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=MAX_TRANSIENT_RETRIES,
)
def hangup_call(self: Any, call_id: str) -> bool:
    """End a call; hanging up an ended call is a no-op, so this may run twice."""
    try:
        return actions.hangup_call(control(), call_id)
    except TRANSIENT as exc:
        raise self.retry(exc=exc, countdown=_backoff_s(self.request.retries + 1)) from exc


@app.task(
    name=RUN_TOOL_TASK,
    max_retries=0,
    soft_time_limit=TOOL_TIME_LIMIT_S,
    time_limit=TOOL_TIME_LIMIT_S + 5,
)
def run_tool(
    request_id: str, function: str, arguments_json: str, inbox: str, deadline_at: float
) -> bool:
    """Run a blocking Python tool once and answer on the runner's inbox.

    Acknowledged early and never retried: a tool runs at most once. A task picked up
    after its deadline is skipped, as the runner has already answered the model.
    """
    if not inbox.startswith(keys.tool_inbox("")):
        logger.error("run_tool %s: refusing to answer on %r", request_id, inbox)
        return False
    remaining_s = deadline_at - time.time()
    if remaining_s <= 0:
        logger.info("run_tool %s: %s arrived after its deadline; skipped", request_id, function)
        return False
    ok, output = python_tools.run_in_worker(function, arguments_json, remaining_s)
    pipe = reply_redis().pipeline(transaction=False)
    pipe.lpush(inbox, python_tools.reply_message(request_id, ok, output))
    pipe.expire(inbox, keys.TOOL_REPLY_TTL_S)
    pipe.execute()
    return ok


@app.task(
    name=POST_CALL_TASK,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=WEBHOOK_ATTEMPTS - 1,
)
def post_call(self: Any, call_id: str) -> str:
    """Summary record and ``call.completed`` webhook of an ended call; safe to repeat."""
    final = self.request.retries >= WEBHOOK_ATTEMPTS - 1
    try:
        outcome = post_call_actions.post_call(post_call_context(), call_id, final_attempt=final)
    except TRANSIENT as exc:
        delay_s = backoff_delay_s(self.request.retries + 1, random.random(), WEBHOOK_BACKOFF)
        raise self.retry(exc=exc, countdown=delay_s) from exc
    return outcome.value
