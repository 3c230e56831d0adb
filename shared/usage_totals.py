"""Token totals as Redis hashes hold them, and their exact cost.

Accounting (``shared.accounting``) keeps integer counters in hashes, one field each:

- ``tokens|<model>|<component>``: tokens of one billing component (``TokenCounts``
  field names, e.g. ``input_audio_tokens``) used by one model;
- ``responses|<model>``: responses counted for that model;
- ``calls|<outcome>|<reason>``: call outcomes (``accepted``, ``rejected``, ``ended``
  ...) by reason; only in the cluster and profile hashes;
- ``setup|<upper bound>``: accepted calls whose setup (webhook received -> call
  accepted) took at most that many seconds and more than the bound below it
  (``SETUP_BOUNDS_S``, then ``+Inf``): a histogram, one count per accepted call; only
  in the cluster and profile hashes.

Integers add exactly under ``HINCRBY``, and the cost is linear in them, so pricing the
summed counts gives the sum of the per-response costs to the last digit. USD is never
stored in these hashes: it is derived with a price table when read (``Totals``).

Pure: builds field names and parses hashes, talks to nothing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from decimal import Decimal
from typing import Any

from shared.pricing import Cost, PriceTable, TokenCounts, UnknownModelError, cost_of_tokens

SEP = "|"
COMPONENTS = tuple(f.name for f in fields(TokenCounts))
_LABEL = re.compile(r"^[A-Za-z0-9_.:@/+-]{1,128}$")
_REASON = re.compile(r"^[A-Za-z0-9_.:-]{0,64}$")
_BOUND = re.compile(r"[0-9]+(\.[0-9]+)?|\+Inf")


def check_label(value: object, what: str) -> str:
    """``value`` if it is usable inside a field or key name; ``ValueError`` otherwise."""
    if not isinstance(value, str) or not _LABEL.match(value):
        raise ValueError(f"{what} must be 1-128 letters, digits or _.:@/+- , got {value!r}")
    return value


def token_fields(model: str, tokens: TokenCounts) -> list[tuple[str, int]]:
    """The counters one response adds: its non-zero components and one response."""
    added = [
        (f"tokens{SEP}{model}{SEP}{name}", getattr(tokens, name))
        for name in COMPONENTS
        if getattr(tokens, name)
    ]
    added.append((f"responses{SEP}{model}", 1))
    return added


SETUP_BOUNDS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Upper bounds of the call-setup latency buckets; the SLO bound (0.02) is one of them."""


def setup_field(latency_s: float) -> str:
    """The counter of the setup-latency bucket that ``latency_s`` falls in."""
    for bound in SETUP_BOUNDS_S:
        if latency_s <= bound:
            return f"setup{SEP}{bound!r}"
    return f"setup{SEP}+Inf"


def outcome_field(outcome: str, reason: str | None) -> str:
    """The counter of one call outcome (``ended``) and its reason (``caller_hangup``)."""
    check_label(outcome, "outcome")
    if reason is not None and (not isinstance(reason, str) or not _REASON.match(reason)):
        raise ValueError(f"reason must be up to 64 letters, digits or _.:- , got {reason!r}")
    return f"calls{SEP}{outcome}{SEP}{reason or ''}"


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


@dataclass(frozen=True)
class Totals:
    """Counters of a call, a profile or the cluster, with their exact cost.

    A model the price table cannot price (it was removed since) is listed in
    ``unpriced_models`` and left out of ``cost``; its tokens still count.
    """

    tokens_by_model: Mapping[str, TokenCounts] = field(default_factory=dict)
    responses_by_model: Mapping[str, int] = field(default_factory=dict)
    cost_by_model: Mapping[str, Cost] = field(default_factory=dict)
    outcomes: Mapping[tuple[str, str], int] = field(default_factory=dict)
    """(outcome, reason) -> count; reason ``""`` when none was given."""
    unpriced_models: tuple[str, ...] = ()
    setup_buckets: Mapping[float, int] = field(default_factory=dict)
    """Upper bound (``inf`` last) -> accepted calls whose setup fell in that bucket."""

    @property
    def tokens(self) -> TokenCounts:
        return sum(self.tokens_by_model.values(), TokenCounts())

    @property
    def responses(self) -> int:
        return sum(self.responses_by_model.values())

    @property
    def cost(self) -> Cost:
        return sum(self.cost_by_model.values(), Cost())

    @property
    def cost_usd(self) -> Decimal:
        return self.cost.total_usd

    def outcome_count(self, outcome: str, reason: str | None = None) -> int:
        """Calls with ``outcome``: of one ``reason``, or of every reason when ``None``."""
        if reason is not None:
            return self.outcomes.get((outcome, reason), 0)
        return sum(n for (o, _), n in self.outcomes.items() if o == outcome)

    def setup_histogram(self) -> list[tuple[float, int]]:
        """Cumulative (upper bound, calls) pairs, as a Prometheus histogram reads."""
        running, out = 0, []
        for bound in sorted({*SETUP_BOUNDS_S, math.inf, *self.setup_buckets}):
            running += self.setup_buckets.get(bound, 0)
            out.append((bound, running))
        return out

    def to_json(self) -> dict[str, Any]:
        """JSON-safe form: USD as exact decimal strings, tokens as integers."""
        return {
            "cost_usd": str(self.cost_usd),
            "tokens": self.tokens.as_dict(),
            "responses": self.responses,
            "models": {
                model: {
                    "responses": self.responses_by_model.get(model, 0),
                    "tokens": counts.as_dict(),
                    "cost_usd": (
                        str(self.cost_by_model[model].total_usd)
                        if model in self.cost_by_model
                        else None
                    ),
                }
                for model, counts in sorted(self.tokens_by_model.items())
            },
            "outcomes": {
                f"{outcome}{SEP}{reason}" if reason else outcome: n
                for (outcome, reason), n in sorted(self.outcomes.items())
            },
            "unpriced_models": list(self.unpriced_models),
        }


def totals_from_hash(raw: Mapping[Any, Any], table: PriceTable) -> Totals:
    """Parse HGETALL output of a counters hash; unknown fields are ignored."""
    components: dict[str, dict[str, int]] = {}
    responses: dict[str, int] = {}
    outcomes: dict[tuple[str, str], int] = {}
    setup: dict[float, int] = {}
    for key, value in raw.items():
        name, count = _text(key), int(_text(value))
        kind, _, rest = name.partition(SEP)
        if kind == "tokens":
            model, _, component = rest.rpartition(SEP)
            if component in COMPONENTS and model:
                components.setdefault(model, {})[component] = count
        elif kind == "responses" and rest:
            responses[rest] = count
        elif kind == "calls":
            outcome, _, reason = rest.partition(SEP)
            outcomes[(outcome, reason)] = count
        elif kind == "setup" and _BOUND.fullmatch(rest):
            setup[float(rest)] = count
    tokens = {model: TokenCounts(**counts) for model, counts in components.items()}
    costs: dict[str, Cost] = {}
    unpriced: list[str] = []
    for model, counts in tokens.items():
        try:
            costs[model] = cost_of_tokens(counts, model, table)
        except UnknownModelError:
            unpriced.append(model)
    return Totals(tokens, responses, costs, outcomes, tuple(sorted(unpriced)), setup)
