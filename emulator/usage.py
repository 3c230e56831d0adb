"""Token accounting of the scripted model: what each ``response.done`` reports as usage.

The rules are fixed and deterministic so a test can reconcile Switchboard's cost exactly
against the emulator's ground truth (``EmulatedCall.usage`` is the sum of every usage
block sent):

- Text: every run of letters or digits is one token and so is every other non-space
  character (``"Hi, Ann!"`` is 4 tokens).
- Speech: a spoken text lasts ``words / SPEECH_WORDS_PER_S`` seconds (at least
  ``MIN_SPEECH_S``) unless the scenario gives the seconds. Caller audio costs 10 tokens/s,
  model audio 20 tokens/s (realtime-api.md section 5), rounded half up.
- Input of a response is the whole context: a header (the instructions and the tool
  definitions, as text tokens) followed by every conversation item so far. A user audio
  item counts its audio tokens, a model audio item the audio tokens it cost as output,
  text and function items their text tokens.
- Cached tokens are the entries this response's input shares, from the start, with the
  previous response's input (so changing the instructions or tools busts the cache); the
  text/audio split of that prefix goes to ``cached_tokens_details``.
- Output is the spoken transcript's (or the written text's, or the function call's) text
  tokens, plus the model audio tokens of the speech.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

CALLER_AUDIO_TOKENS_PER_S = 10
MODEL_AUDIO_TOKENS_PER_S = 20
SPEECH_WORDS_PER_S = 2.5
MIN_SPEECH_S = 0.4

_TOKEN = re.compile(r"\w+|[^\w\s]")


def text_tokens(text: str) -> int:
    """Text tokens of ``text`` under the rule in the module docstring."""
    return len(_TOKEN.findall(text))


def speech_s(text: str) -> float:
    """How long speaking ``text`` takes, in seconds."""
    return max(MIN_SPEECH_S, len(text.split()) / SPEECH_WORDS_PER_S)


def caller_audio_tokens(seconds: float) -> int:
    return int(seconds * CALLER_AUDIO_TOKENS_PER_S + 0.5)


def model_audio_tokens(seconds: float) -> int:
    return int(seconds * MODEL_AUDIO_TOKENS_PER_S + 0.5)


@dataclass(frozen=True, slots=True)
class ContextEntry:
    """One piece of a response's input: the header or one conversation item."""

    key: str
    text_tokens: int = 0
    audio_tokens: int = 0


@dataclass(frozen=True, slots=True)
class ResponseUsage:
    """The usage of one response, in the field names of ``state.USAGE_FIELDS``."""

    input_text_tokens: int
    input_audio_tokens: int
    cached_text_tokens: int
    cached_audio_tokens: int
    output_text_tokens: int
    output_audio_tokens: int

    @property
    def input_tokens(self) -> int:
        return self.input_text_tokens + self.input_audio_tokens

    @property
    def output_tokens(self) -> int:
        return self.output_text_tokens + self.output_audio_tokens

    def as_event(self) -> dict[str, object]:
        """The ``response.done.response.usage`` block."""
        return {
            "total_tokens": self.input_tokens + self.output_tokens,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "input_token_details": {
                "text_tokens": self.input_text_tokens,
                "audio_tokens": self.input_audio_tokens,
                "image_tokens": 0,
                "cached_tokens": self.cached_text_tokens + self.cached_audio_tokens,
                "cached_tokens_details": {
                    "text_tokens": self.cached_text_tokens,
                    "audio_tokens": self.cached_audio_tokens,
                    "image_tokens": 0,
                },
            },
            "output_token_details": {
                "text_tokens": self.output_text_tokens,
                "audio_tokens": self.output_audio_tokens,
            },
        }

    def as_ledger(self) -> dict[str, int]:
        """Flat counts for ``EmulatedCall.add_usage``."""
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.input_tokens + self.output_tokens,
            "input_text_tokens": self.input_text_tokens,
            "input_audio_tokens": self.input_audio_tokens,
            "cached_tokens": self.cached_text_tokens + self.cached_audio_tokens,
            "cached_text_tokens": self.cached_text_tokens,
            "cached_audio_tokens": self.cached_audio_tokens,
            "output_text_tokens": self.output_text_tokens,
            "output_audio_tokens": self.output_audio_tokens,
        }


class UsageMeter:
    """Bills responses one after another, remembering the last input for the cache."""

    def __init__(self) -> None:
        self._previous_keys: tuple[str, ...] = ()

    def bill(
        self, context: Sequence[ContextEntry], output_text_tokens: int, output_audio_tokens: int
    ) -> ResponseUsage:
        cached_text = cached_audio = 0
        previous = self._previous_keys
        for index, entry in enumerate(context):
            if index >= len(previous) or previous[index] != entry.key:
                break
            cached_text += entry.text_tokens
            cached_audio += entry.audio_tokens
        self._previous_keys = tuple(entry.key for entry in context)
        return ResponseUsage(
            input_text_tokens=sum(entry.text_tokens for entry in context),
            input_audio_tokens=sum(entry.audio_tokens for entry in context),
            cached_text_tokens=cached_text,
            cached_audio_tokens=cached_audio,
            output_text_tokens=output_text_tokens,
            output_audio_tokens=output_audio_tokens,
        )
