"""The pieces of a live call for session-runner tests: emulator, Redis, runners, routing.

A call is placed with the emulator, written as ``incoming`` with the store (as the
ingress does) and routed with ``workers.actions.route_call`` (as the control worker
does): the real accept over REST with the policy's session body, then the call id on
``keys.PENDING_CALLS``. Runners are real ``switchboard runner`` processes.
"""

from __future__ import annotations

import base64
import json
import signal
import textwrap
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import redis

from shared import keys
from shared.models import CallRecord
from shared.policy_file import PolicySource
from shared.queues import POST_CALL_QUEUE, POST_CALL_TASK
from shared.settings import Settings
from shared.store import CallStore
from tests.support.control import create_incoming
from tests.support.emulator import EmulatorHandle
from tests.support.procs import Child, spawn, switchboard_argv, wait_until
from tests.support.runner_tools import TOOL_LOG_ENV
from workers import actions
from workers.post_call import PostCallContext, PostCallOutcome, post_call

RUNNER_POLICY = """\
transfer_targets:
  human: sip:agent@pbx.example.com
tools:
  lookup_order:
    description: Look up an order by its number.
    parameters:
      type: object
      properties: {order_id: {type: string}}
      required: [order_id]
    handler: {type: python, function: "tests.support.runner_tools:lookup_order", timeout_s: 3}
  slow_lookup:
    description: Look up an order in the slow archive.
    parameters:
      type: object
      properties: {order_id: {type: string}}
      required: [order_id]
    handler: {type: python, function: "tests.support.runner_tools:slow_lookup", timeout_s: 10}
profiles:
  support:
    instructions: You help {caller} who dialled {called}.
    greeting: Hello, thanks for calling. How can I help?
    transcription: {model: gpt-4o-mini-transcribe}
    turn_detection: {type: server_vad, silence_duration_ms: 400}
    tools: [lookup_order, transfer_call, end_call]
    dtmf:
      "0": {action: transfer, target: human}
  steady:
    instructions: You help {caller} who dialled {called}.
    transcription: {model: gpt-4o-mini-transcribe}
    turn_detection: {type: server_vad, silence_duration_ms: 400}
    tools: [lookup_order, slow_lookup, transfer_call, end_call]
  timed:
    instructions: You help {caller} who dialled {called}.
    turn_detection: {type: server_vad, silence_duration_ms: 400}
    max_duration_s: 4
    max_duration_wrap_up: {goodbye: "We are out of time today. Goodbye.", grace_s: 2}
  budgeted:
    instructions: You help {caller} who dialled {called}.
    greeting: Hello, thanks for calling. How can I help?
    turn_detection: {type: server_vad, silence_duration_ms: 400}
    budget_usd: 0.0001
    budget_wrap_up: {goodbye: "That is all I can do on this call. Goodbye.", grace_s: 5}
  quiet:
    instructions: You help {caller} who dialled {called}.
    turn_detection: {type: server_vad, silence_duration_ms: 400}
    idle:
      timeout_s: 5
      max_prompts: 1
      prompt: Hello? Are you still on the line?
      goodbye: I cannot hear you, so I will hang up now. Goodbye.
routes:
  - match: {called: "+18005550199"}
    action: {type: accept, profile: steady}
  - match: {called: "+18005550101"}
    action: {type: accept, profile: timed}
  - match: {called: "+18005550102"}
    action: {type: accept, profile: budgeted}
  - match: {called: "+18005550103"}
    action: {type: accept, profile: quiet}
  - action: {type: accept, profile: support}
"""
STEADY_LINE = "+18005550199"
"""The called number routed to the ``steady`` profile."""
SUPPORT_LINE = "+18005550100"
"""The ``support`` profile: greeting, tools, ``0`` transfers to ``human``."""
TIMED_LINE = "+18005550101"
"""The ``timed`` profile: a 4 s max duration whose goodbye starts 2 s before it."""
BUDGETED_LINE = "+18005550102"
"""The ``budgeted`` profile: a budget its greeting alone exceeds, then a goodbye."""
QUIET_LINE = "+18005550103"
"""The ``quiet`` profile: a 5 s idle timeout, one prompt, then a goodbye."""

