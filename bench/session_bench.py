"""A live-call stack for the session benchmarks: Redis, an emulator, runners, Celery tools.

Calls are placed with the emulator, written as ``incoming`` (as the ingress does) and
routed with ``workers.actions.route_call`` (as the control worker does), so the runners
get real accepted calls. The emulator runs in this process (a uvicorn thread) so that
``SendClock`` can stamp, at the emulator, when each event went out; the benchmark's own
thread stays idle while it measures.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from bench.stack import API_KEY, WEBHOOK_SECRET, BenchStack
from emulator.state import EmulatedCall
from shared.settings import Settings
from shared.store import CallStore
from tests.support.control import create_incoming
from tests.support.emulator import EmulatorHandle, running_emulator
from workers import actions

HOLD_CALL = """\
name: bench-hold
description: A caller who talks now and then for ten minutes (commands and failover).
greeting_wait_s: 0
reply_patience_s: 600
steps:
""" + "".join(f'  - {{say: "Still there? Part {n}.", pause_s: 10}}\n' for n in range(60))

TOOL_STEP = (
    '  - {{say: "Order {n}?", pause_s: 0.5, seconds: 0.5, '
    'tool: {{name: TOOL, arguments: {{order_id: "{n}"}}}}}}\n'
)
TOOL_CALL = (
    "name: NAME\n"
    "description: Every turn makes the model call TOOL, which answers at once.\n"
    "greeting_wait_s: 0\n"
    "reply_patience_s: 60\n"
    "steps:\n" + "".join(TOOL_STEP.format(n=n) for n in range(40))
)
"""NAME and TOOL are filled in per scenario."""


class SendClock:
    """When the emulator sent events of one type: ``(call_id, key) -> time.time()``."""

    def __init__(self, event_type: str, key: str) -> None:
        self.event_type, self.key = event_type, key
        self.sent_at: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        self._original = EmulatedCall.record_sent

    def __enter__(self) -> SendClock:
        clock, original = self, self._original

        def record_sent(call: EmulatedCall, event: dict[str, Any]) -> None:
            if event.get("type") == clock.event_type:
                with clock._lock:
                    clock.sent_at[(call.call_id, str(event.get(clock.key)))] = time.time()
            original(call, event)

        EmulatedCall.record_sent = record_sent  # type: ignore[method-assign,assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        EmulatedCall.record_sent = self._original  # type: ignore[method-assign]


class ReceiveClock:
    """When the emulator received client events of some types, per call, in order.

    ``received[call_id]`` is ``[(time.time(), event)]``: the stamp is taken as the
    emulator records the decoded frame, before it acts on it.
    """

    def __init__(self, *event_types: str) -> None:
        self.event_types = frozenset(event_types)
        self.received: dict[str, list[tuple[float, dict[str, Any]]]] = {}
        self._lock = threading.Lock()
        self._original = EmulatedCall.record_received

    def __enter__(self) -> ReceiveClock:
        clock, original = self, self._original

        def record_received(call: EmulatedCall, event: dict[str, Any]) -> None:
            if event.get("type") in clock.event_types:
                at = time.time()
                with clock._lock:
                    clock.received.setdefault(call.call_id, []).append((at, event))
            original(call, event)

        EmulatedCall.record_received = record_received  # type: ignore[method-assign,assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        EmulatedCall.record_received = self._original  # type: ignore[method-assign]

    def calls(self, call_ids: list[str]) -> dict[str, list[tuple[float, dict[str, Any]]]]:
        """What was received on these calls so far (a copy)."""
        with self._lock:
            return {c: list(self.received.get(c, ())) for c in call_ids}


class SessionBench:
    """A ``BenchStack`` with an in-process emulator and in-process call routing."""

    def __init__(self, stack: BenchStack, emu: EmulatorHandle) -> None:
        self.stack = stack
        self.emu = emu
        stack.emu = emu
        self.rdb = stack.rdb()
        self.store = CallStore(self.rdb)
        self.settings = Settings(
            redis_url=stack.redis_url,
            openai_base_url=emu.api_url,
            openai_api_key=API_KEY,
            config=stack.policy_path,
        )
        self.control = actions.Control.from_settings(self.settings)

    def place_call(self, scenario: str) -> str:
        """A call answered by the policy and queued for the runners; its call id."""
        call_id = self.emu.place_call(scenario=scenario)
        create_incoming(self.store, call_id)
        result = actions.route_call(self.control, call_id, claim=f"bench-{uuid.uuid4().hex}")
        if result.outcome is not actions.Outcome.ACCEPTED:
            raise RuntimeError(f"call {call_id} not accepted: {result}")
        return call_id

    def truth(self, call_id: str) -> dict[str, Any]:
        return self.emu.call(call_id, events=False)

    def attached(self, call_id: str) -> bool:
        attachments = self.truth(call_id)["attachments"]
        return bool(attachments) and attachments[-1]["closed_at"] is None

    def wait_attached(self, call_ids: list[str], timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        waiting = list(call_ids)
        while waiting:
            waiting = [c for c in waiting if not self.attached(c)]
            if waiting and time.monotonic() > deadline:
                raise TimeoutError(f"{len(waiting)} calls never attached")
            if waiting:
                time.sleep(0.2)


@contextlib.contextmanager
def session_bench(
    name: str,
    time_scale: float = 1.0,
    spawned: bool = False,
    extra_scenarios: Mapping[str, str] | None = None,
) -> Iterator[SessionBench]:
    """The stack with Redis and an emulator playing the bench scenarios.

    ``spawned``: the emulator runs as its own process (``switchboard emulator``) instead
    of a thread here, for loads where it needs a core of its own. ``extra_scenarios``:
    more scenario files for the emulator, YAML text by scenario name.
    """
    with BenchStack(name) as stack:
        stack.start_redis()
        scenarios = stack.workdir / "scenarios"
        scenarios.mkdir()
        (scenarios / "bench-hold.yaml").write_text(HOLD_CALL)
        for scenario, tool in (
            ("bench-tool-async", "lookup_order"),
            ("bench-tool-celery", "lookup_order_blocking"),
        ):
            text = TOOL_CALL.replace("NAME", scenario).replace("TOOL", tool)
            (scenarios / f"{scenario}.yaml").write_text(text)
        for scenario, text in (extra_scenarios or {}).items():
            (scenarios / f"{scenario}.yaml").write_text(text)
        if spawned:
            emulator: contextlib.AbstractContextManager[EmulatorHandle] = contextlib.nullcontext(
                stack.emulator(
                    None, "--time-scale", str(time_scale), "--scenario-dir", str(scenarios)
                )
            )
        else:
            emulator = running_emulator(
                api_key=API_KEY,
                webhook_secret=WEBHOOK_SECRET,
                time_scale=time_scale,
                scenario_dirs=[scenarios],
                dead_air_timeout_s=60.0,
            )
        with emulator as emu:
            bench = SessionBench(stack, emu)
            try:
                yield bench
            finally:
                bench.control.close()
