"""Tools for the tool-call benchmark: each returns at once and reports its own time.

The output carries ``own_ms``, the time spent inside the function (a few microseconds),
which ``bench.tool_timing`` subtracts from the overhead it measures: the target counts
our overhead, not the tool's work.
"""

from __future__ import annotations

import time
from typing import Any


def _answer(order_id: str, started: float) -> dict[str, Any]:
    found = {"order_id": order_id, "status": "shipped"}
    return found | {"own_ms": (time.perf_counter() - started) * 1000}


async def lookup_order(order_id: str) -> dict[str, Any]:
    """In-process (async): runs on the runner's event loop."""
    return _answer(order_id, time.perf_counter())


def lookup_order_blocking(order_id: str) -> dict[str, Any]:
    """Blocking: runs in a Celery worker on the tools queue."""
    return _answer(order_id, time.perf_counter())
