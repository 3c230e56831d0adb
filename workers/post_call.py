"""The work after a call ended: its summary record and the signed ``call.completed`` webhook.

``post_call(ctx, call_id)`` is what the ``switchboard.post_call`` task does, and it may
run any number of times for one call (late acks, retries):

1. The summary (``summary_of``: parties, times, duration, turns, end reason, exact
   cost and tokens by model, the final transcript) is written once into the call's
   summary hash (``shared.keys.call_summary``) with HSETNX; later runs reuse it.
2. If a webhook is configured (the policy's ``post_call_webhook``, else
   ``SWITCHBOARD_POST_CALL_WEBHOOK_URL``/``_SECRET``), the event body and its
   ``webhook-id`` are fixed once the same way, so every attempt sends the same bytes
   under the same id (receivers dedupe on it), signed afresh per Standard Webhooks.
   A 2xx marks it delivered and later runs do nothing; anything else raises
   ``WebhookFailed`` (retryable) for the task to retry with backoff, or, on the last
   attempt, marks it failed.
"""

from __future__ import annotations

import enum
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import httpx
import orjson
import redis
import redis.asyncio

from shared import keys
from shared.accounting import Accounting
from shared.errors import ConfigError, RetryableError
from shared.models import CallRecord
from shared.policy_file import PolicySource
from shared.queues import POST_CALL_QUEUE, POST_CALL_TASK
from shared.settings import Settings
from shared.store import CallStore
from shared.task_message import TaskMessages
from shared.usage_totals import Totals
from shared.webhook_signature import signed_headers, signing_key

logger = logging.getLogger(__name__)

EVENT_TYPE = "call.completed"
WEBHOOK_TIMEOUT_S = 10.0
USER_AGENT = "Switchboard/0.1 (post-call webhook)"


class PostCallOutcome(enum.StrEnum):
    """What one run did."""

    SUMMARY_ONLY = "summary_only"
    DELIVERED = "delivered"
    ALREADY_DELIVERED = "already_delivered"
    GAVE_UP = "gave_up"
    MISSING = "missing"
    NOT_ENDED = "not_ended"


class WebhookFailed(RetryableError):
    """The receiver did not answer 2xx (or could not be reached); worth trying again."""


@dataclass(frozen=True)
class WebhookTarget:
    """Where to deliver and how to sign; the secret never appears in a repr."""

    url: str
    secret: str

    def __repr__(self) -> str:
        return f"WebhookTarget(url={self.url!r})"


@dataclass
class PostCallContext:
    """What post-call work uses, built once per worker process."""

    redis: redis.Redis
    policies: PolicySource
    http: httpx.Client
    env_target: WebhookTarget | None = None
    clock: Callable[[], float] = time.time

    @classmethod
    def from_settings(cls, settings: Settings) -> PostCallContext:
        if not settings.redis_url:
            raise ConfigError("SWITCHBOARD_REDIS_URL is not set")
        target = None
        if settings.post_call_webhook_url:
            if settings.post_call_webhook_secret is None:
                raise ConfigError("SWITCHBOARD_POST_CALL_WEBHOOK_SECRET is not set")
            secret = settings.post_call_webhook_secret.get_secret_value()
            signing_key(secret)
            target = WebhookTarget(settings.post_call_webhook_url, secret)
        return cls(
            redis=redis.Redis.from_url(settings.redis_url, decode_responses=True),
            policies=PolicySource(settings.config),
            http=httpx.Client(timeout=WEBHOOK_TIMEOUT_S, follow_redirects=False),
            env_target=target,
        )

    def target(self) -> WebhookTarget | None:
        """The policy's webhook if it names one, else the environment's, else none."""
        configured = self.policies.current().post_call_webhook
        if configured is not None:
            return WebhookTarget(configured.url, configured.secret.get_secret_value())
        return self.env_target

    def close(self) -> None:
        self.http.close()
        self.redis.close()


def summary_of(
    record: CallRecord, transcript: list[dict[str, Any]], totals: Totals
) -> dict[str, Any]:
    """The summary of an ended call (pure)."""
    extra = record.model_extra or {}
    start = record.accepted_at or record.created_at
    duration_s = _number(extra.get("duration_s"))
    if duration_s is None and record.ended_at is not None:
        duration_s = round(max(0.0, record.ended_at - start), 3)
    caller = sum(1 for line in transcript if line["role"] == "caller")
    agent = sum(1 for line in transcript if line["role"] == "agent")
    caller = int(_number(extra.get("caller_turns")) or caller)
    agent = int(_number(extra.get("agent_turns")) or agent)
    costs = totals.to_json()
    return {
        "call_id": record.id,
        "profile": record.profile,
        "from": record.from_,
        "to": record.to,
        "state": record.state.value,
        "end_reason": record.end_reason,
        "created_at": record.created_at,
        "accepted_at": record.accepted_at,
        "ended_at": record.ended_at,
        "duration_s": duration_s,
        "turns": {"caller": caller, "agent": agent, "total": caller + agent},
        "cost_usd": costs["cost_usd"],
        "usage": costs["tokens"],
        "models": costs["models"],
        "transcript": transcript,
    }