STEADY_CALL = """\
name: steady-call
description: Six short turns with pauses between them; patient with a silent line.
greeting_wait_s: 0
reply_patience_s: 400
steps:
  - {say: "Hi, I have a question about my order.", pause_s: 8}
  - {say: "It was placed last week.", pause_s: 8}
  - {say: "The number is one two three.", pause_s: 8}
  - {say: "Could you check the delivery date?", pause_s: 8}
  - {say: "Thanks, that helps a lot.", pause_s: 8}
  - {say: "Goodbye.", pause_s: 8}
"""
"""A scenario long enough (about 5 s at time scale 0.05) to kill or drain a runner in.

Steady calls go to the ``steady`` profile, which has no greeting: the caller speaks
first, so its timing does not hang on when the greeting ends.
"""

STEADY_ORDER = """\
name: steady-order
description: The steady call with an order lookup (the lookup_order tool) in the middle.
greeting_wait_s: 0
reply_patience_s: 400
steps:
  - {say: "Hi, I have a question about my order.", pause_s: 8}
  - say: "The number is 12345. Where is it?"
    pause_s: 8
    tool: {name: lookup_order, arguments: {order_id: "12345"}}
  - {say: "Could you check the delivery date?", pause_s: 8}
  - {say: "And can I change the address?", pause_s: 8}
  - {say: "Thanks, that helps a lot.", pause_s: 8}
  - {say: "Goodbye.", pause_s: 8}
"""

STEADY_SLOW_ORDER = """\
name: steady-slow-order
description: The steady order call, looked up in the slow archive (the slow_lookup tool).
greeting_wait_s: 0
reply_patience_s: 400
steps:
  - {say: "Hi, I have a question about my order.", pause_s: 8}
  - say: "The number is 12345. Where is it?"
    pause_s: 8
    tool: {name: slow_lookup, arguments: {order_id: "12345"}}
  - {say: "Could you check the delivery date?", pause_s: 8}
  - {say: "And can I change the address?", pause_s: 8}
  - {say: "Thanks, that helps a lot.", pause_s: 8}
  - {say: "Goodbye.", pause_s: 8}
"""
"""The steady order call whose lookup takes ``runner_tools.SLOW_LOOKUP_S`` (wall clock),
so a runner can be stopped while it runs."""


def write_scenarios(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "steady-call.yaml").write_text(STEADY_CALL)
    (folder / "steady-order.yaml").write_text(STEADY_ORDER)
    (folder / "steady-slow-order.yaml").write_text(STEADY_SLOW_ORDER)
    return folder


