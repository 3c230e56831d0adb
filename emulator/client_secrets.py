"""``POST /v1/realtime/client_secrets``: ephemeral ``ek_`` keys for browser and mobile clients.

The request names how long the key lives and the session it is for (a GA realtime
session or a transcription session). The answer carries the key, its expiry and the
full session configuration with the server defaults filled in, as the real API returns
it. Issued keys are remembered on the context so that ``POST /v1/realtime/calls``
accepts them until they expire.
"""

from __future__ import annotations

import secrets
import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from emulator.context import EmulatorContext
from emulator.rest import ApiError, guarded, json_response, read_json_object
from emulator.session_schema import TranscriptionSession, validate_session
from emulator.validation import validate_body

DEFAULT_INSTRUCTIONS = (
    "You are a helpful, witty, and friendly AI. Act like a human, but remember that you "
    "aren't a human. Keep your answers short."
)
PCM_24K = {"type": "audio/pcm", "rate": 24000}
SERVER_VAD = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 500,
    "create_response": True,
    "interrupt_response": True,
    "idle_timeout_ms": None,
}
#: Keys whose objects are merged with the defaults; any other object replaces them whole.
MERGED_KEYS = frozenset({"audio", "input", "output"})


class ExpiresAfter(BaseModel):
    """When the key expires: ``seconds`` after its creation."""

    model_config = ConfigDict(extra="forbid", strict=True)

    anchor: Literal["created_at"] = "created_at"
    seconds: Annotated[int, Field(ge=10, le=7200)] = 600


class ClientSecretRequest(BaseModel):
    """``RealtimeCreateClientSecretRequest``; ``session`` is validated by its ``type``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    expires_after: ExpiresAfter | None = None
    session: dict[str, Any] | None = None


def merged(defaults: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    out = dict(defaults)
    for key, value in given.items():
        base = out.get(key)
        if key in MERGED_KEYS and isinstance(base, dict) and isinstance(value, dict):
            out[key] = merged(base, value)
        else:
            out[key] = value
    return out


def realtime_session_object(given: dict[str, Any]) -> dict[str, Any]:
    """A realtime session as the API reports it: the given fields over the defaults."""
    defaults: dict[str, Any] = {
        "type": "realtime",
        "object": "realtime.session",
        "id": "sess_" + secrets.token_hex(12),
        "model": "gpt-realtime",
        "output_modalities": ["audio"],
        "instructions": DEFAULT_INSTRUCTIONS,
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "tracing": None,
        "truncation": "auto",
        "prompt": None,
        "expires_at": 0,
        "include": None,
        "audio": {
            "input": {
                "format": dict(PCM_24K),
                "transcription": None,
                "noise_reduction": None,
                "turn_detection": dict(SERVER_VAD),
            },
            "output": {"format": dict(PCM_24K), "voice": "alloy", "speed": 1.0},
        },
    }
    return merged(defaults, given)


def transcription_session_object(given: dict[str, Any]) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "type": "transcription",
        "object": "realtime.transcription_session",
        "id": "sess_" + secrets.token_hex(12),
        "expires_at": 0,
        "include": None,
        "audio": {
            "input": {
                "format": dict(PCM_24K),
                "transcription": None,
                "noise_reduction": None,
                "turn_detection": dict(SERVER_VAD),
            }
        },
    }
    return merged(defaults, given)


async def create_client_secret(request: Request) -> Response:
    ctx: EmulatorContext = request.app.state.ctx
    body = validate_body(ClientSecretRequest, await read_json_object(request, optional=True))
    session = body.session if body.session is not None else {"type": "realtime"}
    kind = session.get("type")
    if kind == "realtime":
        validate_session(session, param_prefix="session")
        session_object = realtime_session_object(session)
    elif kind == "transcription":
        validate_body(TranscriptionSession, session, param_prefix="session")
        session_object = transcription_session_object(session)
    elif kind is None:
        raise ApiError(
            400,
            "Missing required parameter: 'session.type'.",
            param="session.type",
            code="missing_required_parameter",
        )
    else:
        raise ApiError(
            400,
            f"Invalid value for 'session.type': {kind!r}; expected 'realtime' or 'transcription'.",
            param="session.type",
            code="invalid_value",
        )
    now_s = time.time()
    expires_after = body.expires_after or ExpiresAfter()
    expires_at = int(now_s) + expires_after.seconds
    value = "ek_" + secrets.token_hex(16)
    _forget_expired(ctx.client_secrets, now_s)
    ctx.client_secrets[value] = expires_at
    return json_response({"value": value, "expires_at": expires_at, "session": session_object})


def _forget_expired(issued: dict[str, float], now_s: float) -> None:
    if len(issued) < 1024:
        return
    for value in [v for v, expires_at in issued.items() if expires_at <= now_s]:
        del issued[value]


ROUTES = [
    Route("/v1/realtime/client_secrets", guarded(create_client_secret), methods=["POST"]),
]
