"""Python tools for session-runner tests, run in-process by the runner under test.

Every run appends one line to the file named by ``SWITCHBOARD_TEST_TOOL_LOG`` (when set)
as it starts, so a test can count how often a tool really ran, independently of any
ledger, even a run cut short by a killed runner.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

TOOL_LOG_ENV = "SWITCHBOARD_TEST_TOOL_LOG"
SLOW_LOOKUP_S = 2.0
"""How long ``slow_lookup`` takes: long enough to kill a runner while it runs."""


def _log(order_id: str) -> None:
    path = os.environ.get(TOOL_LOG_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as log:
            log.write(f"{order_id}\n")


async def lookup_order(order_id: str) -> dict[str, Any]:
    """The status of an order: always shipped, arriving tomorrow."""
    _log(order_id)
    return {"order_id": order_id, "status": "shipped", "delivery": "tomorrow"}


async def slow_lookup(order_id: str) -> dict[str, Any]:
    """``lookup_order`` in the slow archive: the same answer after ``SLOW_LOOKUP_S``."""
    _log(order_id)
    await asyncio.sleep(SLOW_LOOKUP_S)
    return {"order_id": order_id, "status": "archived", "delivery": "last year"}
