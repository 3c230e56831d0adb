"""What every session worker of a runner shares: clients, stores, metrics and settings.

``RunnerConfig`` and ``SessionTiming`` are the runner's and its sessions' timings.
Failover time is bounded by ``RunnerConfig.lease_ttl_s`` (a dead runner's leases
expire) plus ``sweep_every_s`` (another runner notices) plus one attach; the lease, not
the heartbeat, decides who may act on a call.

Built once per runner process (``open_services``) and handed to each
``SessionWorker``. Tools are looked up by name in the current routing policy and run by
``workers.sessions.tool_runner``; the post-call task is queued without a Celery client
(``shared.task_message``), so the event loop never blocks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio
from prometheus_client import CollectorRegistry

from shared import keys
from shared.commands import AsyncCommandQueue
from shared.errors import ConfigError
from shared.policy import Policy
from shared.policy_file import PolicySource
from shared.queues import POST_CALL_QUEUE, POST_CALL_TASK
from shared.realtime_client import AsyncRealtimeClient
from shared.settings import Settings
from shared.task_message import TaskMessages
from workers.admission import AsyncAdmission
from workers.python_tools import error_output
from workers.sessions.connection import SidebandConfig
from workers.sessions.lease import Leases
from workers.sessions.runner_metrics import RunnerMetrics
from workers.sessions.session_store import SessionStore
from workers.sessions.tool_runner import ToolRunner

ToolCall = Callable[[str, Mapping[str, Any], float], Awaitable[tuple[bool, str]]]
"""Run a configured tool by name with its arguments and timeout: ``(ok, output)``."""

PostCall = Callable[[str], Awaitable[None]]
"""Queue the post-call work of an ended call."""


@dataclass(frozen=True)
class SessionTiming:
    """Session-level timings, with named defaults."""

    snapshot_every_s: float = 0.2
    """Snapshots are batched: at most one per call this often (and always before release)."""
    after_end_s: float = 5.0
    """How long a call that ended keeps its socket for the last bills and transcripts."""
    quiet_wait_s: float = 3.0
    """How long a hand-over waits for a moment with no response in flight."""
    handover_tool_wait_s: float = 10.0
    """How long a hand-over waits for running tools, so their results are not lost."""
    finish_wait_s: float = 15.0
    """How long an ended call waits for its last effects (REST, records) to be done."""


@dataclass(frozen=True)
class RunnerConfig:
    """How one runner behaves; every timing has a named default."""

    capacity: int = 1000
    lease_ttl_s: float = float(keys.LEASE_TTL_S)
    renew_every_s: float = 1.0
    beat_every_s: float = 1.0
    sweep_every_s: float = 0.5
    dead_after_s: float = 2.5
    """A runner silent this long is dead to the others (its leases expire on their own)."""
    pull_timeout_s: int = 1
    command_block_ms: int = 1000
    """Longest wait for a command notification (commands wake the reader at once)."""
    full_gc_every_s: float | None = None
    """Run full garbage collections on this schedule instead of CPython's own
    (``workers.sessions.collector``); ``None`` leaves the collector alone."""
    drain_grace_s: float = 300.0
    drain_poll_s: float = 0.5
    loop_lag_every_s: float = 0.25
    """How often the event loop's lag is sampled (``workers.sessions.loop_lag``)."""

    @property
    def self_fence_after_s(self) -> float:
        return self.lease_ttl_s - 1.5 * self.renew_every_s

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise ValueError("capacity must be at least 1")
        if self.self_fence_after_s <= 0:
            raise ValueError("leases must live longer than 1.5 renewal intervals")
        if self.loop_lag_every_s <= 0:
            raise ValueError("the loop-lag sampling period must be positive")


@dataclass
class SessionServices:
    """The shared dependencies of one runner's session workers."""

    runner_id: str
    redis: redis.asyncio.Redis
    leases: Leases
    store: SessionStore
    realtime: AsyncRealtimeClient
    admission: AsyncAdmission
    commands: AsyncCommandQueue
    metrics: RunnerMetrics
    run_tool: ToolCall
    post_call: PostCall
    policy: Callable[[], Policy]
    sideband_base_url: str
    api_key: str
    sideband: SidebandConfig = field(default_factory=SidebandConfig)
    timing: SessionTiming = field(default_factory=SessionTiming)


@asynccontextmanager
async def open_services(
    settings: Settings,
    runner_id: str,
    lease_ttl_s: float,
    registry: CollectorRegistry,
    policies: PolicySource,
) -> AsyncIterator[SessionServices]:
    """Clients for one runner process from ``settings``; all closed on exit."""
    if not settings.redis_url:
        raise ConfigError("SWITCHBOARD_REDIS_URL is not set")
    if settings.openai_api_key is None:
        raise ConfigError("OPENAI_API_KEY is not set")
    client = redis.asyncio.Redis.from_url(settings.redis_url, decode_responses=True)
    metrics = RunnerMetrics(registry, runner_id)
    realtime = AsyncRealtimeClient.from_settings(settings, observe=metrics.observe_rest)
    tools = ToolRunner(client)
    messages = TaskMessages()

    async def run_tool(
        name: str, arguments: Mapping[str, Any], timeout_s: float
    ) -> tuple[bool, str]:
        spec = policies.current().tools.get(name)
        if spec is None:
            return False, error_output(f"tool {name} is no longer configured")
        # The handler's own timeout: the core's deadline (``timeout_s``) allows a margin
        # beyond it, so the handler reports its timeout before the core gives up.
        outcome = await tools.run_tool(spec, arguments, None)
        return outcome.ok, outcome.output

    async def post_call(call_id: str) -> None:
        message = messages.build(POST_CALL_TASK, [call_id], POST_CALL_QUEUE)
        await client.lpush(POST_CALL_QUEUE, message)

    leases = Leases(client, runner_id, lease_ttl_s)
    try:
        yield SessionServices(
            runner_id=runner_id,
            redis=client,
            leases=leases,
            store=SessionStore(client, leases),
            realtime=realtime,
            admission=AsyncAdmission(client),
            commands=AsyncCommandQueue(client, policy=policies.current),
            metrics=metrics,
            run_tool=run_tool,
            post_call=post_call,
            policy=policies.current,
            sideband_base_url=settings.sideband_base_url,
            api_key=settings.openai_api_key.get_secret_value(),
        )
    finally:
        await tools.aclose()
        await realtime.aclose()
        await client.aclose()
