"""What the admin API accepts: command bodies, path ids, JSON bodies, and its error.

The request models are what the handlers validate with and what the OpenAPI document
(``ingress.admin_openapi``) publishes, so the two cannot disagree. Text limits are
those of ``shared.command_rules``; a body is at most ``MAX_BODY_BYTES``.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request

from shared.command_rules import MAX_TEXT_CHARS

MAX_BODY_BYTES = 64 * 1024
MAX_ID_CHARS = 256
_DECIMAL = re.compile(r"[0-9]{1,18}")


class AdminError(Exception):
    """An answer other than success; becomes the JSON error body."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class TransferBody(BaseModel):
    """``POST /v1/calls/{id}/transfer``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    target: str = Field(
        min_length=1,
        max_length=2048,
        description="A sip:/tel: URI or the name of a configured transfer target.",
    )
    announcement: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_TEXT_CHARS,
        pattern=r"\S",
        description="What the agent says before the transfer.",
    )


class HangupBody(BaseModel):
    """``POST /v1/calls/{id}/hangup`` (the body is optional)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    goodbye: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_TEXT_CHARS,
        pattern=r"\S",
        description="What the agent says before hanging up.",
    )


class SayBody(BaseModel):
    """``POST /v1/calls/{id}/say``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    text: str = Field(
        min_length=1, max_length=MAX_TEXT_CHARS, pattern=r"\S", description="What to say."
    )


COMMAND_BODIES: dict[str, type[BaseModel]] = {
    "transfer": TransferBody,
    "hangup": HangupBody,
    "say": SayBody,
}


def decimal_integer(text: str) -> int | None:
    """``text`` as a non-negative integer if it is 1 to 18 ASCII digits, else None.

    Stricter than ``int()``, which takes signs, spaces, underscores and other scripts'
    digits, and stricter than ``str.isdigit()``, which also takes superscripts (``²``)
    that ``int()`` then refuses.
    """
    return int(text) if _DECIMAL.fullmatch(text) else None


async def read_json(request: Request, *, optional: bool) -> dict[str, Any]:
    declared = decimal_integer(request.headers.get("content-length", ""))
    if declared is not None and declared > MAX_BODY_BYTES:
        raise AdminError(413, "body_too_large", f"request body exceeds {MAX_BODY_BYTES} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        # Counted as it arrives: chunked bodies and lying Content-Length headers too.
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise AdminError(413, "body_too_large", f"request body exceeds {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body.strip() and optional:
        return {}
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise AdminError(400, "malformed_json", "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise AdminError(422, "invalid_body", "the body must be a JSON object")
    return data


def validation_message(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    return f"{where}: {first['msg']}"


def path_id(request: Request, name: str, what: str) -> str:
    value = str(request.path_params[name])
    if not value or len(value) > MAX_ID_CHARS or "{" in value or "}" in value:
        raise AdminError(404, f"{what}_not_found", f"no such {what} {value[:64]!r}")
    return value
