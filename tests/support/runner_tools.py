"""A Python tool for session-runner tests, run in-process by the runner under test.

Every run appends one line to the file named by ``SWITCHBOARD_TEST_TOOL_LOG`` (when set),
so a test can count how often the tool really ran, independently of any ledger.
"""

from __future__ import annotations

import os
from typing import Any

TOOL_LOG_ENV = "SWITCHBOARD_TEST_TOOL_LOG"


async def lookup_order(order_id: str) -> dict[str, Any]:
    """The status of an order: always shipped, arriving tomorrow."""
    path = os.environ.get(TOOL_LOG_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as log:
            log.write(f"{order_id}\n")
    return {"order_id": order_id, "status": "shipped", "delivery": "tomorrow"}
