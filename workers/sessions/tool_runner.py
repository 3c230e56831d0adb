"""Carrying out configured tools for a session runner: HTTP, in-process Python, or Celery.

``ToolRunner.run_tool(spec, arguments, timeout_s)`` runs one ``shared.profile.ToolDef``
and always returns a ``ToolOutcome``; its ``output`` is the ``function_call_output``
string, an error JSON ``{"error": "..."}`` when anything went wrong. It never raises
for a tool's failure, and it never runs a tool call twice (at-most-once per tool-call
id is the caller's ledger; this module makes one attempt per call).

- ``http`` tools: the arguments are POSTed as JSON to the URL through one pooled
  ``httpx.AsyncClient``; a non-2xx answer, a body that is not JSON, or the deadline
  passing gives an error outcome; a 2xx JSON body is the output as received.
- ``python`` tools with an ``async def`` function are awaited in-process under the
  deadline (``workers.python_tools`` resolves, checks and encodes).
- plain (blocking) functions, and tools marked ``run_in_worker``, go to the Celery
  ``tools`` queue as ``switchboard.run_tool``: the message is LPUSHed with
  ``redis.asyncio`` (``shared.task_message``), so the event loop never blocks on a
  Celery client; the worker LPUSHes ``{id, ok, output}`` onto this runner's inbox
  list, which one reader task per ``ToolRunner`` drains with BLPOP, resolving the
  waiting call. A reply after the deadline is dropped; a worker that picks the task up
  after its deadline skips it.

The Redis client given for the Celery path must allow a ``socket_timeout`` above
``INBOX_BLOCK_S`` (or none). ``aclose()`` stops the reader and the HTTP pool. The free
function ``run_tool`` does the same on a default runner per event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
import uuid
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import redis.asyncio

from shared import keys
from shared.profile import HttpHandler, PythonHandler, ToolDef
from shared.queues import RUN_TOOL_TASK, TOOLS_QUEUE
from shared.settings import Settings
from shared.task_message import TaskMessages, task_message
from workers import python_tools
from workers.python_tools import ToolError, error_output

logger = logging.getLogger(__name__)

INBOX_BLOCK_S = 1.0
"""How long one BLPOP on the inbox waits; the reader loops, so this only bounds a stop."""

HTTP_LIMITS = httpx.Limits(max_connections=256, max_keepalive_connections=64)


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    """What a tool call gave: ``output`` is sent as ``function_call_output`` either way."""

    ok: bool
    output: str


def _error(message: str) -> ToolOutcome:
    return ToolOutcome(False, error_output(message))


class ToolRunner:
    """Runs tools for every call of one session-runner process (see the module docstring)."""

    def __init__(
        self,
        redis_client: redis.asyncio.Redis | None = None,
        *,
        http: httpx.AsyncClient | None = None,
        messages: TaskMessages | None = None,
        own_redis: bool = False,
    ) -> None:
        self._redis = redis_client
        self._own_redis = own_redis
        self._own_http = http is None
        self._http = http or httpx.AsyncClient(limits=HTTP_LIMITS, follow_redirects=False)
        self._messages = messages or TaskMessages()
        self.inbox = keys.tool_inbox(uuid.uuid4().hex)
        self._waiting: dict[str, asyncio.Future[ToolOutcome]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def run_tool(
        self, spec: ToolDef, arguments: str | Mapping[str, Any], timeout_s: float | None = None
    ) -> ToolOutcome:
        """Run ``spec`` once with the model's arguments (a JSON string or a parsed object).

        ``timeout_s`` defaults to the handler's ``timeout_s``.
        """
        limit_s = spec.handler.timeout_s if timeout_s is None else timeout_s
        try:
            parsed = python_tools.parse_arguments(arguments)
        except ToolError as err:
            return _error(str(err))
        if isinstance(spec.handler, HttpHandler):
            return await self._http_tool(spec.handler, parsed, limit_s)
        return await self._python_tool(spec.handler, spec.run_in_worker, parsed, limit_s)

    async def _http_tool(
        self, handler: HttpHandler, arguments: dict[str, Any], timeout_s: float
    ) -> ToolOutcome:
        try:
            async with asyncio.timeout(timeout_s):
                response = await self._http.post(
                    handler.url,
                    content=orjson.dumps(arguments),
                    headers={"content-type": "application/json"},
                    timeout=timeout_s,
                )
        except (TimeoutError, httpx.TimeoutException):
            return _error(f"tool timed out after {timeout_s:g}s")
        except httpx.HTTPError as err:
            return _error(f"tool endpoint unreachable: {type(err).__name__}")
        if not response.is_success:
            return _error(f"tool endpoint answered HTTP {response.status_code}")
        if len(response.content) > python_tools.MAX_OUTPUT_BYTES:
            return _error(f"tool output is larger than {python_tools.MAX_OUTPUT_BYTES} bytes")
        try:
            orjson.loads(response.content)
        except orjson.JSONDecodeError:
            return _error("tool endpoint answered with a body that is not JSON")
        return ToolOutcome(True, response.content.decode())

    async def _python_tool(
        self,
        handler: PythonHandler,
        in_worker: bool,
        arguments: dict[str, Any],
        timeout_s: float,
    ) -> ToolOutcome:
        if in_worker:
            # The worker resolves it: the runner need not be able to import it at all.
            return await self._in_worker(handler.function, arguments, timeout_s)
        try:
            function = python_tools.resolve(handler.function)
            python_tools.bind(function, arguments)
        except ToolError as err:
            return _error(str(err))
        if not inspect.iscoroutinefunction(function):
            return await self._in_worker(handler.function, arguments, timeout_s)
        try:
            async with asyncio.timeout(timeout_s):
                value = await function(**arguments)
            return ToolOutcome(True, python_tools.encode_output(value))
        except TimeoutError:
            return _error(f"tool timed out after {timeout_s:g}s")
        except ToolError as err:
            return _error(str(err))
        except Exception as err:
            return ToolOutcome(False, python_tools.failure(function, err))

    async def _in_worker(
        self, function: str, arguments: dict[str, Any], timeout_s: float
    ) -> ToolOutcome:
        if self._redis is None:
            return _error("blocking tools need a Redis connection to reach the tools workers")
        self._start_reader()
        request_id = uuid.uuid4().hex
        deadline_at = time.time() + timeout_s
        args = [request_id, function, orjson.dumps(arguments).decode(), self.inbox, deadline_at]
        message = task_message(
            RUN_TOOL_TASK,
            args,
            TOOLS_QUEUE,
            task_id=request_id,
            delivery_tag=request_id,
            origin=self._messages.origin,
            reply_to=self._messages.reply_to,
        )
        future: asyncio.Future[ToolOutcome] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        try:
            async with asyncio.timeout(timeout_s):
                await self._redis.lpush(TOOLS_QUEUE, message)  # type: ignore[misc]
                return await future
        except TimeoutError:
            return _error(f"tool timed out after {timeout_s:g}s")
        except redis.RedisError as err:
            return _error(f"tools queue unreachable: {type(err).__name__}")
        finally:
            self._waiting.pop(request_id, None)

    def _start_reader(self) -> None:
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read_inbox(), name="tool-inbox")

    async def _read_inbox(self) -> None:
        assert self._redis is not None
        while True:
            try:
                item = await self._redis.blpop([self.inbox], timeout=INBOX_BLOCK_S)  # type: ignore[misc]
            except redis.RedisError as err:
                logger.warning("tool inbox read failed (%s); retrying", type(err).__name__)
                await asyncio.sleep(INBOX_BLOCK_S)
                continue
            if item is not None:
                self._deliver(item[1])

    def _deliver(self, raw: bytes | str) -> None:
        try:
            reply = orjson.loads(raw)
            request_id, ok, output = str(reply["id"]), bool(reply["ok"]), str(reply["output"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            logger.warning("malformed tool reply dropped")
            return
        future = self._waiting.get(request_id)
        if future is not None and not future.done():
            future.set_result(ToolOutcome(ok, output))

    async def aclose(self) -> None:
        """Stop the inbox reader and close the HTTP pool if this runner made it."""
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        for future in self._waiting.values():
            if not future.done():
                future.set_result(_error("the session runner is shutting down"))
        if self._own_http:
            await self._http.aclose()
        if self._own_redis and self._redis is not None:
            await self._redis.aclose()


_defaults: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ToolRunner] = (
    weakref.WeakKeyDictionary()
)


async def run_tool(
    spec: ToolDef, arguments: str | Mapping[str, Any], timeout_s: float | None = None
) -> ToolOutcome:
    """``ToolRunner.run_tool`` on this event loop's default runner.

    The default runner is built on first use from ``Settings`` (its Redis URL, for
    blocking tools); ``aclose_default_runner`` releases it. A process that manages its
    own ``ToolRunner`` need not use this.
    """
    loop = asyncio.get_running_loop()
    runner = _defaults.get(loop)
    if runner is None:
        url = Settings().redis_url
        client = redis.asyncio.Redis.from_url(url) if url else None
        runner = _defaults[loop] = ToolRunner(client, own_redis=True)
    return await runner.run_tool(spec, arguments, timeout_s)


async def aclose_default_runner() -> None:
    """Close this event loop's default runner, if ``run_tool`` made one."""
    runner = _defaults.pop(asyncio.get_running_loop(), None)
    if runner is not None:
        await runner.aclose()
