"""The traffic generator: simulated callers placing calls at a steady rate.

Calls are placed through the same ``Dialer`` as ``POST /_emulator/calls``, on a
fixed tick: each tick places however many calls the elapsed time says are due, so
the rate holds even when the event loop is busy. Placing a call only registers it
and queues its webhook (the sender's worker pool bounds the posts in flight), which
keeps one process well above 500 calls per second.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
from collections.abc import Mapping

from emulator.dialer import Dialer, UnknownScenarioError

#: Pass as the scenario to draw each call's scenario from ``MIX_WEIGHTS``.
MIX = "mix"
#: Relative weights of the built-in scenarios in the ``mix``.
MIX_WEIGHTS: Mapping[str, float] = {
    "order-status": 30,
    "quick-question": 25,
    "transfer-to-human": 15,
    "dtmf-zero": 8,
    "hang-up-early": 8,
    "silent-caller": 7,
    "long-call": 7,
}
#: The numbers callers dial (the call center's lines).
CALLED_NUMBERS = ("+18005550100", "+18005550101", "+18005550123")
TICK_S = 0.005
#: Calls placed between yields to the event loop when catching up on a backlog.
BURST = 200


def caller_number(rng: random.Random) -> str:
    """A plausible North American caller number, E.164."""
    return f"+1{rng.randint(201, 989)}555{rng.randint(0, 9999):04d}"


class TrafficGenerator:
    """Places calls at ``calls_per_second`` for ``duration_s`` (None: until cancelled)."""

    def __init__(
        self,
        dialer: Dialer,
        scenarios: Mapping[str, object],
        calls_per_second: float,
        *,
        scenario: str = MIX,
        duration_s: float | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if calls_per_second <= 0 or not math.isfinite(calls_per_second):
            raise ValueError("calls_per_second must be a positive number")
        if duration_s is not None and duration_s < 0:
            raise ValueError("duration_s must not be negative")
        if scenario == MIX:
            self._names = [name for name in MIX_WEIGHTS if name in scenarios]
            if not self._names:
                raise UnknownScenarioError("none of the mix's scenarios is loaded")
        elif scenario in scenarios:
            self._names = [scenario]
        else:
            raise UnknownScenarioError(scenario)
        self._cum_weights = list(itertools.accumulate(MIX_WEIGHTS.get(n, 1) for n in self._names))
        self._dialer = dialer
        self._rate = calls_per_second
        self._duration_s = duration_s
        self._rng = rng or random.Random()
        self.placed = 0

    def _target(self, elapsed_s: float) -> int:
        """Calls that should have been placed after ``elapsed_s``."""
        due = math.floor(elapsed_s * self._rate + 1e-9)
        if self._duration_s is not None:
            due = min(due, round(self._duration_s * self._rate))
        return due

    def _place_one(self) -> None:
        rng = self._rng
        if len(self._names) == 1:
            name = self._names[0]
        else:
            name = rng.choices(self._names, cum_weights=self._cum_weights)[0]
        self._dialer.place(caller_number(rng), rng.choice(CALLED_NUMBERS), name)
        self.placed += 1

    async def run(self) -> int:
        """Place calls until the duration is over (or forever); returns how many."""
        loop = asyncio.get_running_loop()
        started_s = loop.time()
        final = None if self._duration_s is None else round(self._duration_s * self._rate)
        while final is None or self.placed < final:
            due = self._target(loop.time() - started_s)
            while self.placed < due:
                for _ in range(min(BURST, due - self.placed)):
                    self._place_one()
                if self.placed < due:
                    await asyncio.sleep(0)
            if final is not None and self.placed >= final:
                break
            await asyncio.sleep(TICK_S)
        return self.placed
