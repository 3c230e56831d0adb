"""Token usage of Realtime responses, flattened into integer counts by component.

A ``response.done`` event reports usage as a nested dict (GA shape)::

    {input_tokens, output_tokens, total_tokens,
     input_token_details: {text_tokens, audio_tokens, image_tokens, cached_tokens,
                           cached_tokens_details: {text_tokens, audio_tokens, image_tokens}},
     output_token_details: {text_tokens, audio_tokens}}

``token_counts`` turns it into a ``TokenCounts`` of eight plain integers, which add
exactly, can be kept as Redis hash fields and priced again later with the same result.

Reading rules (every field is optional in the API):

- a missing field or ``null`` counts as 0; a section that is not an object is empty;
- a count that is not a non-negative integer raises ``UsageError``;
- the modality details are authoritative; when ``input_tokens``/``output_tokens`` exceed
  the sum of their details, the unattributed remainder is counted as text;
- ``cached_tokens`` beyond the sum of its per-modality details is billed as uncached
  input (the split is unknown, so the full rate is the safe choice);
- inconsistent usage raises ``UsageError`` rather than being clamped: a total smaller
  than its details, or more cached tokens of a modality than input tokens of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import astuple, dataclass, fields
from typing import Any

from shared.errors import FatalError


class UsageError(FatalError, ValueError):
    """A usage object whose counts are malformed or contradict each other."""


@dataclass(frozen=True, slots=True)
class TokenCounts:
    """Token counts by billing component; ``cached_*`` are subsets of ``input_*``."""

    input_text_tokens: int = 0
    input_audio_tokens: int = 0
    input_image_tokens: int = 0
    cached_text_tokens: int = 0
    cached_audio_tokens: int = 0
    cached_image_tokens: int = 0
    output_text_tokens: int = 0
    output_audio_tokens: int = 0

    def __post_init__(self) -> None:
        for name, value in zip(_FIELD_NAMES, astuple(self), strict=True):
            if type(value) is not int or value < 0:
                raise UsageError(f"{name} must be a non-negative integer, got {value!r}")
        for modality in ("text", "audio", "image"):
            cached = getattr(self, f"cached_{modality}_tokens")
            total = getattr(self, f"input_{modality}_tokens")
            if cached > total:
                raise UsageError(
                    f"cached {modality} tokens ({cached}) exceed input {modality} tokens ({total})"
                )

    @property
    def input_tokens(self) -> int:
        return self.input_text_tokens + self.input_audio_tokens + self.input_image_tokens

    @property
    def cached_tokens(self) -> int:
        return self.cached_text_tokens + self.cached_audio_tokens + self.cached_image_tokens

    @property
    def output_tokens(self) -> int:
        return self.output_text_tokens + self.output_audio_tokens

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: TokenCounts) -> TokenCounts:
        return TokenCounts(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))

    def as_dict(self) -> dict[str, int]:
        """Component counts plus the derived totals, under the names the emulator uses."""
        counts = dict(zip(_FIELD_NAMES, astuple(self), strict=True))
        counts["input_tokens"] = self.input_tokens
        counts["cached_tokens"] = self.cached_tokens
        counts["output_tokens"] = self.output_tokens
        counts["total_tokens"] = self.total_tokens
        return counts

    @classmethod
    def from_dict(cls, counts: Mapping[str, Any]) -> TokenCounts:
        """Inverse of ``as_dict`` (derived totals are ignored, missing components are 0)."""
        return cls(**{name: counts.get(name, 0) for name in _FIELD_NAMES})


_FIELD_NAMES = tuple(f.name for f in fields(TokenCounts))


def token_counts(usage: Mapping[str, Any]) -> TokenCounts:
    """Flatten a ``response.done.response.usage`` object; see the module docstring."""
    if not isinstance(usage, Mapping):
        raise UsageError(f"usage must be an object, got {type(usage).__name__}")
    inputs = _section(usage, "input_token_details")
    cached = _section(inputs, "cached_tokens_details")
    outputs = _section(usage, "output_token_details")

    in_text, in_audio, in_image = (_count(inputs, k) for k in _MODALITY_KEYS)
    in_text += _remainder(usage, "input_tokens", in_text + in_audio + in_image)
    cached_text, cached_audio, cached_image = (_count(cached, k) for k in _MODALITY_KEYS)
    # Checked for consistency only: the unsplit excess is billed at the uncached rate.
    _remainder(inputs, "cached_tokens", cached_text + cached_audio + cached_image)
    out_text, out_audio = _count(outputs, "text_tokens"), _count(outputs, "audio_tokens")
    out_text += _remainder(usage, "output_tokens", out_text + out_audio)

    return TokenCounts(
        input_text_tokens=in_text,
        input_audio_tokens=in_audio,
        input_image_tokens=in_image,
        cached_text_tokens=cached_text,
        cached_audio_tokens=cached_audio,
        cached_image_tokens=cached_image,
        output_text_tokens=out_text,
        output_audio_tokens=out_audio,
    )


_MODALITY_KEYS = ("text_tokens", "audio_tokens", "image_tokens")


def _section(parent: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = parent.get(key)
    return value if isinstance(value, Mapping) else {}


def _count(section: Mapping[str, Any], key: str) -> int:
    value = section.get(key)
    if value is None:
        return 0
    # bool is an int subclass; a JSON true is not a token count.
    if type(value) is not int or value < 0:
        raise UsageError(f"{key} must be a non-negative integer, got {value!r}")
    return value


def _remainder(section: Mapping[str, Any], key: str, detailed: int) -> int:
    """How far the reported total ``key`` exceeds the sum of its details (0 if absent)."""
    if section.get(key) is None:
        return 0
    total = _count(section, key)
    if total < detailed:
        raise UsageError(f"{key} ({total}) is less than the sum of its details ({detailed})")
    return total - detailed
