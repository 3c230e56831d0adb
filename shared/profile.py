"""Call profiles: how the AI agent behaves on a call, as the operator configures it.

A ``Profile`` names the model, the instructions (a caller-variable template, see
``shared.templates``), voice, transcription, turn detection, the tools offered, the
greeting spoken first, and the limits a session runner enforces (duration and budget,
each with a wrap-up, the idle caller, DTMF keys). ``workers.session_body`` turns a
profile into the body of the accept request; only GA session fields are representable
here, and there is no audio format field at all, because overriding the format garbles
SIP audio.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from shared.templates import template_variables

BUILTIN_TOOLS = ("transfer_call", "end_call")
"""Tools every policy knows without defining them; session runners carry them out."""

VOICES = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar")
TranscriptionModel = Literal[
    "whisper-1",
    "gpt-4o-transcribe",
    "gpt-4o-mini-transcribe",
    "gpt-4o-mini-transcribe-2025-12-15",
    "gpt-4o-transcribe-diarize",
    "gpt-realtime-whisper",
    "gpt-transcribe",
    "gpt-live-transcribe",
]
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_SIP_URI = re.compile(r"sips?:([^\s@<>\"]+@)?[^\s@<>\"]+")
_TEL_URI = re.compile(r"tel:\+?[0-9][0-9().-]*(;[^\s;<>\"]+)*")


def valid_transfer_uri(value: str) -> bool:
    """Whether ``value`` is a ``sip:``/``sips:`` URI or a ``tel:`` number (a ``Refer-To``)."""
    return bool(_SIP_URI.fullmatch(value) or _TEL_URI.fullmatch(value))


def _sip_uri(value: str) -> str:
    if not valid_transfer_uri(value):
        raise ValueError("must be a sip: or tel: URI (sip:agent@pbx.example.com, tel:+1415...)")
    return value


SipUri = Annotated[str, AfterValidator(_sip_uri)]
"""A transfer destination (a SIP ``Refer-To``): ``sip:agent@pbx.example.com``, ``tel:+1415...``."""


def _template(value: str) -> str:
    template_variables(value)
    return value


Template = Annotated[str, AfterValidator(_template)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Transcription(_Strict):
    """Caller speech to text (``audio.input.transcription``); billed separately."""

    model: TranscriptionModel = "gpt-4o-mini-transcribe"
    language: str | None = None
    prompt: str | None = None


class ServerVad(_Strict):
    """Voice-activity detection on silence; ``idle_timeout_ms`` is the server's own nudge."""

    type: Literal["server_vad"]
    threshold: float | None = Field(default=None, ge=0, le=1)
    prefix_padding_ms: int | None = Field(default=None, ge=0)
    silence_duration_ms: int | None = Field(default=None, ge=0)
    idle_timeout_ms: int | None = Field(default=None, ge=5000, le=30000)
    create_response: bool | None = None
    interrupt_response: bool | None = None


class SemanticVad(_Strict):
    """Turn detection on meaning: ``eagerness`` trades responsiveness against interruptions."""

    type: Literal["semantic_vad"]
    eagerness: Literal["low", "medium", "high", "auto"] | None = None
    create_response: bool | None = None
    interrupt_response: bool | None = None


TurnDetection = Annotated[ServerVad | SemanticVad, Field(discriminator="type")]


class Idle(_Strict):
    """A silent caller is prompted ``max_prompts`` times, ``timeout_s`` apart, then hung up on.

    ``timeout_s`` is sent as ``turn_detection.idle_timeout_ms``, the server's own silence
    timer (5-30 s, ``server_vad`` only), so a profile with ``idle`` needs
    ``turn_detection: {type: server_vad}`` and leaves ``idle_timeout_ms`` to this field.
    """

    timeout_s: float = Field(default=10.0, ge=5, le=30)
    prompt: str = "Are you still there?"
    max_prompts: int = Field(default=2, ge=0)
    goodbye: str | None = "I'll end the call now. Goodbye."


DEFAULT_LIMIT_GOODBYE = "I'm sorry, we have to end the call here. Thank you for calling. Goodbye."


class WrapUp(_Strict):
    """How a call that reaches a limit ends: the agent says ``goodbye`` (if given), then
    the caller is transferred to the named target ``transfer`` or, without one, hung up.

    ``grace_s`` is how long the wrap-up has. For ``max_duration_wrap_up`` it starts
    ``grace_s`` before ``max_duration_s``, so the call never runs past the limit; for
    ``budget_wrap_up`` it starts when the call's cost reaches ``budget_usd`` and the hard
    stop comes ``grace_s`` later. The call ends as soon as the goodbye has been spoken;
    with no goodbye it ends (or is transferred) when the wrap-up starts.
    """

    goodbye: str | None = Field(default=None, min_length=1)
    transfer: str | None = None
    """A named transfer target of the policy (``transfer_targets``)."""
    grace_s: float = Field(default=15.0, ge=0, le=300)


def _default_wrap_up() -> WrapUp:
    return WrapUp(goodbye=DEFAULT_LIMIT_GOODBYE)


