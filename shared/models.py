"""The call record, its states and the transitions allowed between them.

``CallRecord`` is what ``shared.store`` keeps in the call hash (``shared.keys``). In
Redis every field is a string: timestamps are unix seconds, ``cost_usd`` a decimal
string, ``sip_headers`` and ``usage`` JSON, and absent values are absent fields. Fields
this module does not know are kept (``extra``), so a newer writer never breaks an older
reader.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field


class CallState(enum.StrEnum):
    """Where a call is in its life; see ``TRANSITIONS`` for the allowed moves."""

    INCOMING = "incoming"
    ACCEPTING = "accepting"
    ACTIVE = "active"
    TRANSFERRING = "transferring"
    ENDED = "ended"
    REJECTED = "rejected"
    FAILED = "failed"


class EndReason(enum.StrEnum):
    """Why a call ended; recorded with the move to a terminal state."""

    CALLER_HANGUP = "caller_hangup"
    AGENT_HANGUP = "agent_hangup"
    OPERATOR_HANGUP = "operator_hangup"
    TRANSFERRED = "transferred"
    MAX_DURATION = "max_duration"
    BUDGET = "budget"
    IDLE = "idle"
    ERROR = "error"
    CALLER_GONE = "caller_gone"
    """The call no longer existed when we tried to accept or attach (404)."""
    REJECTED = "rejected"
    CAPACITY = "capacity"


TERMINAL_STATES = frozenset({CallState.ENDED, CallState.REJECTED, CallState.FAILED})
LIVE_STATES = frozenset(CallState) - TERMINAL_STATES

TRANSITIONS: Mapping[CallState, frozenset[CallState]] = {
    CallState.INCOMING: frozenset({CallState.ACCEPTING, CallState.REJECTED, CallState.FAILED}),
    CallState.ACCEPTING: frozenset(
        # ended: the caller hung up between accept and attach.
        {CallState.ACTIVE, CallState.REJECTED, CallState.FAILED, CallState.ENDED}
    ),
    CallState.ACTIVE: frozenset({CallState.TRANSFERRING, CallState.ENDED}),
    # active again: the transfer was refused and the call goes on.
    CallState.TRANSFERRING: frozenset({CallState.ENDED, CallState.ACTIVE}),
    CallState.ENDED: frozenset(),
    CallState.REJECTED: frozenset(),
    CallState.FAILED: frozenset(),
}


class InvalidTransitionError(ValueError):
    """A transition that the state machine never allows, whatever the current state."""


def check_transition(from_states: frozenset[CallState], to_state: CallState) -> None:
    """Refuse a transition request that could never be valid."""
    if not from_states:
        raise InvalidTransitionError("no source state given")
    for state in from_states:
        if to_state not in TRANSITIONS[state]:
            raise InvalidTransitionError(f"{state.value} -> {to_state.value} is not allowed")


class SipHeader(BaseModel):
    """One SIP header of the INVITE as OpenAI relayed it: untrusted caller data."""

    model_config = ConfigDict(frozen=True)

    name: str
    value: str


# Fields only the store writes: a caller may not smuggle them through ``fields``.
PROTECTED_FIELDS = frozenset({"id", "state"})
_JSON_FIELDS = frozenset({"sip_headers", "usage"})


def encode_value(value: object) -> str:
    """One field value as the string the hash holds."""
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Decimal):
        return str(value)
    return orjson.dumps(value, default=_plain).decode()


def _plain(value: object) -> object:
    # orjson calls this for types it does not know, e.g. nested models.
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(f"cannot store a {type(value).__name__} in a call record")


def encode_fields(fields: Mapping[str, object]) -> dict[str, str]:
    """Field values as hash strings; ``None`` values are left out."""
    return {name: encode_value(v) for name, v in fields.items() if v is not None}


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


class CallRecord(BaseModel):
    """One call as the cluster knows it. ``from`` is spelled ``from_`` in Python."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    id: str
    state: CallState = CallState.INCOMING
    from_: str = Field(default="", alias="from")
    to: str = ""
    profile: str | None = None
    sip_headers: list[SipHeader] = Field(default_factory=list)
    sip_media_security: str | None = None
    webhook_id: str | None = None
    event_id: str | None = None
    created_at: float
    updated_at: float | None = None
    accepted_at: float | None = None
    ended_at: float | None = None
    end_reason: str | None = None
    reject_code: int | None = None
    error: str | None = None
    owner: str | None = None
    cost_usd: Decimal = Decimal(0)
    """Exact, as ``shared.accounting`` keeps it: a decimal string in the hash."""
    usage: dict[str, int] = Field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        """True once the call can change no more."""
        return self.state in TERMINAL_STATES

    def sip_header(self, name: str) -> str | None:
        """The first SIP header called ``name`` (any case), or None."""
        wanted = name.lower()
        for header in self.sip_headers:
            if header.name.lower() == wanted:
                return header.value
        return None

    def to_hash(self) -> dict[str, str]:
        """The record as the flat string mapping the Redis hash holds."""
        # JSON mode serializes in pydantic-core; only non-strings need a Python pass.
        data = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        return {k: v if type(v) is str else encode_value(v) for k, v in data.items()}

    @classmethod
    def from_hash(cls, raw: Mapping[bytes, bytes] | Mapping[str, str]) -> CallRecord:
        """Rebuild a record from HGETALL output (bytes or decoded strings)."""
        data: dict[str, Any] = {}
        for key, value in raw.items():
            name, text = _text(key), _text(value)
            data[name] = orjson.loads(text) if name in _JSON_FIELDS else text
        return cls.model_validate(data)
