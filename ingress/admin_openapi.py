"""The admin API's OpenAPI 3.1 document, served at ``GET /openapi.json``.

Response schemas come from ``ingress.admin_documents`` and request bodies from the
pydantic models the handlers validate with, so the document describes exactly what
the handlers accept and answer. Every error status a route can give is listed with the
shared error schema.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from ingress.admin_documents import SCHEMAS
from shared.models import LIVE_STATES, CallState
from shared.runner_registry import RUNNER_ID_PATTERN

ERROR_TEXT = {
    "400": "The body is not valid JSON.",
    "401": "No or wrong bearer token, or no admin token configured.",
    "404": "No such call or runner.",
    "409": "The call is over and takes no more commands.",
    "413": "The body is too large.",
    "422": "A body or parameter breaks the schema, or the command can never be carried out.",
    "503": "The state store (Redis) is unavailable; retry later.",
}

COMMAND_TEXT = {
    "transfer": "Refer the call to a sip:/tel: URI or a named transfer target.",
    "hangup": "Hang the call up, after an optional goodbye.",
    "say": "Have the agent say something.",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json_content(schema: Mapping[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": dict(schema)}}


def _responses(ok_status: str, ok_schema: str, ok_text: str, *errors: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        ok_status: {"description": ok_text, "content": _json_content(_ref(ok_schema))}
    }
    for status in ("401", *errors, "503"):
        out[status] = {"description": ERROR_TEXT[status], "content": _json_content(_ref("Error"))}
    return out


LIVE = [state.value for state in CallState if state in LIVE_STATES]
EXAMPLE_CALL_ID = "rtc_479a275623b54bdb9b6fbae2f7cbd408"
EXAMPLE_RUNNER_ID = "host-a-4242-1f2e3d"


def _path_parameter(
    name: str, text: str, example: str, pattern: str | None = None
) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string"} | ({"pattern": pattern} if pattern else {}),
        "description": text,
        "example": example,
    }


CALL_ID = _path_parameter("call_id", "The call id (rtc_...).", EXAMPLE_CALL_ID)


def openapi_document(bodies: Mapping[str, type[BaseModel]]) -> dict[str, Any]:
    """The whole document; ``bodies`` maps each command kind to its request model."""
    paths: dict[str, Any] = {
        "/v1/calls": {
            "get": {
                "operationId": "listCalls",
                "summary": "Live calls across the cluster, oldest first.",
                "parameters": [
                    {
                        "name": "state",
                        "in": "query",
                        "required": False,
                        "style": "form",
                        "explode": True,
                        "schema": {"type": "array", "items": {"type": "string", "enum": LIVE}},
                        "description": "Only calls in these states (repeat to give several).",
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                    },
                ],
                "responses": _responses("200", "CallList", "The live calls.", "422"),
            }
        },
        "/v1/calls/{call_id}": {
            "get": {
                "operationId": "getCall",
                "summary": "One call's record, live or ended.",
                "parameters": [CALL_ID],
                "responses": _responses("200", "Call", "The call.", "404"),
            }
        },
        "/v1/calls/{call_id}/commands/{command_id}": {
            "get": {
                "operationId": "getCommandResult",
                "summary": "What became of a queued command.",
                "parameters": [
                    CALL_ID,
                    _path_parameter(
                        "command_id", "As returned on queueing.", "cmd_0123456789abcdef"
                    ),
                ],
                "responses": _responses("200", "CommandResult", "The outcome so far.", "404"),
            }
        },
        "/v1/runners": {
            "get": {
                "operationId": "listRunners",
                "summary": "Session runners with their load and last heartbeat.",
                "responses": _responses("200", "RunnerList", "The registered runners."),
            }
        },
        "/v1/runners/{runner_id}/drain": {
            "post": {
                "operationId": "drainRunner",
                "summary": "Hand a runner's calls over and stop it taking new ones.",
                "parameters": [
                    _path_parameter(
                        "runner_id", "The runner id.", EXAMPLE_RUNNER_ID, RUNNER_ID_PATTERN
                    )
                ],
                "responses": _responses("202", "Drain", "Drain requested.", "404"),
            }
        },
    }
    for kind, model in bodies.items():
        paths[f"/v1/calls/{{call_id}}/{kind}"] = {
            "post": {
                "operationId": f"{kind}Call",
                "summary": COMMAND_TEXT[kind],
                "parameters": [CALL_ID],
                "requestBody": {
                    "required": kind != "hangup",
                    "content": _json_content(model.model_json_schema()),
                },
                "responses": _responses(
                    "202",
                    "CommandQueued",
                    "Queued for the call's runner.",
                    "400",
                    "404",
                    "409",
                    "413",
                    "422",
                ),
            }
        }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Switchboard admin API",
            "version": "1",
            "description": "Live calls, commands for them, and the session runners.",
        },
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
