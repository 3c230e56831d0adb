"""Python tool functions: found by import path, called with the model's arguments.

A Python tool is configured as ``package.module:function`` (``shared.profile``). The
model's arguments (a JSON object) become keyword arguments; what the function returns
becomes the ``function_call_output`` string: a ``str`` as it is, anything else as JSON.
Whatever goes wrong (a bad import path, arguments that do not fit the signature, an
exception, output that is not JSON-serialisable) becomes an error output, a JSON
string ``{"error": "..."}``, never an exception: the model should tell the caller.

Session runners await ``async def`` tools in-process; plain (blocking) functions, and
any tool marked ``run_in_worker``, run in a Celery worker through ``run_in_worker``
(the ``switchboard.run_tool`` task), which answers on the runner's reply inbox.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
from collections.abc import Callable, Mapping
from typing import Any

import orjson

logger = logging.getLogger(__name__)

MAX_OUTPUT_BYTES = 32_768
"""A tool output larger than this is refused: it would flood the model's context."""

MAX_SIGNATURES_KEPT = 1024

_resolved: dict[str, Callable[..., Any]] = {}
_signatures: dict[Callable[..., Any], inspect.Signature | None] = {}


class ToolError(Exception):
    """A tool could not be run or its result not used; the message goes to the model."""


def error_output(message: str) -> str:
    """The ``function_call_output`` that tells the model a tool failed."""
    return orjson.dumps({"error": message}).decode()


def resolve(path: str) -> Callable[..., Any]:
    """The function named ``package.module:function``; ``ToolError`` if there is none."""
    found = _resolved.get(path)
    if found is not None:
        return found
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ToolError(f"bad tool import path {path!r}: expected package.module:function")
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # a module that fails while importing is as unusable
        raise ToolError(f"cannot import tool module {module_name!r}: {err}") from err
    function: object = getattr(module, attr, None)
    if not callable(function):
        raise ToolError(f"module {module_name!r} has no function {attr!r}")
    _resolved[path] = function
    return function


def parse_arguments(arguments: str | Mapping[str, Any]) -> dict[str, Any]:
    """The model's arguments as a dict; ``ToolError`` unless they are a JSON object."""
    if isinstance(arguments, Mapping):
        return dict(arguments)
    try:
        parsed = orjson.loads(arguments) if arguments.strip() else {}
    except orjson.JSONDecodeError as err:
        raise ToolError(f"arguments are not valid JSON: {err}") from err
    if not isinstance(parsed, dict):
        raise ToolError("arguments must be a JSON object")
    return parsed


def bind(function: Callable[..., Any], arguments: Mapping[str, Any]) -> None:
    """Check the arguments fit the function, so a mismatch reads as one, not as a crash."""
    signature = _signature(function)
    if signature is None:
        return  # no signature to check (a builtin): let the call decide
    try:
        signature.bind(**arguments)
    except TypeError as err:
        raise ToolError(f"arguments do not fit {function.__name__}: {err}") from err


def _signature(function: Callable[..., Any]) -> inspect.Signature | None:
    # Built once per function: ``inspect.signature`` was most of an in-process call.
    try:
        return _signatures[function]
    except KeyError:
        pass
    except TypeError:  # an unhashable callable object: not kept
        return _signature_of(function)
    found = _signature_of(function)
    if len(_signatures) < MAX_SIGNATURES_KEPT:
        _signatures[function] = found
    return found


def _signature_of(function: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(function)
    except ValueError:
        return None


def encode_output(value: object) -> str:
    """The output string for a tool's return value; ``ToolError`` if it cannot be one."""
    if isinstance(value, str):
        text = value
    else:
        try:
            text = orjson.dumps(value).decode()
        except TypeError as err:
            raise ToolError(f"tool returned a {type(value).__name__}, not JSON data") from err
    if len(text.encode()) > MAX_OUTPUT_BYTES:
        raise ToolError(f"tool output is larger than {MAX_OUTPUT_BYTES} bytes")
    return text


def failure(function: Callable[..., Any], err: Exception) -> str:
    """The error output for an exception raised inside a tool."""
    name = getattr(function, "__name__", "tool")
    # The arguments may hold caller data: log only which tool and what kind of failure.
    logger.warning("tool %s raised %s", name, type(err).__name__)
    return error_output(f"{name} failed: {type(err).__name__}: {err}")


def run_in_worker(path: str, arguments_json: str, remaining_s: float) -> tuple[bool, str]:
    """Run a tool to completion in this (worker) process: ``(ok, output)``.

    ``remaining_s`` bounds an ``async def`` tool; a blocking one cannot be interrupted
    and is bounded by the task's time limit instead.
    """
    try:
        function = resolve(path)
        arguments = parse_arguments(arguments_json)
        bind(function, arguments)
    except ToolError as err:
        return False, error_output(str(err))
    try:
        if inspect.iscoroutinefunction(function):
            value = asyncio.run(asyncio.wait_for(function(**arguments), remaining_s))
        else:
            value = function(**arguments)
        return True, encode_output(value)
    except ToolError as err:
        return False, error_output(str(err))
    except TimeoutError:
        return False, error_output(f"tool timed out after {remaining_s:g}s")
    except Exception as err:
        return False, failure(function, err)


def reply_message(request_id: str, ok: bool, output: str) -> bytes:
    """What a worker LPUSHes onto a runner's inbox for one tool call."""
    return orjson.dumps({"id": request_id, "ok": ok, "output": output})
