"""The event loop's lag sampler: it sees a stall, at the period it is given."""

from __future__ import annotations

import asyncio
import time

import pytest

from workers.sessions.loop_lag import sample_lag
from workers.sessions.services import RunnerConfig


class Samples:
    """Lags observed so far; ``reached(n)`` waits until there are ``n`` of them."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self._grew = asyncio.Event()

    def observe(self, lag_s: float) -> None:
        self.lags.append(lag_s)
        self._grew.set()

    async def reached(self, count: int) -> None:
        while len(self.lags) < count:
            self._grew.clear()
            await self._grew.wait()


async def test_a_stalled_loop_is_observed_as_lag() -> None:
    samples = Samples()
    task = asyncio.create_task(sample_lag(0.005, samples.observe))
    try:
        await samples.reached(1)  # the sampler's timer is armed again now
        time.sleep(0.06)  # holds the event loop, as a blocking call would
        await samples.reached(2)
    finally:
        task.cancel()
    assert max(samples.lags[1:]) >= 0.05
    assert all(lag >= 0 for lag in samples.lags)


async def test_samples_come_at_the_period_given() -> None:
    samples = Samples()
    started = time.monotonic()
    task = asyncio.create_task(sample_lag(0.005, samples.observe))
    try:
        async with asyncio.timeout(10):
            await samples.reached(20)
    finally:
        task.cancel()
    elapsed = time.monotonic() - started
    # Never faster than the period; far faster than the default 0.25 s (5 s for 20).
    assert 20 * 0.005 <= elapsed < 2.5


async def test_a_period_that_is_not_positive_is_refused() -> None:
    with pytest.raises(ValueError, match="period"):
        await sample_lag(0.0, lambda lag: None)
    with pytest.raises(ValueError, match="loop-lag"):
        RunnerConfig(loop_lag_every_s=-1.0)
