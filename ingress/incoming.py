"""The ``realtime.call.incoming`` event: checked field by field, turned into a call record.

The body has passed signature verification, so it comes from OpenAI; it is still
checked strictly, because a malformed event must be refused (400) rather than half
recorded. Only the fields the record needs are required: ``data.call_id`` and
``data.sip_headers``; the event ``id`` and ``sip_media_security`` are kept when present.

Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from ingress.sip import find_header, parse_address
from shared.models import CallRecord, CallState

EVENT_TYPE = "realtime.call.incoming"

MAX_CALL_ID_CHARS = 128
MAX_SIP_HEADERS = 200


class PayloadError(ValueError):
    """The event is not a well-formed ``realtime.call.incoming``."""


@dataclass(frozen=True)
class IncomingCall:
    """What one ``realtime.call.incoming`` event says about a new call."""

    call_id: str
    event_id: str | None
    sip_headers: tuple[tuple[str, str], ...]
    sip_media_security: str | None

    def record(self, webhook_id: str, now_s: float) -> CallRecord:
        """The new call's record, with caller and called party parsed from From/To."""
        return CallRecord.from_hash(self.record_hash(webhook_id, now_s))

    def record_hash(self, webhook_id: str, now_s: float) -> dict[str, str]:
        """The new call's record as the Redis hash holds it (``CallRecord.to_hash``).

        Built directly, without a model: every value is a string checked by
        ``parse_incoming`` already, and this runs once per webhook.
        """
        caller = parse_address(find_header(self.sip_headers, "from") or "")
        callee = parse_address(find_header(self.sip_headers, "to") or "")
        headers = [{"name": n, "value": v} for n, v in self.sip_headers]
        fields = {
            "id": self.call_id,
            "state": CallState.INCOMING.value,
            "from": caller.caller_id,
            "to": callee.caller_id,
            "sip_headers": orjson.dumps(headers).decode(),
        }
        if self.sip_media_security is not None:
            fields["sip_media_security"] = self.sip_media_security
        fields["webhook_id"] = webhook_id
        if self.event_id is not None:
            fields["event_id"] = self.event_id
        fields["created_at"] = repr(float(now_s))
        # The defaults of a new record, as CallRecord writes them.
        fields["cost_usd"] = "0"
        fields["usage"] = "{}"
        return fields


def _optional_str(container: dict[str, Any], name: str) -> str | None:
    value = container.get(name)
    if value is not None and not isinstance(value, str):
        raise PayloadError(f"{name} must be a string")
    return value


def _call_id(data: dict[str, Any]) -> str:
    call_id = data.get("call_id")
    if not isinstance(call_id, str) or not call_id:
        raise PayloadError("data.call_id must be a non-empty string")
    # It names Redis keys: bounded, printable, and free of hash-tag braces.
    if len(call_id) > MAX_CALL_ID_CHARS or not call_id.isprintable():
        raise PayloadError("data.call_id is too long or not printable")
    if "{" in call_id or "}" in call_id or " " in call_id:
        raise PayloadError("data.call_id contains forbidden characters")
    return call_id


def _sip_headers(data: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    raw = data.get("sip_headers")
    if not isinstance(raw, list):
        raise PayloadError("data.sip_headers must be a list")
    if len(raw) > MAX_SIP_HEADERS:
        raise PayloadError(f"data.sip_headers has more than {MAX_SIP_HEADERS} entries")
    headers = []
    for item in raw:
        if not isinstance(item, dict):
            raise PayloadError("each SIP header must be an object")
        name, value = item.get("name"), item.get("value")
        if not isinstance(name, str) or not isinstance(value, str):
            raise PayloadError("each SIP header needs string name and value")
        headers.append((name, value))
    return tuple(headers)


def parse_incoming(event: dict[str, Any]) -> IncomingCall:
    """Check a decoded ``realtime.call.incoming`` event; raise ``PayloadError`` if bad."""
    data = event.get("data")
    if not isinstance(data, dict):
        raise PayloadError("data must be an object")
    return IncomingCall(
        call_id=_call_id(data),
        event_id=_optional_str(event, "id"),
        sip_headers=_sip_headers(data),
        sip_media_security=_optional_str(data, "sip_media_security"),
    )
