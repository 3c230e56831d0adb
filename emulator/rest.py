"""The REST surface's plumbing: OpenAI-shaped errors, JSON bodies and the request guard.

Every error the emulator answers over HTTP has the body the real API uses,
``{"error": {"message", "type", "param", "code"}}``, so clients exercise the same
error paths they would against OpenAI. Handlers raise ``ApiError``; the app turns it
into a response. ``guarded`` wraps each ``/v1`` handler with what the real service
does before it acts: latency, the bearer-key check and injected 429/503 answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from emulator.auth import key_problem
from emulator.context import EmulatorContext
from emulator.faults import draw_rest_fault, rest_latency_s

Handler = Callable[[Request], Awaitable[Response]]

#: Request bodies larger than this are refused before parsing.
MAX_BODY_BYTES = 1_000_000


class ApiError(Exception):
    """An error answer in the OpenAI shape; raised by handlers, rendered by the app."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def to_response(self) -> Response:
        return json_response(self.body(), self.status, headers=self.headers)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers=headers, media_type="application/json")


def empty_ok() -> Response:
    """The real call-control endpoints answer 200 with an empty body."""
    return Response(b"", 200)


def not_found(what: str, code: str = "not_found") -> ApiError:
    return ApiError(404, f"{what} not found.", code=code)


def conflict(message: str, code: str) -> ApiError:
    # The SDK retries 409 by default (lock timeouts); a state conflict never clears.
    return ApiError(409, message, code=code, headers={"x-should-retry": "false"})


async def read_body(request: Request) -> bytes:
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise ApiError(413, f"Request body is larger than {MAX_BODY_BYTES} bytes.")
    return body


async def read_json_object(request: Request, *, optional: bool = False) -> dict[str, Any]:
    """The request body as a JSON object; an empty body is ``{}`` when ``optional``."""
    raw = await read_body(request)
    if not raw.strip():
        if optional:
            return {}
        raise ApiError(400, "A JSON request body is required.", code="missing_body")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ApiError(
            400, "We could not parse the JSON body of your request.", code="invalid_json"
        ) from None
    if not isinstance(data, dict):
        raise ApiError(400, "The request body must be a JSON object.", code="invalid_type")
    return data


def guarded(handler: Handler, *, allow_client_secret: bool = False) -> Handler:
    """Wrap a ``/v1`` handler with latency, authentication and injected failures.

    Injected failures answer without calling the handler, so nothing changes: a
    client that retries is safe, one that assumes success is caught out.
    """

    async def endpoint(request: Request) -> Response:
        ctx: EmulatorContext = request.app.state.ctx
        delay_s = rest_latency_s(ctx.faults, ctx.rng)
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        problem = key_problem(
            request.headers.get("authorization"),
            ctx.config.api_key,
            ctx.client_secrets if allow_client_secret else None,
        )
        if problem is not None:
            raise ApiError(401, problem, code="invalid_api_key")
        fault = draw_rest_fault(ctx.faults, ctx.rng)
        if fault is not None:
            raise ApiError(
                fault.status,
                fault.message,
                type_=fault.type,
                code=fault.code,
                headers=fault.headers,
            )
        return await handler(request)

    return endpoint


async def api_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.to_response()


async def http_error_handler(request: Request, exc: Exception) -> Response:
    """Unknown paths and wrong methods answer in the OpenAI error shape too."""
    assert isinstance(exc, HTTPException)
    message = {404: "Unknown request URL.", 405: "Method not allowed."}.get(
        exc.status_code, str(exc.detail)
    )
    error = ApiError(exc.status_code, f"{message} {request.method} {request.url.path}")
    return error.to_response()


async def server_error_handler(request: Request, exc: Exception) -> Response:
    """A bug in the emulator still answers in the shape clients parse (and is logged)."""
    message = "The server had an error while processing your request."
    return ApiError(500, message, type_="server_error").to_response()
