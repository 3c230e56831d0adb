"""Checks an accept body against the official SDK's GA session types, unknown fields included."""

from __future__ import annotations

from typing import Any

from openai.types.realtime import RealtimeSessionCreateRequest, RealtimeSessionCreateRequestParam
from pydantic import BaseModel, TypeAdapter

PARAM = TypeAdapter(RealtimeSessionCreateRequestParam)


def unknown_fields(model: BaseModel, path: str = "") -> list[str]:
    """Every field the SDK model did not declare, anywhere in the validated tree.

    The SDK's models accept unknown fields (``extra="allow"``) and keep them in
    ``model_extra``; a field the API does not know must show up here.
    """
    found = [f"{path}{name}" for name in (model.model_extra or {})]
    for name in type(model).model_fields:
        found += _unknown_in(getattr(model, name), f"{path}{name}.")
    return found


def _unknown_in(value: Any, path: str) -> list[str]:
    if isinstance(value, BaseModel):
        return unknown_fields(value, path)
    if isinstance(value, list):
        return [f for i, item in enumerate(value) for f in _unknown_in(item, f"{path}{i}.")]
    return []


def check_against_sdk(body: dict[str, Any]) -> RealtimeSessionCreateRequest:
    """``body`` validated as the SDK's session request; fails on any unknown field."""
    PARAM.validate_python(body)
    model = RealtimeSessionCreateRequest.model_validate(body)
    assert unknown_fields(model) == []
    return model
