"""The GA Realtime session objects the REST API accepts, validated as strictly as the real one.

Written from the published ``RealtimeSessionCreateRequestGA`` schema (and its
transcription sibling): unknown fields are refused, which catches beta fields such as
``temperature``, ``modalities`` or a top-level ``voice``, and every documented range is
enforced. ``validate_session`` turns the first problem into an ``ApiError`` whose
``param`` names the offending field, e.g. ``audio.output.speed`` or ``tools[0].name``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from emulator.rest import ApiError
from emulator.validation import validate_body

RealtimeModel = Literal[
    "gpt-realtime", "gpt-realtime-1.5", "gpt-realtime-2", "gpt-realtime-2.1",
    "gpt-realtime-2.1-mini", "gpt-realtime-2025-08-28", "gpt-4o-realtime-preview",
    "gpt-4o-realtime-preview-2024-10-01", "gpt-4o-realtime-preview-2024-12-17",
    "gpt-4o-realtime-preview-2025-06-03", "gpt-4o-mini-realtime-preview",
    "gpt-4o-mini-realtime-preview-2024-12-17", "gpt-realtime-mini",
    "gpt-realtime-mini-2025-10-06", "gpt-realtime-mini-2025-12-15", "gpt-audio-1.5",
    "gpt-audio-mini", "gpt-audio-mini-2025-10-06", "gpt-audio-mini-2025-12-15",
]  # fmt: skip
TranscriptionModel = Literal[
    "whisper-1", "gpt-transcribe", "gpt-live-transcribe", "gpt-4o-mini-transcribe",
    "gpt-4o-mini-transcribe-2025-12-15", "gpt-4o-transcribe", "gpt-4o-transcribe-diarize",
    "gpt-realtime-whisper",
]  # fmt: skip
Voice = Literal[
    "alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar"
]  # fmt: skip
Effort = Literal["minimal", "low", "medium", "high", "xhigh"]
Include = Literal["item.input_audio_transcription.logprobs"]

#: Beta-era session fields, with the hint an "Unknown parameter" error gives for each.
BETA_HINTS = {
    name: f"It belongs to the retired beta session; the GA session uses '{moved}'."
    for name, moved in {
        "modalities": "output_modalities",
        "voice": "audio.output.voice",
        "speed": "audio.output.speed",
        "input_audio_format": "audio.input.format",
        "output_audio_format": "audio.output.format",
        "input_audio_transcription": "audio.input.transcription",
        "turn_detection": "audio.input.turn_detection",
        "input_audio_noise_reduction": "audio.input.noise_reduction",
        "max_response_output_tokens": "max_output_tokens",
    }.items()
}
BETA_HINTS["temperature"] = "It belongs to the retired beta session and has no GA equivalent."


class _Schema(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class PcmFormat(_Schema):
    type: Literal["audio/pcm"]
    rate: Literal[24000] = 24000


class PcmuFormat(_Schema):
    type: Literal["audio/pcmu"]


class PcmaFormat(_Schema):
    type: Literal["audio/pcma"]


AudioFormat = Annotated[PcmFormat | PcmuFormat | PcmaFormat, Field(discriminator="type")]


class NoiseReduction(_Schema):
    type: Literal["near_field", "far_field"] | None = None
    strength: Annotated[float, Field(ge=0)] | None = None


class Transcription(_Schema):
    model: TranscriptionModel | None = None
    language: str | None = None
    prompt: str | None = None
    delay: Effort | None = None
    keywords: list[str] | None = None
    languages: list[str] | None = None


class ServerVad(_Schema):
    type: Literal["server_vad"]
    threshold: Annotated[float, Field(ge=0, le=1)] | None = None
    prefix_padding_ms: Annotated[int, Field(ge=0)] | None = None
    silence_duration_ms: Annotated[int, Field(ge=0)] | None = None
    create_response: bool | None = None
    interrupt_response: bool | None = None
    idle_timeout_ms: Annotated[int, Field(ge=5000, le=30000)] | None = None


class SemanticVad(_Schema):
    type: Literal["semantic_vad"]
    eagerness: Literal["low", "medium", "high", "auto"] | None = None
    create_response: bool | None = None
    interrupt_response: bool | None = None


TurnDetection = Annotated[ServerVad | SemanticVad, Field(discriminator="type")]


class AudioInput(_Schema):
    format: AudioFormat | None = None
    noise_reduction: NoiseReduction | None = None
    transcription: Transcription | None = None
    turn_detection: TurnDetection | None = None


class CustomVoice(_Schema):
    id: str


class AudioOutput(_Schema):
    format: AudioFormat | None = None
    voice: Voice | CustomVoice | None = None
    speed: Annotated[float, Field(ge=0.25, le=1.5)] | None = None


class Audio(_Schema):
    input: AudioInput | None = None
    output: AudioOutput | None = None


class FunctionTool(_Schema):
    type: Literal["function"]
    name: Annotated[str, Field(min_length=1, max_length=64)]
    description: str | None = None
    parameters: dict[str, Any] | None = None


class McpTool(_Schema):
    type: Literal["mcp"]
    server_label: str
    server_url: str | None = None
    connector_id: str | None = None
    tunnel_id: str | None = None
    server_description: str | None = None
    authorization: str | None = None
    headers: dict[str, str] | None = None
    allowed_tools: list[str] | dict[str, Any] | None = None
    allowed_callers: list[Literal["direct", "programmatic"]] | None = None
    require_approval: Literal["always", "never"] | dict[str, Any] | None = None
    defer_loading: bool | None = None


Tool = Annotated[FunctionTool | McpTool, Field(discriminator="type")]


class FunctionChoice(_Schema):
    type: Literal["function"]
    name: str


class McpChoice(_Schema):
    type: Literal["mcp"]
    server_label: str
    name: str | None = None


class TokenLimits(_Schema):
    post_instructions: Annotated[int, Field(ge=0)] | None = None


class RetentionRatio(_Schema):
    type: Literal["retention_ratio"]
    retention_ratio: Annotated[float, Field(ge=0, le=1)]
    token_limits: TokenLimits | None = None


class TracingConfig(_Schema):
    workflow_name: str | None = None
    group_id: str | None = None
    metadata: dict[str, Any] | None = None


class Prompt(_Schema):
    id: str
    version: str | None = None
    variables: dict[str, Any] | None = None


class Reasoning(_Schema):
    effort: Effort | None = None


class RealtimeSession(_Schema):
    """``RealtimeSessionCreateRequestGA``: the body of ``/accept`` and a realtime session."""

    type: Literal["realtime"]
    model: RealtimeModel | None = None
    instructions: str | None = None
    output_modalities: list[Literal["text", "audio"]] | None = None
    audio: Audio | None = None
    include: list[Include] | None = None
    tools: list[Tool] | None = None
    tool_choice: (
        Literal["none", "auto", "required"]
        | Annotated[FunctionChoice | McpChoice, Field(discriminator="type")]
        | None
    ) = None
    parallel_tool_calls: bool | None = None
    reasoning: Reasoning | None = None
    max_output_tokens: Annotated[int, Field(ge=1, le=4096)] | Literal["inf"] | None = None
    truncation: Literal["auto", "disabled"] | RetentionRatio | None = None
    tracing: Literal["auto"] | TracingConfig | None = None
    prompt: Prompt | None = None

    @field_validator("output_modalities")
    @classmethod
    def _one_modality(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != 1:
            raise PydanticCustomError(
                "invalid_value",
                "output_modalities must be exactly one of ['audio'] or ['text'].",
            )
        return value


class TranscriptionAudio(_Schema):
    input: AudioInput | None = None


class TranscriptionSession(_Schema):
    """``RealtimeTranscriptionSessionCreateRequest``: a transcription-only session."""

    type: Literal["transcription"]
    audio: TranscriptionAudio | None = None
    include: list[Include] | None = None


def validate_session(data: dict[str, Any], *, param_prefix: str = "") -> RealtimeSession:
    """``data`` as a GA realtime session; problems become a 400 ``ApiError``."""
    return validate_body(RealtimeSession, data, hints=BETA_HINTS, param_prefix=param_prefix)


def validate_session_json(raw: bytes | str, *, param_prefix: str = "") -> dict[str, Any]:
    """A realtime session given as JSON text (a multipart part); returns the parsed object."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ApiError(
            400, "The session is not valid JSON.", param=param_prefix or None, code="invalid_json"
        ) from None
    if not isinstance(data, dict):
        raise ApiError(400, "The session must be a JSON object.", code="invalid_type")
    validate_session(data, param_prefix=param_prefix)
    return data


def sets_audio_format(session: dict[str, Any]) -> list[str]:
    """The ``audio.*.format`` fields a session sets (they garble audio on a SIP call)."""
    audio = session.get("audio") or {}
    return [
        f"audio.{side}.format"
        for side in ("input", "output")
        if isinstance(audio.get(side), dict) and audio[side].get("format") is not None
    ]
