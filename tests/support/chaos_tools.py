"""Python tools for chaos tests, run in-process by the session runners under test.

Each tool appends one line per run, ``<tool> <order_id>``, to the file named by
``CHAOS_TOOL_LOG_ENV`` (when set), so a test counts how often a tool really ran,
independently of any ledger. A tool cannot learn the id of the tool call it runs for,
so the chaos scenarios send that id as the order number (the emulator's ``{call_id}``
placeholder): the log then names the tool call of each run. ``hanging_lookup`` never
returns, so only the tool's timeout can end it.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

CHAOS_TOOL_LOG_ENV = "SWITCHBOARD_CHAOS_TOOL_LOG"
LOGGED_TOOLS = frozenset({"lookup_order", "hanging_lookup"})
"""The tools (by the name the chaos policy gives them) that log their runs."""


def _log(line: str) -> None:
    path = os.environ.get(CHAOS_TOOL_LOG_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as log:
            log.write(f"{line}\n")


async def lookup_order(order_id: str) -> dict[str, Any]:
    """The status of an order: always shipped, arriving tomorrow."""
    _log(f"lookup_order {order_id}")
    return {"order_id": order_id, "status": "shipped", "delivery": "tomorrow"}


async def hanging_lookup(order_id: str) -> dict[str, Any]:
    """Starts like a lookup and then waits for ever (until its timeout cancels it)."""
    _log(f"hanging_lookup {order_id}")
    await asyncio.Event().wait()
    return {"order_id": order_id}
