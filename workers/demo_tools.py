"""Tools of the built-in demo policy: deterministic stand-ins for a real back office.

``lookup_order`` answers the support profile's order questions. The same order number
always gets the same answer, so demos and tests can rely on it; an order number is 4 to
12 digits (spaces and dashes are ignored) and numbers ending in 0 do not exist.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

STATUSES = ("processing", "shipped", "out_for_delivery", "delivered")
BASE_DATE = dt.date(2026, 11, 2)
"""Delivery dates are counted from here, not from today, so answers never change."""


def _digits(order_id: object) -> str | None:
    if not isinstance(order_id, str | int) or isinstance(order_id, bool):
        return None
    cleaned = "".join(ch for ch in str(order_id) if ch not in " -")
    return cleaned if cleaned.isdigit() and 4 <= len(cleaned) <= 12 else None


async def lookup_order(order_id: str) -> dict[str, Any]:
    """Status and delivery date of an order, or why it could not be found."""
    digits = _digits(order_id)
    if digits is None:
        return {"found": False, "message": "An order number has 4 to 12 digits."}
    if digits.endswith("0"):
        return {"found": False, "order_id": digits, "message": "No order with this number."}
    seed = int.from_bytes(hashlib.sha256(digits.encode()).digest()[:4], "big")
    status = STATUSES[seed % len(STATUSES)]
    delivery = BASE_DATE + dt.timedelta(days=seed % 9)
    return {
        "found": True,
        "order_id": digits,
        "status": status,
        "delivery_date": delivery.isoformat(),
        "items": 1 + seed % 4,
    }