class SessionStack:
    """Redis, an emulator, a policy and the runners of one test module."""

    def __init__(self, redis_url: str, emu: EmulatorHandle, workdir: Path) -> None:
        self.redis_url = redis_url
        self.emu = emu
        self.workdir = workdir
        self.policy_path = workdir / "policy.yaml"
        self.policy_path.write_text(textwrap.dedent(RUNNER_POLICY))
        self.tool_log = workdir / "tool-runs.log"
        self.tool_log.touch()
        self.rdb = redis.Redis.from_url(redis_url, decode_responses=True)
        self.store = CallStore(self.rdb)
        self.settings = Settings(
            redis_url=redis_url,
            openai_base_url=emu.api_url,
            openai_api_key=emu.api_key,
            config=self.policy_path,
        )
        self.control = actions.Control.from_settings(self.settings)
        self.runners: dict[str, Child] = {}

    def env(self) -> dict[str, str]:
        return {
            "SWITCHBOARD_REDIS_URL": self.redis_url,
            "OPENAI_BASE_URL": self.emu.api_url,
            "OPENAI_API_KEY": self.emu.api_key,
            "SWITCHBOARD_CONFIG": str(self.policy_path),
            TOOL_LOG_ENV: str(self.tool_log),
        }

    def start_runner(self, runner_id: str, *args: str) -> Child:
        argv = switchboard_argv("runner", "--id", runner_id, *args)
        child = spawn(f"runner-{runner_id}", argv, self.workdir, env=self.env())
        self.runners[runner_id] = child
        wait_until(
            lambda: self.rdb.zscore(keys.RUNNERS, runner_id) is not None,
            20.0,
            f"runner {runner_id} registered",
            child,
        )
        return child

    def place_call(self, scenario: str, to: str | None = None) -> str:
        """A call to ``to`` (by default the scenario's usual line) answered by the policy
        and queued for the runners; its call id."""
        if to is None:
            to = STEADY_LINE if scenario.startswith("steady-") else SUPPORT_LINE
        call_id = self.emu.place_call(scenario=scenario, to=to)
        create_incoming(self.store, call_id, to=to)
        result = actions.route_call(self.control, call_id, claim=f"test-{uuid.uuid4().hex}")
        assert result.outcome is actions.Outcome.ACCEPTED, result
        return call_id

    def record(self, call_id: str) -> CallRecord:
        record = self.store.get(call_id)
        assert record is not None
        return record

    def raw_record(self, call_id: str) -> dict[str, Any]:
        raw: dict[str, Any] = self.rdb.hgetall(keys.call_record(call_id))  # type: ignore[assignment]
        return raw

    def wait_state(self, call_id: str, state: str, timeout_s: float = 20.0) -> CallRecord:
        wait_until(
            lambda: self.rdb.hget(keys.call_record(call_id), "state") == state,
            timeout_s,
            f"call {call_id} {state}",
        )
        return self.record(call_id)

    def wait_ended(self, call_id: str, timeout_s: float = 30.0) -> dict[str, Any]:
        """Wait until the call ended for us and for the emulator; the emulator's truth."""
        self.wait_state(call_id, "ended", timeout_s)
        return self.emu.wait_for_call(
            call_id, lambda truth: truth["state"] == "ended", timeout_s, "emulator call ended"
        )

    def post_call_queued(self, call_id: str) -> bool:
        """Whether a ``switchboard.post_call`` task for ``call_id`` waits on its queue."""
        for raw in self.rdb.lrange(POST_CALL_QUEUE, 0, -1):  # type: ignore[union-attr]
            message = json.loads(raw)
            args, _, _ = json.loads(base64.b64decode(message["body"]))
            if message["headers"]["task"] == POST_CALL_TASK and args == [call_id]:
                return True
        return False

    def run_post_call(self, call_id: str) -> dict[str, Any]:
        """Do the post-call work of ``call_id`` as the worker would; the summary it wrote."""
        context = PostCallContext(
            redis=self.rdb, policies=PolicySource(self.policy_path), http=httpx.Client()
        )
        try:
            assert post_call(context, call_id) is PostCallOutcome.SUMMARY_ONLY
        finally:
            context.http.close()
        summary = self.rdb.hget(keys.call_summary(call_id), "summary")
        assert isinstance(summary, str)
        result: dict[str, Any] = json.loads(summary)
        return result

    def holder(self, call_id: str) -> str | None:
        owner = self.rdb.get(keys.call_lease(call_id))
        return owner.partition(":")[2] if owner else None

    def tool_runs(self) -> list[str]:
        return self.tool_log.read_text().split()

    def stop_runner(
        self, runner_id: str, sig: int = signal.SIGTERM, timeout_s: float = 30.0
    ) -> int | None:
        return self.runners[runner_id].stop(sig, timeout_s)

    def close(self) -> None:
        for child in self.runners.values():
            child.stop(signal.SIGKILL)
        self.control.close()
        self.rdb.close()


@contextmanager
def session_stack(redis_url: str, emu: EmulatorHandle, workdir: Path) -> Iterator[SessionStack]:
    client = redis.Redis.from_url(redis_url)
    try:
        client.flushall()
    finally:
        client.close()
    stack = SessionStack(redis_url, emu, workdir)
    try:
        yield stack
    finally:
        stack.close()