def _number(value: object) -> float | None:
    try:
        return float(value) if value is not None else None  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def transcript_of(client: redis.Redis, call_id: str) -> list[dict[str, Any]]:
    """The call's transcript lines, oldest first, as ``{role, text, at}``."""
    entries = cast("list[Any]", client.xrange(keys.call_transcript(call_id)))
    lines = []
    for _, fields in entries:
        lines.append(
            {
                "role": fields.get("role", ""),
                "text": fields.get("text", ""),
                "at": _number(fields.get("at")),
            }
        )
    return lines


def post_call(
    ctx: PostCallContext, call_id: str, *, final_attempt: bool = False
) -> PostCallOutcome:
    """Summarise an ended call and deliver its webhook (see the module docstring)."""
    key = keys.call_summary(call_id)
    summary = cast("str | None", ctx.redis.hget(key, "summary"))
    if summary is None:
        record = CallStore(ctx.redis).get(call_id)
        if record is None:
            logger.warning("post-call %s: no such call", call_id)
            return PostCallOutcome.MISSING
        if not record.terminal:
            logger.warning("post-call %s: the call is still %s", call_id, record.state.value)
            return PostCallOutcome.NOT_ENDED
        totals = Accounting(ctx.redis, ctx.policies.current().prices).call_cost(call_id)
        built = summary_of(record, transcript_of(ctx.redis, call_id), totals)
        ctx.redis.hsetnx(key, "summary", orjson.dumps(built).decode())
        ctx.redis.expire(key, keys.CALL_TTL_S)
        summary = cast("str", ctx.redis.hget(key, "summary"))
    target = ctx.target()
    if target is None:
        return PostCallOutcome.SUMMARY_ONLY
    if ctx.redis.hget(key, "webhook_status") == "delivered":
        return PostCallOutcome.ALREADY_DELIVERED
    webhook_id, body = _fixed_event(ctx, key, summary)
    return _deliver(ctx, key, target, webhook_id, body, final_attempt)


def _fixed_event(ctx: PostCallContext, key: str, summary: str) -> tuple[str, bytes]:
    """The webhook id and body, chosen by the first run and reused by every other."""
    token = uuid.uuid4().hex
    event = {
        "object": "event",
        "id": f"evt_{token}",
        "type": EVENT_TYPE,
        "created_at": int(ctx.clock()),
        "data": orjson.loads(summary),
    }
    pipe = ctx.redis.pipeline(transaction=True)
    pipe.hsetnx(key, "webhook_id", f"msg_{token}")
    pipe.hsetnx(key, "event", orjson.dumps(event).decode())
    pipe.hmget(key, ["webhook_id", "event"])
    webhook_id, body = pipe.execute()[-1]
    return str(webhook_id), str(body).encode()


def _deliver(
    ctx: PostCallContext,
    key: str,
    target: WebhookTarget,
    webhook_id: str,
    body: bytes,
    final_attempt: bool,
) -> PostCallOutcome:
    headers = signed_headers(target.secret, webhook_id, int(ctx.clock()), body)
    headers |= {"content-type": "application/json", "user-agent": USER_AGENT}
    ctx.redis.hincrby(key, "webhook_attempts", 1)
    try:
        response = ctx.http.post(target.url, content=body, headers=headers)
        problem = None if response.is_success else f"HTTP {response.status_code}"
    except httpx.HTTPError as err:
        problem = f"{type(err).__name__}"
    if problem is None:
        ctx.redis.hset(key, mapping={"webhook_status": "delivered", "delivered_at": ctx.clock()})
        return PostCallOutcome.DELIVERED
    ctx.redis.hset(key, "webhook_last_error", problem)
    if final_attempt:
        ctx.redis.hset(key, "webhook_status", "failed")
        logger.error(
            "post-call webhook %s to %s: giving up after %s", webhook_id, target.url, problem
        )
        return PostCallOutcome.GAVE_UP
    raise WebhookFailed(f"post-call webhook {webhook_id} to {target.url}: {problem}")


_messages = TaskMessages()


async def enqueue_post_call(client: redis.asyncio.Redis, call_id: str) -> None:
    """Queue ``switchboard.post_call`` for an ended call without blocking the event loop."""
    message = _messages.build(POST_CALL_TASK, [call_id], POST_CALL_QUEUE)
    await client.lpush(POST_CALL_QUEUE, message)  # type: ignore[misc]