class DtmfAction(_Strict):
    """What a key press does: transfer to a named target, hang up, or say something."""

    action: Literal["transfer", "hangup", "say"]
    target: str | None = None
    text: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> DtmfAction:
        if self.action == "transfer" and not self.target:
            raise ValueError("a transfer needs a target")
        if self.action == "say" and not self.text:
            raise ValueError("say needs a text")
        return self


DtmfKey = Literal["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "*", "#", "A", "B", "C", "D"]


class HttpHandler(_Strict):
    """A tool carried out by POSTing its arguments as JSON to ``url``."""

    type: Literal["http"]
    url: str = Field(pattern=r"^https?://")
    timeout_s: float = Field(default=5.0, gt=0, le=60)


class PythonHandler(_Strict):
    """A tool carried out by an importable function ``package.module:function``."""

    type: Literal["python"]
    function: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    timeout_s: float = Field(default=5.0, gt=0, le=60)


class ToolDef(_Strict):
    """A function tool the model may call: its description, JSON Schema and handler."""

    description: str
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    handler: Annotated[HttpHandler | PythonHandler, Field(discriminator="type")]
    run_in_worker: bool = False
    """True sends slow or blocking tools to the Celery ``tools`` queue."""

    @field_validator("parameters")
    @classmethod
    def _object_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        if value.get("type") != "object":
            raise ValueError('the parameters schema must have "type": "object"')
        return value


class Profile(_Strict):
    """How the agent behaves on calls routed to this profile."""

    model: str = "gpt-realtime"
    instructions: Template
    voice: str = "marin"
    speed: float | None = Field(default=None, ge=0.25, le=1.5)
    transcription: Transcription | None = None
    turn_detection: TurnDetection | None = None
    noise_reduction: Literal["near_field", "far_field"] | None = None
    tools: list[str] = Field(default_factory=list)
    tool_choice: Literal["auto", "none", "required"] = "auto"
    transfer_targets: list[str] | None = None
    """Named targets offered to ``transfer_call``; absent offers every named target."""
    greeting: Template | None = None
    """Spoken first (the runner asks for it); absent lets the caller speak first."""
    max_output_tokens: int | Literal["inf"] | None = None
    max_duration_s: float = Field(default=1800.0, gt=0)
    max_duration_wrap_up: WrapUp = Field(default_factory=_default_wrap_up)
    """How the call ends at ``max_duration_s``; absent: a default goodbye, 15 s grace."""
    budget_usd: float | None = Field(default=None, gt=0)
    """The most one call may cost (USD); absent: no budget."""
    budget_wrap_up: WrapUp = Field(default_factory=_default_wrap_up)
    """How the call ends once it cost ``budget_usd``; absent: a default goodbye, 15 s grace."""
    idle: Idle | None = None
    dtmf: dict[DtmfKey, DtmfAction] = Field(default_factory=dict)

    @field_validator("max_duration_wrap_up")
    @classmethod
    def _grace_within_duration(cls, value: WrapUp, info: ValidationInfo) -> WrapUp:
        max_s = info.data.get("max_duration_s")
        if isinstance(max_s, float | int) and value.grace_s >= max_s:
            raise ValueError(
                f"grace_s ({value.grace_s:g}) must be shorter than max_duration_s ({max_s:g}):"
                " the wrap-up starts grace_s before the limit"
            )
        return value

    @field_validator("idle")
    @classmethod
    def _idle_needs_server_vad(cls, value: Idle | None, info: ValidationInfo) -> Idle | None:
        if value is None or "turn_detection" not in info.data:
            return value  # no idle handling, or turn_detection is itself invalid
        detection = info.data["turn_detection"]
        if not isinstance(detection, ServerVad):
            kind = "none" if detection is None else detection.type
            raise ValueError(
                f"needs turn_detection: {{type: server_vad}} (this profile has {kind}): the"
                " API's idle timeout, idle_timeout_ms, exists only with server_vad"
            )
        if detection.idle_timeout_ms is not None:
            raise ValueError(
                "the idle timeout is set once, by idle.timeout_s (sent as idle_timeout_ms):"
                " remove turn_detection.idle_timeout_ms"
            )
        return value

    @field_validator("dtmf", mode="before")
    @classmethod
    def _key_text(cls, value: object) -> object:
        # An unquoted key such as ``0:`` reads as an integer; a key is a character.
        if isinstance(value, dict):
            return {str(k) if isinstance(k, int) else k: v for k, v in value.items()}
        return value

    @field_validator("voice")
    @classmethod
    def _voice(cls, value: str) -> str:
        if value not in VOICES and not value.startswith("voice_"):
            raise ValueError(f"unknown voice {value!r}: use one of {', '.join(VOICES)}")
        return value

    @field_validator("tools")
    @classmethod
    def _tool_names(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("a tool is listed twice")
        return value

    @field_validator("max_output_tokens")
    @classmethod
    def _token_cap(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, int) and not 1 <= value <= 4096:
            raise ValueError("must be between 1 and 4096, or 'inf'")
        return value


def valid_tool_name(name: str) -> bool:
    """Whether ``name`` is acceptable as a function tool name for the Realtime API."""
    return bool(_TOOL_NAME.match(name))
