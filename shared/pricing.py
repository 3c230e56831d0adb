"""The versioned price table and the cost of Realtime responses, in exact decimals.

Prices are USD per 1M tokens, by model and billing component (text/audio/image input,
its cached part, text/audio output). The cost of one response is::

    (input_text - cached_text) * text_in + cached_text * text_cached_in
  + (input_audio - cached_audio) * audio_in + cached_audio * audio_cached_in
  + (input_image - cached_image) * image_in + cached_image * image_cached_in
  + output_text * text_out + output_audio * audio_out          (each / 1e6)

All arithmetic is ``decimal.Decimal``: the cost is linear in the token counts, so the
cost of summed counts equals the sum of the costs to the last digit, and totals kept as
integer token counts (``shared.usage.TokenCounts``) can be priced again exactly.

Model lookup (``PriceTable.prices_for``): an exact model name, then an alias, then the
name without a trailing ``-YYYY-MM-DD`` snapshot date (so a new dated snapshot of a
known model is priced as its base model), then ``fallback_model`` if the table sets one.
The default table sets none, so an unknown model raises ``UnknownModelError``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from decimal import Decimal
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.errors import ConfigError
from shared.usage import TokenCounts, UsageError, token_counts

__all__ = [
    "DEFAULT_PRICE_TABLE_VERSION",
    "Cost",
    "ModelPrices",
    "PriceTable",
    "TokenCounts",
    "UnknownModelError",
    "UsageError",
    "cost_of",
    "cost_of_tokens",
    "default_price_table",
    "token_counts",
]

DEFAULT_PRICE_TABLE_VERSION = "2026-11-01"
TOKENS_PER_PRICE_UNIT = Decimal(1_000_000)
_SNAPSHOT_DATE = re.compile(r"-\d{4}-\d{2}-\d{2}$")


class UnknownModelError(ConfigError, ValueError):
    """A model that is neither in the table, nor an alias, nor covered by a fallback."""


class ModelPrices(BaseModel):
    """One model's rates in USD per 1M tokens.

    Image rates are optional: a model without them bills image tokens at its text rates
    (SIP calls carry no images; an operator who sends them should set the real rates).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    text_in_usd_per_mtok: Decimal = Field(ge=0)
    text_cached_in_usd_per_mtok: Decimal = Field(ge=0)
    text_out_usd_per_mtok: Decimal = Field(ge=0)
    audio_in_usd_per_mtok: Decimal = Field(ge=0)
    audio_cached_in_usd_per_mtok: Decimal = Field(ge=0)
    audio_out_usd_per_mtok: Decimal = Field(ge=0)
    image_in_usd_per_mtok: Decimal | None = Field(default=None, ge=0)
    image_cached_in_usd_per_mtok: Decimal | None = Field(default=None, ge=0)

    def cost_of(self, tokens: TokenCounts) -> Cost:
        """The exact cost of ``tokens`` at these rates."""
        image_in = self.image_in_usd_per_mtok
        image_cached = self.image_cached_in_usd_per_mtok
        if image_in is None:
            image_in = self.text_in_usd_per_mtok
        if image_cached is None:
            image_cached = self.text_cached_in_usd_per_mtok
        t = tokens
        return Cost(
            text_in_usd=_usd(t.input_text_tokens - t.cached_text_tokens, self.text_in_usd_per_mtok),
            text_cached_in_usd=_usd(t.cached_text_tokens, self.text_cached_in_usd_per_mtok),
            audio_in_usd=_usd(
                t.input_audio_tokens - t.cached_audio_tokens, self.audio_in_usd_per_mtok
            ),
            audio_cached_in_usd=_usd(t.cached_audio_tokens, self.audio_cached_in_usd_per_mtok),
            image_in_usd=_usd(t.input_image_tokens - t.cached_image_tokens, image_in),
            image_cached_in_usd=_usd(t.cached_image_tokens, image_cached),
            text_out_usd=_usd(t.output_text_tokens, self.text_out_usd_per_mtok),
            audio_out_usd=_usd(t.output_audio_tokens, self.audio_out_usd_per_mtok),
            tokens=tokens,
        )


