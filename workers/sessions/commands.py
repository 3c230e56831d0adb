"""Operator commands for a live call, and their validation.

A command arrives at least once (from the call's command stream) and is applied at most
once: the core keeps the outcome of every command id. ``parse_command`` turns a raw
command into one of the actions below or a one-line reason why it is invalid; an
invalid command changes nothing.

| kind | args | action |
| --- | --- | --- |
| ``transfer`` | ``target`` (named or ``sip:``/``tel:``), ``announcement``? | ``DoTransfer`` |
| ``hangup`` | ``goodbye``? (text the agent says first) | ``DoHangup`` |
| ``say`` | ``text`` | ``DoSay``: a ``response.create`` speaking the text |
| ``update`` | ``session`` (GA session fields) | ``DoUpdate``: one ``session.update`` |

``say`` uses response instructions rather than a fake user message, so the
conversation history holds only what was really said. ``update`` always sets
``session.type: "realtime"``, silently drops ``audio.input.format`` and
``audio.output.format`` (never sent on SIP) and refuses beta field names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from workers.sessions.client_events import session_update
from workers.sessions.plan import SessionPlan


@dataclass(frozen=True, slots=True)
class Command:
    """One operator command; ``issued_at`` (wall clock) measures latency from the issuer."""

    command_id: str
    kind: str
    args: Mapping[str, Any] = field(default_factory=dict)
    issued_at: float | None = None


@dataclass(frozen=True, slots=True)
class DoTransfer:
    """Refer the call to ``target_uri``, after speaking ``announcement`` if given."""

    target_uri: str
    announcement: str | None


@dataclass(frozen=True, slots=True)
class DoHangup:
    """Hang up, after speaking ``goodbye`` if given."""

    goodbye: str | None


@dataclass(frozen=True, slots=True)
class DoSay:
    """Have the agent speak ``text``."""

    text: str


@dataclass(frozen=True, slots=True)
class DoUpdate:
    """Send this ``session.update`` event (already sanitised)."""

    event: dict[str, Any]


CommandAction = DoTransfer | DoHangup | DoSay | DoUpdate


def parse_command(command: Command, plan: SessionPlan) -> CommandAction | str:
    """The action for a valid command, or a one-line reason why it is invalid."""
    args = command.args if isinstance(command.args, Mapping) else {}
    if command.kind == "transfer":
        target = args.get("target")
        if target is None or target == "":
            return "transfer needs a target"
        uri = plan.resolve(target)
        if uri is None:
            return f"unknown transfer target {target!r}: not a named target nor a sip:/tel: URI"
        announcement = _optional_text(args, "announcement")
        if announcement == "":
            return "announcement must be non-empty text"
        return DoTransfer(uri, announcement)
    if command.kind == "hangup":
        goodbye = _optional_text(args, "goodbye")
        return DoHangup(goodbye) if goodbye != "" else "goodbye must be non-empty text"
    if command.kind == "say":
        text = _optional_text(args, "text")
        return DoSay(text) if text else "say needs a non-empty text"
    if command.kind == "update":
        event = session_update(args.get("session"))
        return DoUpdate(event) if isinstance(event, dict) else event
    return f"unknown command kind {command.kind!r} (transfer, hangup, say, update)"


def _optional_text(args: Mapping[str, Any], key: str) -> str | None:
    """The stripped text, ``None`` when absent, ``""`` when present but unusable."""
    value = args.get(key)
    if value is None:
        return None
    return value.strip() if isinstance(value, str) else ""
