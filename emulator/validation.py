"""Request validation errors in the real API's words: one 400 answer naming the field.

Pydantic reports every problem with a location that includes its own union tags; the
real API reports the first problem with ``param`` as the JSON path the client sent
(``audio.output.speed``, ``tools[0].name``) and a machine-readable ``code``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from emulator.rest import ApiError

SchemaT = TypeVar("SchemaT", bound=BaseModel)


def validate_body(
    model: type[SchemaT],
    data: dict[str, Any],
    *,
    hints: Mapping[str, str] | None = None,
    param_prefix: str = "",
) -> SchemaT:
    """``data`` validated as ``model``; the first problem becomes a 400 ``ApiError``.

    ``hints`` adds a sentence to the error for known unknown fields (by their path);
    ``param_prefix`` places ``data`` inside a larger body for the reported ``param``.
    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise schema_error(exc.errors()[0], data, hints or {}, param_prefix) from None


def param_path(loc: tuple[int | str, ...], data: Any, *, missing: bool = False) -> str:
    """The JSON path of an error location, skipping the union tags pydantic adds.

    A name absent from ``data`` is a union tag, except the last one of a ``missing``
    error: that is the field the client left out.
    """
    path = ""
    current = data
    for index, part in enumerate(loc):
        if isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current):
            path += f"[{part}]"
            current = current[part]
        elif (
            isinstance(current, dict)
            and isinstance(part, str)
            and (part in current or (missing and index == len(loc) - 1))
        ):
            path += f".{part}" if path else part
            current = current.get(part)
    return path


def schema_error(
    error: Any, data: Any, hints: Mapping[str, str], param_prefix: str = ""
) -> ApiError:
    """One pydantic error as the 400 answer the real API gives for it.

    ``param`` (and the message) name the field by its full path, ``param_prefix`` first.
    """
    kind: str = error["type"]
    param = param_path(tuple(error["loc"]), data, missing=kind == "missing")
    if kind in ("union_tag_not_found", "union_tag_invalid"):
        # Every discriminated union in these schemas switches on ``type``.
        param = f"{param}.type" if param else "type"
    hint = hints.get(param)
    if param_prefix:
        param = f"{param_prefix}.{param}" if param else param_prefix
    if kind == "extra_forbidden":
        message = f"Unknown parameter: '{param}'."
        if hint:
            message += " " + hint
        return ApiError(400, message, param=param, code="unknown_parameter")
    if kind in ("missing", "union_tag_not_found"):
        return ApiError(
            400,
            f"Missing required parameter: '{param}'.",
            param=param,
            code="missing_required_parameter",
        )
    if kind in ("less_than_equal", "less_than", "greater_than_equal", "greater_than"):
        value = error.get("input")
        number = "integer" if isinstance(value, int) else "decimal"
        side = "above_max" if kind.startswith("less") else "below_min"
        return ApiError(
            400,
            f"Invalid '{param}': {error['msg']}, but got {value!r} instead.",
            param=param,
            code=f"{number}_{side}_value",
        )
    if kind.endswith("_type"):
        return ApiError(
            400, f"Invalid type for '{param}': {error['msg']}.", param=param, code="invalid_type"
        )
    return ApiError(
        400, f"Invalid value for '{param}': {error['msg']}.", param=param, code="invalid_value"
    )