def _usd(tokens: int, rate_usd_per_mtok: Decimal) -> Decimal:
    return Decimal(tokens) * rate_usd_per_mtok / TOKENS_PER_PRICE_UNIT


class PriceTable(BaseModel):
    """A dated set of model prices with snapshot aliases; embeddable in the policy YAML."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str = Field(min_length=1)
    models: dict[str, ModelPrices]
    aliases: dict[str, str] = Field(default_factory=dict)
    fallback_model: str | None = None

    @model_validator(mode="after")
    def _aliases_resolve(self) -> Self:
        for alias, target in self.aliases.items():
            if alias in self.models:
                raise ValueError(f"alias {alias!r} shadows a priced model")
            if target not in self.models:
                raise ValueError(f"alias {alias!r} points to unpriced model {target!r}")
        if self.fallback_model is not None and self.fallback_model not in self.models:
            raise ValueError(f"fallback_model {self.fallback_model!r} is not priced")
        return self

    def resolve(self, model: str) -> str:
        """The priced model name that ``model`` is billed as (see the module docstring)."""
        if model in self.models:
            return model
        if model in self.aliases:
            return self.aliases[model]
        base = _SNAPSHOT_DATE.sub("", model)
        if base != model and (base in self.models or base in self.aliases):
            return self.resolve(base)
        if self.fallback_model is not None:
            return self.fallback_model
        known = ", ".join(sorted(self.models))
        raise UnknownModelError(
            f"no price for model {model!r} in price table {self.version} (priced: {known})"
        )

    def prices_for(self, model: str) -> ModelPrices:
        return self.models[self.resolve(model)]

    def extended(self, other: PriceTable) -> PriceTable:
        """This table overridden and extended by ``other`` (an operator's overrides)."""
        return PriceTable(
            version=other.version,
            models={**self.models, **other.models},
            aliases={
                **{a: t for a, t in self.aliases.items() if a not in other.models},
                **other.aliases,
            },
            fallback_model=other.fallback_model or self.fallback_model,
        )


@dataclass(frozen=True, slots=True)
class Cost:
    """USD by billing component plus the token counts behind it; costs add."""

    text_in_usd: Decimal = Decimal(0)
    text_cached_in_usd: Decimal = Decimal(0)
    audio_in_usd: Decimal = Decimal(0)
    audio_cached_in_usd: Decimal = Decimal(0)
    image_in_usd: Decimal = Decimal(0)
    image_cached_in_usd: Decimal = Decimal(0)
    text_out_usd: Decimal = Decimal(0)
    audio_out_usd: Decimal = Decimal(0)
    tokens: TokenCounts = field(default_factory=TokenCounts)

    @property
    def total_usd(self) -> Decimal:
        return sum(self.components_usd().values(), Decimal(0))

    def components_usd(self) -> dict[str, Decimal]:
        """USD by component name (``text_in``, ``audio_out``, ...), for metric labels."""
        return {name.removesuffix("_usd"): getattr(self, name) for name in _USD_FIELDS}

    def __add__(self, other: Cost) -> Cost:
        sums = {name: getattr(self, name) + getattr(other, name) for name in _USD_FIELDS}
        return Cost(**sums, tokens=self.tokens + other.tokens)

    def to_json(self) -> dict[str, Any]:
        """JSON-safe form: USD as decimal strings (no float rounding), tokens as ints."""
        data: dict[str, Any] = {name: str(getattr(self, name)) for name in _USD_FIELDS}
        data["total_usd"] = str(self.total_usd)
        data["tokens"] = self.tokens.as_dict()
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Cost:
        """Inverse of ``to_json``; raises ``ValueError`` on a malformed value."""
        try:
            sums = {name: Decimal(str(data.get(name, "0"))) for name in _USD_FIELDS}
        except ArithmeticError as exc:
            raise ValueError(f"malformed cost: {data!r}") from exc
        if not all(value.is_finite() for value in sums.values()):
            raise ValueError(f"malformed cost: {data!r}")
        tokens = data.get("tokens", {})
        if not isinstance(tokens, Mapping):
            raise ValueError(f"malformed cost tokens: {tokens!r}")
        return cls(**sums, tokens=TokenCounts.from_dict(tokens))


_USD_FIELDS = tuple(f.name for f in fields(Cost) if f.name.endswith("_usd"))


def cost_of_tokens(tokens: TokenCounts, model: str, table: PriceTable) -> Cost:
    """The cost of already-flattened token counts; raises ``UnknownModelError``."""
    return table.prices_for(model).cost_of(tokens)


def cost_of(usage: Mapping[str, Any], model: str, table: PriceTable) -> Cost:
    """The cost of one ``response.done`` usage object.

    Raises ``UsageError`` for malformed or inconsistent usage and ``UnknownModelError``
    for a model the table cannot price (both are ``ValueError`` and ``SwitchboardError``).
    """
    return cost_of_tokens(token_counts(usage), model, table)


def _rates(*values: str) -> ModelPrices:
    text_in, text_cached, text_out, audio_in, audio_cached, audio_out = map(Decimal, values)
    return ModelPrices(
        text_in_usd_per_mtok=text_in,
        text_cached_in_usd_per_mtok=text_cached,
        text_out_usd_per_mtok=text_out,
        audio_in_usd_per_mtok=audio_in,
        audio_cached_in_usd_per_mtok=audio_cached,
        audio_out_usd_per_mtok=audio_out,
    )


def default_price_table() -> PriceTable:
    """Published Realtime prices as of ``DEFAULT_PRICE_TABLE_VERSION``."""
    realtime = _rates("4.00", "0.40", "16.00", "32.00", "0.40", "64.00").model_copy(
        update={
            "image_in_usd_per_mtok": Decimal("5.00"),
            "image_cached_in_usd_per_mtok": Decimal("0.50"),
        }
    )
    mini = _rates("0.60", "0.06", "2.40", "10.00", "0.30", "20.00")
    realtime_2 = _rates("4.00", "0.40", "24.00", "32.00", "0.40", "64.00")
    preview = _rates("5.00", "2.50", "20.00", "40.00", "2.50", "80.00")
    return PriceTable(
        version=DEFAULT_PRICE_TABLE_VERSION,
        models={
            "gpt-realtime": realtime,
            "gpt-realtime-1.5": realtime,
            "gpt-realtime-mini": mini,
            "gpt-realtime-2.1-mini": mini,
            "gpt-realtime-2": realtime_2,
            "gpt-realtime-2.1": realtime_2,
            "gpt-4o-realtime-preview": preview,
            # The first preview snapshot billed audio at older, higher rates.
            "gpt-4o-realtime-preview-2024-10-01": _rates(
                "5.00", "2.50", "20.00", "100.00", "20.00", "200.00"
            ),
            "gpt-4o-mini-realtime-preview": _rates(
                "0.60", "0.30", "2.40", "10.00", "0.30", "20.00"
            ),
        },
        aliases={
            "gpt-realtime-2025-08-28": "gpt-realtime",
            "gpt-realtime-mini-2025-10-06": "gpt-realtime-mini",
            "gpt-realtime-mini-2025-12-15": "gpt-realtime-mini",
            "gpt-4o-realtime-preview-2024-12-17": "gpt-4o-realtime-preview",
            "gpt-4o-realtime-preview-2025-06-03": "gpt-4o-realtime-preview",
            "gpt-4o-mini-realtime-preview-2024-12-17": "gpt-4o-mini-realtime-preview",
        },
    )
