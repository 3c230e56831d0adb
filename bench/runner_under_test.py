"""A ``switchboard runner`` under measurement, and the runners' queue, for session benchmarks.

``RunnerUnderTest.start`` spawns a runner with a metrics endpoint and returns once it
has registered and answers ``/metrics``; ``warm_up`` then has it hold one call through
its first turn and end it, so that what it loads on first use is loaded before its
empty memory is read. ``hold_back`` and ``queue`` take calls off the runners' queue and
put them back, so that a call can be held some other way first.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import httpx

from bench.session_bench import SessionBench
from shared import keys
from shared.errors import SwitchboardError
from tests.observability.exposition import Samples, parse
from tests.support.ports import free_port
from tests.support.procs import Child, http_ok, wait_until

EVENTS_METRIC = "switchboard_session_events_total"
CALLS_METRIC = "switchboard_runner_calls"


def events(samples: Samples, event_type: str | None = None) -> float:
    """Sideband events a runner received (of one type, or all)."""
    return sum(
        value
        for (name, labels), value in samples.items()
        if name == EVENTS_METRIC and (event_type is None or dict(labels)["type"] == event_type)
    )


@dataclass
class RunnerUnderTest:
    """A runner of a benchmark's stack and its metrics endpoint."""

    child: Child
    metrics_url: str

    @classmethod
    def start(cls, bench: SessionBench, runner_id: str, *args: str) -> RunnerUnderTest:
        """A runner (extra ``args``) that has registered and answers ``/metrics``."""
        port = free_port()
        child = bench.stack.runner(runner_id, "--metrics-port", str(port), *args)
        runner = cls(child, f"http://127.0.0.1:{port}/metrics")
        wait_until(http_ok(runner.metrics_url), 30.0, f"runner {runner_id} /metrics", child)
        return runner

    @property
    def pid(self) -> int:
        return self.child.proc.pid

    def scrape(self) -> Samples:
        return parse(httpx.get(self.metrics_url, timeout=10.0).text)

    def held(self) -> int:
        """Calls it holds (its own gauge, updated every second)."""
        samples = self.scrape()
        return int(sum(v for (name, _), v in samples.items() if name == CALLS_METRIC))

    def wait_held(self, count: int, what: str, timeout_s: float = 30.0) -> None:
        wait_until(lambda: self.held() >= count, timeout_s, what, self.child)

    def wait_empty(self, what: str, timeout_s: float = 60.0) -> None:
        wait_until(lambda: self.held() == 0, timeout_s, what, self.child)

    def warm_up(self, bench: SessionBench, scenario: str) -> None:
        """Hold one call of ``scenario`` through its first turn, end it, wait until gone."""
        call_id = bench.place_call(scenario)
        wait_until(
            lambda: events(self.scrape(), "response.done") >= 1,
            90.0,
            "the warm-up call's first turn",
            self.child,
        )
        hang_up(bench, [call_id])
        self.wait_empty("the warm-up call to end")


def hang_up(bench: SessionBench, call_ids: list[str]) -> None:
    """End calls at the emulator (REST hangup); one already over is no error."""
    for call_id in call_ids:
        with contextlib.suppress(SwitchboardError):
            bench.control.realtime.hangup(call_id)


def hold_back(bench: SessionBench, call_ids: list[str]) -> None:
    """Take calls off the runners' queue (they are held some other way)."""
    pipe = bench.rdb.pipeline(transaction=False)
    for call_id in call_ids:
        pipe.lrem(keys.PENDING_CALLS, 0, call_id)
    pipe.execute()


def queue(bench: SessionBench, call_ids: list[str]) -> None:
    """Put calls (back) on the runners' queue."""
    if call_ids:
        bench.rdb.lpush(keys.PENDING_CALLS, *call_ids)
