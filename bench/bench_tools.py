"""Tools for the tool-call benchmark: each returns at once, so only our overhead is timed."""

from __future__ import annotations

from typing import Any


async def lookup_order(order_id: str) -> dict[str, Any]:
    """In-process (async): runs on the runner's event loop."""
    return {"order_id": order_id, "status": "shipped"}


def lookup_order_blocking(order_id: str) -> dict[str, Any]:
    """Blocking: runs in a Celery worker on the tools queue."""
    return {"order_id": order_id, "status": "shipped"}
