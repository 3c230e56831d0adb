"""The price table and exact response costs: tables of usage against costs worked by hand."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.errors import ConfigError, SwitchboardError
from shared.pricing import (
    Cost,
    ModelPrices,
    PriceTable,
    UnknownModelError,
    cost_of,
    cost_of_tokens,
    default_price_table,
)
from shared.usage import TokenCounts, UsageError, token_counts

TABLE = default_price_table()


def usage(
    *,
    text: int = 0,
    audio: int = 0,
    image: int = 0,
    cached_text: int = 0,
    cached_audio: int = 0,
    cached_image: int = 0,
    out_text: int = 0,
    out_audio: int = 0,
) -> dict[str, Any]:
    """A GA usage object, consistent by construction."""
    cached = cached_text + cached_audio + cached_image
    return {
        "total_tokens": text + audio + image + out_text + out_audio,
        "input_tokens": text + audio + image,
        "output_tokens": out_text + out_audio,
        "input_token_details": {
            "text_tokens": text,
            "audio_tokens": audio,
            "image_tokens": image,
            "cached_tokens": cached,
            "cached_tokens_details": {
                "text_tokens": cached_text,
                "audio_tokens": cached_audio,
                "image_tokens": cached_image,
            },
        },
        "output_token_details": {"text_tokens": out_text, "audio_tokens": out_audio},
    }


@pytest.mark.parametrize(
    ("model", "usage_", "expected_usd"),
    [
        # 1,000 uncached audio tokens at $32/M.
        ("gpt-realtime", usage(audio=1000), "0.032"),
        # 100*4 + 100*0.40 + 600*32 + 200*0.40 + 100*16 + 400*64 = 46,920 micro-USD.
        (
            "gpt-realtime",
            usage(
                text=200, audio=800, cached_text=100, cached_audio=200, out_text=100, out_audio=400
            ),
            "0.04692",
        ),
        # Mini: 500*0.60 + 500*0.06 + 1000*20 = 20,330 micro-USD.
        ("gpt-realtime-mini", usage(text=1000, cached_text=500, out_audio=1000), "0.02033"),
        # One minute each way on the preview: 600*40 + 1200*80.
        ("gpt-4o-realtime-preview", usage(audio=600, out_audio=1200), "0.12"),
        # gpt-realtime-2 bills text out at $24/M.
        ("gpt-realtime-2", usage(out_text=1000), "0.024"),
        ("gpt-realtime-2.1", usage(out_text=1000), "0.024"),
        ("gpt-realtime", usage(out_text=1000), "0.016"),
        ("gpt-4o-mini-realtime-preview", usage(text=1000, cached_text=1000), "0.0003"),
        # The first preview snapshot has its own audio rates: 1000*100 + 1000*20.
        ("gpt-4o-realtime-preview-2024-10-01", usage(audio=2000, cached_audio=1000), "0.12"),
        # Images: gpt-realtime has image rates; mini falls back to its text rates.
        ("gpt-realtime", usage(image=1000, cached_image=500), "0.00275"),
        ("gpt-realtime-mini", usage(image=1000), "0.0006"),
        ("gpt-realtime", {}, "0"),
        # Totals without details: the remainder is billed as text (1000*4 + 100*16).
        ("gpt-realtime", {"input_tokens": 1000, "output_tokens": 100}, "0.0056"),
        # Details may be null (optional in the SDK) and sections may be missing.
        (
            "gpt-realtime",
            {"input_token_details": {"audio_tokens": 10, "text_tokens": None}},
            "0.00032",
        ),
        # cached_tokens without its split is billed at the uncached rate.
        (
            "gpt-realtime",
            {"input_token_details": {"audio_tokens": 1000, "cached_tokens": 1000}},
            "0.032",
        ),
        # A section that is not an object counts as empty.
        ("gpt-realtime", {"input_token_details": "n/a", "output_token_details": []}, "0"),
    ],
)
def test_cost_of_usage(model: str, usage_: dict[str, Any], expected_usd: str) -> None:
    assert cost_of(usage_, model, TABLE).total_usd == Decimal(expected_usd)


def test_cost_carries_components_and_tokens() -> None:
    u = usage(text=200, audio=800, cached_text=100, cached_audio=200, out_text=100, out_audio=400)
    cost = cost_of(u, "gpt-realtime", TABLE)
    assert cost.components_usd() == {
        "text_in": Decimal("0.0004"),
        "text_cached_in": Decimal("0.00004"),
        "audio_in": Decimal("0.0192"),
        "audio_cached_in": Decimal("0.00008"),
        "image_in": Decimal(0),
        "image_cached_in": Decimal(0),
        "text_out": Decimal("0.0016"),
        "audio_out": Decimal("0.0256"),
    }
    assert cost.tokens.as_dict() == {
        "input_text_tokens": 200,
        "input_audio_tokens": 800,
        "input_image_tokens": 0,
        "cached_text_tokens": 100,
        "cached_audio_tokens": 200,
        "cached_image_tokens": 0,
        "output_text_tokens": 100,
        "output_audio_tokens": 400,
        "input_tokens": 1000,
        "cached_tokens": 300,
        "output_tokens": 500,
        "total_tokens": 1500,
    }


@pytest.mark.parametrize(
    ("model", "billed_as"),
    [
        ("gpt-realtime", "gpt-realtime"),
        ("gpt-realtime-2025-08-28", "gpt-realtime"),
        ("gpt-realtime-mini-2025-10-06", "gpt-realtime-mini"),
        ("gpt-realtime-mini-2025-12-15", "gpt-realtime-mini"),
        ("gpt-4o-realtime-preview-2024-12-17", "gpt-4o-realtime-preview"),
        ("gpt-4o-realtime-preview-2025-06-03", "gpt-4o-realtime-preview"),
        ("gpt-4o-realtime-preview-2024-10-01", "gpt-4o-realtime-preview-2024-10-01"),
        ("gpt-4o-mini-realtime-preview-2024-12-17", "gpt-4o-mini-realtime-preview"),
        # A snapshot date the table has not heard of still finds its base model.
        ("gpt-realtime-2.1-2027-02-01", "gpt-realtime-2.1"),
        ("gpt-realtime-1.5", "gpt-realtime-1.5"),
    ],
)
def test_snapshot_names_resolve_to_their_base_model(model: str, billed_as: str) -> None:
    assert TABLE.resolve(model) == billed_as


@pytest.mark.parametrize("model", ["gpt-5", "gpt-audio-mini", "", "gpt-realtime-", "2025-08-28"])
def test_unknown_model_is_a_clear_config_error(model: str) -> None:
    with pytest.raises(UnknownModelError, match="no price for model") as caught:
        cost_of(usage(text=1), model, TABLE)
    assert isinstance(caught.value, ConfigError)
    assert "gpt-realtime-mini" in str(caught.value)


def test_fallback_model_prices_unknown_models() -> None:
    table = TABLE.model_copy(update={"fallback_model": "gpt-realtime"})
    assert cost_of(usage(audio=1000), "gpt-9-realtime", table).total_usd == Decimal("0.032")


@pytest.mark.parametrize(
    ("bad_usage", "message"),
    [
        ({"input_tokens": -1}, "non-negative integer"),
        ({"output_tokens": True}, "non-negative integer"),
        ({"input_token_details": {"audio_tokens": 1.5}}, "non-negative integer"),
        ({"output_token_details": {"text_tokens": "12"}}, "non-negative integer"),
        (usage(text=10, cached_text=11), "cached text tokens"),
        (
            {
                "input_token_details": {
                    "audio_tokens": 5,
                    "cached_tokens_details": {"audio_tokens": 6},
                }
            },
            "cached audio tokens",
        ),
        ({"input_tokens": 5, "input_token_details": {"audio_tokens": 6}}, "less than the sum"),
        ({"output_tokens": 1, "output_token_details": {"audio_tokens": 2}}, "less than the sum"),
        (
            {
                "input_token_details": {
                    "text_tokens": 5,
                    "cached_tokens": 1,
                    "cached_tokens_details": {"text_tokens": 2},
                }
            },
            "less than the sum",
        ),
        ([1, 2], "must be an object"),
    ],
)
def test_inconsistent_usage_is_refused_not_clamped(bad_usage: Any, message: str) -> None:
    with pytest.raises(UsageError, match=message) as caught:
        cost_of(bad_usage, "gpt-realtime", TABLE)
    assert isinstance(caught.value, SwitchboardError)
    assert isinstance(caught.value, ValueError)


def test_costs_add_by_component_and_tokens() -> None:
    a = cost_of(usage(text=100, out_audio=10), "gpt-realtime", TABLE)
    b = cost_of(usage(audio=50, cached_audio=20), "gpt-realtime-mini", TABLE)
    total = a + b
    assert total.total_usd == a.total_usd + b.total_usd
    assert total.text_in_usd == a.text_in_usd
    assert total.audio_cached_in_usd == b.audio_cached_in_usd
    assert total.tokens == TokenCounts(
        input_text_tokens=100, input_audio_tokens=50, cached_audio_tokens=20, output_audio_tokens=10
    )
    assert Cost() + a == a


def test_cost_json_round_trip_is_exact() -> None:
    cost = cost_of(usage(text=3, audio=7, cached_audio=1, out_audio=11), "gpt-realtime", TABLE)
    data = cost.to_json()
    assert Decimal(data["total_usd"]) == Decimal("0.0009084")
    assert Cost.from_json(data) == cost


@pytest.mark.parametrize(
    "bad",
    [
        {"text_in_usd": "lots"},
        {"audio_out_usd": "NaN"},
        {"tokens": [1]},
        {"tokens": {"output_text_tokens": -1}},
    ],
)
def test_malformed_cost_json_raises(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"malformed|non-negative"):
        Cost.from_json(bad)


_counts = st.builds(
    lambda text, audio, image, ct, ca, ci, ot, oa: TokenCounts(
        input_text_tokens=text,
        input_audio_tokens=audio,
        input_image_tokens=image,
        cached_text_tokens=min(ct, text),
        cached_audio_tokens=min(ca, audio),
        cached_image_tokens=min(ci, image),
        output_text_tokens=ot,
        output_audio_tokens=oa,
    ),
    *[st.integers(0, 10**7)] * 8,
)


@given(st.lists(_counts, max_size=30), st.sampled_from(sorted(TABLE.models)))
def test_pricing_summed_tokens_equals_summed_costs(counts: list[TokenCounts], model: str) -> None:
    """Totals kept as integer tokens (in Redis) price to exactly the accrued cost."""
    accrued = sum((cost_of_tokens(c, model, TABLE) for c in counts), Cost())
    summed = sum(counts, TokenCounts())
    assert cost_of_tokens(summed, model, TABLE) == accrued
    assert TokenCounts.from_dict(summed.as_dict()) == summed


@given(_counts)
def test_flattened_usage_round_trips(counts: TokenCounts) -> None:
    u = usage(
        text=counts.input_text_tokens,
        audio=counts.input_audio_tokens,
        image=counts.input_image_tokens,
        cached_text=counts.cached_text_tokens,
        cached_audio=counts.cached_audio_tokens,
        cached_image=counts.cached_image_tokens,
        out_text=counts.output_text_tokens,
        out_audio=counts.output_audio_tokens,
    )
    assert token_counts(u) == counts


def test_price_table_loads_from_policy_yaml_values() -> None:
    """Operators write floats and strings in YAML; both become exact decimals."""
    table = PriceTable.model_validate(
        {
            "version": "2027-01-01",
            "models": {
                "house-model": {
                    "text_in_usd_per_mtok": 0.4,
                    "text_cached_in_usd_per_mtok": "0.04",
                    "text_out_usd_per_mtok": 1,
                    "audio_in_usd_per_mtok": 2,
                    "audio_cached_in_usd_per_mtok": 0.1,
                    "audio_out_usd_per_mtok": 3,
                }
            },
            "aliases": {"house-model-latest": "house-model"},
        }
    )
    assert table.prices_for("house-model-latest").text_in_usd_per_mtok == Decimal("0.4")
    assert cost_of(usage(text=10**6), "house-model", table).total_usd == Decimal("0.4")
    assert PriceTable.model_validate_json(TABLE.model_dump_json()) == TABLE


_PRICES = {
    "text_in_usd_per_mtok": 1,
    "text_cached_in_usd_per_mtok": 1,
    "text_out_usd_per_mtok": 1,
    "audio_in_usd_per_mtok": 1,
    "audio_cached_in_usd_per_mtok": 1,
    "audio_out_usd_per_mtok": 1,
}


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"version": "v", "models": {"m": _PRICES}, "aliases": {"a": "nope"}}, "unpriced model"),
        ({"version": "v", "models": {"m": _PRICES}, "aliases": {"m": "m"}}, "shadows"),
        ({"version": "v", "models": {"m": _PRICES}, "fallback_model": "x"}, "fallback_model"),
        ({"version": "", "models": {}}, "version"),
        ({"version": "v", "models": {"m": {**_PRICES, "audio_out_usd_per_mtok": -1}}}, "greater"),
        ({"version": "v", "models": {"m": {**_PRICES, "video_usd": 1}}}, "video_usd"),
    ],
)
def test_invalid_price_tables_are_refused(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        PriceTable.model_validate(table)


def test_operator_table_overrides_and_extends_the_default() -> None:
    override = PriceTable(
        version="2027-01-01",
        models={
            "gpt-realtime": ModelPrices.model_validate({**_PRICES, "text_in_usd_per_mtok": 9}),
            # A snapshot priced on its own no longer follows its alias.
            "gpt-realtime-2025-08-28": ModelPrices.model_validate(_PRICES),
        },
    )
    merged = TABLE.extended(override)
    assert merged.version == "2027-01-01"
    assert merged.prices_for("gpt-realtime").text_in_usd_per_mtok == Decimal(9)
    assert merged.prices_for("gpt-realtime-2025-08-28").audio_in_usd_per_mtok == Decimal(1)
    assert merged.prices_for("gpt-realtime-mini-2025-12-15") == TABLE.prices_for(
        "gpt-realtime-mini"
    )
