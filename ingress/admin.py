"""The admin API: live calls, commands for them, and the session runners.

Every route needs ``Authorization: Bearer $SWITCHBOARD_ADMIN_TOKEN``, compared in
constant time; with no token configured every admin request is refused. Commands take
the same path as ``switchboard calls ...`` (``shared.commands``): validated, then
queued on the call's command stream for its runner, answered ``202`` with the command
id (``GET .../commands/{command_id}`` follows it). All Redis work is async.

Errors are ``{"error": {"code", "message"}}``: 400 malformed JSON, 401 no or wrong
token (or none configured), 404 unknown call or runner, 409 the call is over, 413 body
too large, 422 a body or parameter that breaks the schema or a command that can never
be carried out (a bad transfer target), 503 Redis unavailable.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import redis.asyncio
from pydantic import ValidationError
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ingress.admin_documents import (
    call_document,
    command_document,
    command_result_document,
    runner_document,
)
from ingress.admin_openapi import openapi_document
from ingress.admin_requests import (
    COMMAND_BODIES,
    AdminError,
    decimal_integer,
    path_id,
    read_json,
    validation_message,
)
from ingress.webhooks import error_response
from shared import keys
from shared.commands import AsyncCommandQueue, CallEnded, CallNotFound, InvalidCommand
from shared.models import LIVE_STATES, CallState
from shared.policy_file import PolicySource
from shared.runner_registry import (
    DRAIN_FIELD,
    RUNNER_ID_RULE,
    RunnerRegistry,
    valid_runner_id,
)
from shared.settings import Settings
from shared.store import AsyncCallStore, StoreUnavailable

log = logging.getLogger("switchboard.admin")

RUNNER_DEAD_AFTER_S = 5.0
"""A runner whose heartbeat (about every second) is this old is reported not alive."""
LIST_LIMIT_MAX = 1000

Handler = Callable[[Request], Awaitable[Response]]


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


class AdminApi:
    """The admin routes of one ingress app, sharing its Redis client."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        admin_token: str | None,
        policies: PolicySource,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = client
        self._token = admin_token.encode() if admin_token else None
        self._store = AsyncCallStore(client)
        self._commands = AsyncCommandQueue(client, policies.current)
        self._registry = RunnerRegistry(client, "admin")
        self._clock = clock

    def _authorized(self, request: Request) -> None:
        if self._token is None:
            raise AdminError(
                401, "admin_disabled", "the admin API is disabled: SWITCHBOARD_ADMIN_TOKEN is unset"
            )
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        # Constant time on the token itself; the scheme is not a secret.
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), self._token
        ):
            raise AdminError(401, "unauthorized", "missing or wrong bearer token")

    def guarded(self, handler: Handler) -> Handler:
        """``handler`` behind the token check, with errors as JSON bodies."""

        async def endpoint(request: Request) -> Response:
            try:
                self._authorized(request)
                return await handler(request)
            except AdminError as err:
                response = error_response(err.status, err.code, err.message)
                if err.status == 401:
                    response.headers["www-authenticate"] = "Bearer"
                return response
            except (StoreUnavailable, RedisError, OSError) as err:
                log.warning(
                    "admin %s %s: redis unavailable: %s", request.method, request.url.path, err
                )
                return error_response(503, "unavailable", "state store unavailable; retry later")

        return endpoint

    async def list_calls(self, request: Request) -> Response:
        unknown = sorted(set(request.query_params) - {"state", "limit"})
        if unknown:
            raise AdminError(422, "invalid_parameter", f"unknown parameter {unknown[0][:64]!r}")
        states: list[CallState] | None = None
        wanted = request.query_params.getlist("state")
        if wanted:
            live = {state.value for state in LIVE_STATES}
            if not set(wanted) <= live:
                names = ", ".join(sorted(live))
                raise AdminError(422, "invalid_parameter", f"state must be one of {names}")
            states = [CallState(name) for name in wanted]
        limits = request.query_params.getlist("limit") or [str(LIST_LIMIT_MAX)]
        limit = decimal_integer(limits[0]) if len(limits) == 1 else None
        if limit is None or not 1 <= limit <= LIST_LIMIT_MAX:
            raise AdminError(
                422, "invalid_parameter", f"limit must be an integer from 1 to {LIST_LIMIT_MAX}"
            )
        records = await self._store.list_calls(states, limit=limit)
        now_s = self._clock()
        return _json({"calls": [call_document(record, now_s) for record in records]})

    async def get_call(self, request: Request) -> Response:
        call_id = path_id(request, "call_id", "call")
        record = await self._store.get(call_id)
        if record is None:
            raise AdminError(404, "call_not_found", f"no such call {call_id[:64]!r}")
        return _json(call_document(record, self._clock()))

    def command(self, kind: str) -> Handler:
        """The endpoint that queues ``kind`` commands."""

        async def endpoint(request: Request) -> Response:
            return await self._command(request, kind)

        return endpoint

    async def _command(self, request: Request, kind: str) -> Response:
        call_id = path_id(request, "call_id", "call")
        model = COMMAND_BODIES[kind]
        data = await read_json(request, optional=kind == "hangup")
        try:
            body = model.model_validate(data)
        except ValidationError as err:
            raise AdminError(422, "invalid_body", validation_message(err)) from None
        try:
            command_id = await self._commands.enqueue_command(
                call_id, kind, body.model_dump(exclude_none=True)
            )
        except CallNotFound as err:
            raise AdminError(404, "call_not_found", str(err)) from None
        except CallEnded as err:
            raise AdminError(409, "call_ended", str(err)) from None
        except InvalidCommand as err:
            raise AdminError(422, "invalid_command", str(err)) from None
        return _json(command_document(call_id, command_id, kind), status=202)

    async def command_result(self, request: Request) -> Response:
        call_id = path_id(request, "call_id", "call")
        command_id = path_id(request, "command_id", "command")
        if not await self._redis.exists(keys.call_record(call_id)):
            raise AdminError(404, "call_not_found", f"no such call {call_id[:64]!r}")
        result = await self._commands.result(call_id, command_id)
        if result is None:
            return _json(command_result_document(call_id, command_id, None, None, None))
        return _json(
            command_result_document(call_id, command_id, result.ok, result.detail, result.at)
        )

    async def list_runners(self, request: Request) -> Response:
        entries = await self._registry.entries()
        now_s = self._clock()
        documents = [runner_document(e, now_s, RUNNER_DEAD_AFTER_S) for e in entries]
        return _json({"runners": documents})

    async def drain_runner(self, request: Request) -> Response:
        runner_id = str(request.path_params["runner_id"])
        if not valid_runner_id(runner_id):
            message = f"no such runner {runner_id[:64]!r}: {RUNNER_ID_RULE}"
            raise AdminError(404, "runner_not_found", message)
        key = keys.runner(runner_id)
        if not await self._redis.exists(key):
            raise AdminError(404, "runner_not_found", f"no such runner {runner_id[:64]!r}")
        await self._redis.hset(key, DRAIN_FIELD, repr(self._clock()))  # type: ignore[misc]
        return _json({"runner_id": runner_id, "draining": True}, status=202)

    def routes(self) -> list[BaseRoute]:
        """The admin routes and the OpenAPI document that describes them."""
        document = orjson.dumps(openapi_document(COMMAND_BODIES))

        async def openapi(request: Request) -> Response:
            return Response(document, media_type="application/json")

        g = self.guarded
        return [
            Route("/openapi.json", openapi, methods=["GET"]),
            Route("/v1/calls", g(self.list_calls), methods=["GET"]),
            Route("/v1/calls/{call_id}", g(self.get_call), methods=["GET"]),
            *(
                Route(f"/v1/calls/{{call_id}}/{kind}", g(self.command(kind)), methods=["POST"])
                for kind in COMMAND_BODIES
            ),
            Route(
                "/v1/calls/{call_id}/commands/{command_id}",
                g(self.command_result),
                methods=["GET"],
            ),
            Route("/v1/runners", g(self.list_runners), methods=["GET"]),
            Route("/v1/runners/{runner_id}/drain", g(self.drain_runner), methods=["POST"]),
        ]


def admin_routes(settings: Settings, client: redis.asyncio.Redis) -> list[BaseRoute]:
    """The admin API for ``ingress.app.create_app``; ``ConfigError`` on a broken policy."""
    token = settings.admin_token.get_secret_value() if settings.admin_token else None
    return AdminApi(client, token, PolicySource(settings.config)).routes()
