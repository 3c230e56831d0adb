"""The JSON documents of the admin API, each beside the JSON Schema that describes it.

The admin API and ``switchboard calls|runners ... --json`` print the very same
documents, so a script written against one works against the other; the OpenAPI
document (``ingress.admin_openapi``) is assembled from the schemas here, so it cannot
drift from what the handlers return.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.models import CallRecord, CallState

CALL_SUMMARY_FIELDS = ("id", "state", "profile", "from", "to", "created_at", "accepted_at")

_NUMBER_OR_NULL: dict[str, Any] = {"type": ["number", "null"]}
_STRING_OR_NULL: dict[str, Any] = {"type": ["string", "null"]}


def _extra_number(extra: Mapping[str, Any], name: str) -> float | None:
    try:
        return float(extra[name])
    except (KeyError, TypeError, ValueError):
        return None


def _extra_int(extra: Mapping[str, Any], name: str) -> int | None:
    value = _extra_number(extra, name)
    return None if value is None else int(value)


def call_document(record: CallRecord, now_s: float) -> dict[str, Any]:
    """One call as operators see it; ``duration_s`` runs from accept to end (or now)."""
    extra = record.model_extra or {}
    duration_s = _extra_number(extra, "duration_s")
    if duration_s is None and record.accepted_at is not None:
        end_s = record.ended_at if record.ended_at is not None else now_s
        duration_s = round(max(0.0, end_s - record.accepted_at), 3)
    return {
        "id": record.id,
        "state": record.state.value,
        "profile": record.profile,
        "from": record.from_,
        "to": record.to,
        "created_at": record.created_at,
        "accepted_at": record.accepted_at,
        "ended_at": record.ended_at,
        "end_reason": record.end_reason,
        "end_detail": extra.get("end_detail"),
        "reject_code": record.reject_code,
        "error": record.error,
        "runner": record.owner,
        "duration_s": duration_s,
        "caller_turns": _extra_int(extra, "caller_turns"),
        "agent_turns": _extra_int(extra, "agent_turns"),
        "cost_usd": float(record.cost_usd),
        "usage": dict(record.usage),
        "sip_headers": [{"name": h.name, "value": h.value} for h in record.sip_headers],
    }


CALL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "One call. Timestamps are unix seconds; usage holds token counts.",
    "required": [
        "id",
        "state",
        "profile",
        "from",
        "to",
        "created_at",
        "accepted_at",
        "ended_at",
        "end_reason",
        "runner",
        "duration_s",
        "cost_usd",
        "usage",
    ],
    "properties": {
        "id": {"type": "string"},
        "state": {"type": "string", "enum": [state.value for state in CallState]},
        "profile": _STRING_OR_NULL,
        "from": {"type": "string"},
        "to": {"type": "string"},
        "created_at": {"type": "number"},
        "accepted_at": _NUMBER_OR_NULL,
        "ended_at": _NUMBER_OR_NULL,
        "end_reason": _STRING_OR_NULL,
        "end_detail": _STRING_OR_NULL,
        "reject_code": {"type": ["integer", "null"]},
        "error": _STRING_OR_NULL,
        "runner": {**_STRING_OR_NULL, "description": "The session runner holding the call."},
        "duration_s": _NUMBER_OR_NULL,
        "caller_turns": {"type": ["integer", "null"]},
        "agent_turns": {"type": ["integer", "null"]},
        "cost_usd": {"type": "number", "minimum": 0},
        "usage": {"type": "object", "additionalProperties": {"type": "integer"}},
        "sip_headers": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "value"],
                "properties": {"name": {"type": "string"}, "value": {"type": "string"}},
            },
        },
    },
}

CALL_LIST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["calls"],
    "properties": {"calls": {"type": "array", "items": {"$ref": "#/components/schemas/Call"}}},
}


def runner_document(entry: Any, now_s: float, dead_after_s: float) -> dict[str, Any]:
    """One registered session runner (a ``RunnerEntry``) as operators see it."""
    return {
        "id": entry.runner_id,
        "host": entry.host,
        "pid": entry.pid,
        "capacity": entry.capacity,
        "load": entry.load,
        "draining": entry.draining,
        "alive": entry.alive(now_s, dead_after_s),
        "started_at": entry.started_at or None,
        "heartbeat_at": entry.heartbeat_at,
        "heartbeat_age_s": round(max(0.0, now_s - entry.heartbeat_at), 3),
    }


RUNNER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": [
        "id",
        "host",
        "pid",
        "capacity",
        "load",
        "draining",
        "alive",
        "heartbeat_at",
        "heartbeat_age_s",
    ],
    "properties": {
        "id": {"type": "string"},
        "host": {"type": "string"},
        "pid": {"type": "integer"},
        "capacity": {"type": "integer", "description": "Calls the runner may hold at once."},
        "load": {"type": "integer", "description": "Calls the runner holds now."},
        "draining": {"type": "boolean"},
        "alive": {"type": "boolean", "description": "False once its heartbeat is overdue."},
        "started_at": _NUMBER_OR_NULL,
        "heartbeat_at": {"type": "number"},
        "heartbeat_age_s": {"type": "number", "minimum": 0},
    },
}

RUNNER_LIST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["runners"],
    "properties": {"runners": {"type": "array", "items": {"$ref": "#/components/schemas/Runner"}}},
}


def command_document(call_id: str, command_id: str, kind: str) -> dict[str, Any]:
    """The answer to a queued command: how to follow it."""
    return {"command_id": command_id, "call_id": call_id, "kind": kind, "status": "queued"}


COMMAND_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["command_id", "call_id", "kind", "status"],
    "properties": {
        "command_id": {"type": "string"},
        "call_id": {"type": "string"},
        "kind": {"type": "string", "enum": ["transfer", "hangup", "say"]},
        "status": {"type": "string", "enum": ["queued"]},
    },
}


def command_result_document(
    call_id: str, command_id: str, ok: bool | None, detail: str | None, at: float | None
) -> dict[str, Any]:
    """A command's outcome so far: ``pending`` until its runner answered."""
    status = "pending" if ok is None else ("done" if ok else "failed")
    return {
        "command_id": command_id,
        "call_id": call_id,
        "status": status,
        "ok": ok,
        "detail": detail,
        "at": at,
    }


COMMAND_RESULT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["command_id", "call_id", "status", "ok", "detail", "at"],
    "properties": {
        "command_id": {"type": "string"},
        "call_id": {"type": "string"},
        "status": {"type": "string", "enum": ["pending", "done", "failed"]},
        "ok": {"type": ["boolean", "null"]},
        "detail": _STRING_OR_NULL,
        "at": _NUMBER_OR_NULL,
    },
}

DRAIN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["runner_id", "draining"],
    "properties": {"runner_id": {"type": "string"}, "draining": {"type": "boolean"}},
}

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}

SCHEMAS: dict[str, dict[str, Any]] = {
    "Call": CALL_SCHEMA,
    "CallList": CALL_LIST_SCHEMA,
    "Runner": RUNNER_SCHEMA,
    "RunnerList": RUNNER_LIST_SCHEMA,
    "CommandQueued": COMMAND_SCHEMA,
    "CommandResult": COMMAND_RESULT_SCHEMA,
    "Drain": DRAIN_SCHEMA,
    "Error": ERROR_SCHEMA,
}
