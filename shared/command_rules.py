"""What makes an operator command valid, and how it looks in the call's command stream.

Commands (``transfer``, ``hangup``, ``say``, ``update``) are checked here before they are
queued, so the CLI and the admin API refuse a bad one at once with a clear message;
the session runner checks again when it applies them (``workers.sessions.commands``).

| kind | args |
| --- | --- |
| ``transfer`` | ``target``: a ``sip:``/``tel:`` URI or a named target; ``announcement``? |
| ``hangup`` | ``goodbye``? (text the agent says first) |
| ``say`` | ``text`` (non-empty) |
| ``update`` | ``session`` (a non-empty object of GA session fields) |

A stream entry has the fields ``command_id``, ``kind``, ``args`` (JSON) and
``issued_at`` (unix seconds). Pure: talks to nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from shared.errors import InvalidRequest
from shared.profile import valid_transfer_uri

KINDS = ("transfer", "hangup", "say", "update")
MAX_ARGS_BYTES = 16_384
MAX_TEXT_CHARS = 4_000


class InvalidCommand(InvalidRequest):
    """A command that can never be carried out as given; nothing was queued."""


@dataclass(frozen=True, slots=True)
class QueuedCommand:
    """One command read back from a call's stream; ``entry_id`` is its stream position.

    The session runner turns it into ``workers.sessions.commands.Command`` (same fields).
    """

    entry_id: str
    command_id: str
    kind: str
    args: Mapping[str, Any] = field(default_factory=dict)
    issued_at: float | None = None


@dataclass(frozen=True, slots=True)
class CommandResult:
    """The outcome the runner recorded for a command; ``ok`` false: nothing was done."""

    command_id: str
    ok: bool
    detail: str
    at: float


def _text(args: Mapping[str, Any], key: str, *, required: bool) -> str | None:
    value = args.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidCommand(f"{key} must be non-empty text")
    if len(value) > MAX_TEXT_CHARS:
        raise InvalidCommand(f"{key} is longer than {MAX_TEXT_CHARS} characters")
    return value.strip()


def validate_command(
    kind: object, args: object, named_targets: Mapping[str, str]
) -> dict[str, Any]:
    """The command's args as they will be queued; ``InvalidCommand`` says what is wrong."""
    if kind not in KINDS:
        raise InvalidCommand(f"unknown command kind {kind!r} (one of {', '.join(KINDS)})")
    if args is None:
        args = {}
    if not isinstance(args, Mapping):
        raise InvalidCommand("command args must be an object")
    out: dict[str, Any]
    if kind == "transfer":
        target = args.get("target")
        if not isinstance(target, str) or not target:
            raise InvalidCommand("transfer needs a target")
        if target not in named_targets and not valid_transfer_uri(target):
            known = ", ".join(sorted(named_targets)) or "none"
            raise InvalidCommand(
                f"unknown transfer target {target!r}: not a sip:/tel: URI nor a named target"
                f" (named: {known})"
            )
        out = {"target": target}
        announcement = _text(args, "announcement", required=False)
        if announcement is not None:
            out["announcement"] = announcement
    elif kind == "hangup":
        goodbye = _text(args, "goodbye", required=False)
        out = {} if goodbye is None else {"goodbye": goodbye}
    elif kind == "say":
        out = {"text": _text(args, "text", required=True)}
    else:
        session = args.get("session")
        if not isinstance(session, Mapping) or not session:
            raise InvalidCommand("update needs a non-empty session object")
        out = {"session": dict(session)}
    if len(encode_args(out)) > MAX_ARGS_BYTES:
        raise InvalidCommand(f"command args are larger than {MAX_ARGS_BYTES} bytes")
    return out


def encode_args(args: Mapping[str, Any]) -> bytes:
    """Args as the stream stores them; ``InvalidCommand`` if they are not plain JSON."""
    try:
        return orjson.dumps(args)
    except TypeError as err:
        raise InvalidCommand(f"command args are not plain JSON: {err}") from err


def _str(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def parse_entry(entry_id: bytes | str, raw: Mapping[Any, Any]) -> QueuedCommand:
    """One stream entry as a command; a malformed entry becomes an unknown kind.

    Malformed entries are not dropped: the runner answers them with a failed result,
    so whoever waits for the outcome learns of it instead of timing out.
    """
    fields = {_str(k): _str(v) for k, v in raw.items()}
    entry = _str(entry_id)
    try:
        args = orjson.loads(fields.get("args", "{}"))
    except orjson.JSONDecodeError:
        args = None
    try:
        issued_at: float | None = float(fields["issued_at"])
    except (KeyError, ValueError):
        issued_at = None
    kind = fields.get("kind", "") if isinstance(args, dict) else "malformed"
    return QueuedCommand(
        entry_id=entry,
        command_id=fields.get("command_id") or entry,
        kind=kind,
        args=args if isinstance(args, dict) else {},
        issued_at=issued_at,
    )


def parse_result(command_id: str, raw: bytes | str) -> CommandResult:
    """A stored outcome (JSON ``{ok, detail, at}``)."""
    data = orjson.loads(raw)
    return CommandResult(command_id, bool(data["ok"]), str(data["detail"]), float(data["at"]))
