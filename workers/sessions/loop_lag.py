"""The event loop's lag: how late the loop runs a timer it armed, sampled forever.

A runner's calls share one event loop; a callback that holds it (a large decode, a
synchronous call) delays every other call's events. ``sample_lag`` arms a timer every
``period_s`` and reports how late it fired. A shorter period sees shorter stalls and
gives a quantile more samples, for one timer per period (microseconds each).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def sample_lag(period_s: float, observe: Callable[[float], None]) -> None:
    """Every ``period_s``, ``observe`` the seconds by which the loop overslept; never returns."""
    if period_s <= 0:
        raise ValueError("the lag sampling period must be positive")
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        await asyncio.sleep(period_s)
        observe(max(0.0, loop.time() - started - period_s))
