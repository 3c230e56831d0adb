"""What every part of one emulator process shares: config, ground truth, faults, scenarios.

The app factory builds one ``EmulatorContext`` and stores it as ``app.state.ctx``; REST
handlers, the sideband endpoint, the webhook sender and the traffic generator all read
it from there. Faults can be changed at run time through ``POST /_emulator/faults``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from emulator.config import EmulatorConfig
from emulator.state import CallRegistry

if TYPE_CHECKING:
    from emulator.scenarios import Scenario


class FaultSettings(BaseModel):
    """Fault injection, all off by default. Rates are probabilities in [0, 1]."""

    model_config = ConfigDict(extra="forbid")

    rest_latency_ms_min: float = Field(default=0.0, ge=0)
    rest_latency_ms_max: float = Field(default=0.0, ge=0)
    """Each REST answer is delayed by a uniform draw from [min, max] milliseconds."""

    rest_5xx_rate: float = Field(default=0.0, ge=0, le=1)
    """Share of REST requests answered 503 (``server_error``) without acting."""

    rest_429_rate: float = Field(default=0.0, ge=0, le=1)
    """Share of REST requests answered 429 (``rate_limit_exceeded``) without acting."""

    retry_after_s: float = Field(default=0.05, ge=0)
    """The ``Retry-After`` header sent with injected 429 and 503 answers."""

    ws_drop_rate: float = Field(default=0.0, ge=0, le=1)
    """Chance, per scripted event sent, that the sideband is dropped (closed with 1011)."""

    webhook_duplicate_rate: float = Field(default=0.0, ge=0, le=1)
    """Share of webhooks delivered twice (same ``webhook-id``)."""

    webhook_delay_ms: float = Field(default=0.0, ge=0)
    """Delay added before each webhook delivery attempt."""

    malformed_event_rate: float = Field(default=0.0, ge=0, le=1)
    """Chance, per scripted event, of also sending a malformed or unknown sideband event."""


@dataclass
class EmulatorContext:
    """The shared state of one emulator process."""

    config: EmulatorConfig
    registry: CallRegistry = field(default_factory=CallRegistry)
    faults: FaultSettings = field(default_factory=FaultSettings)
    scenarios: Mapping[str, Scenario] = field(default_factory=dict)
    rng: random.Random = field(default_factory=random.Random)
    client_secrets: dict[str, float] = field(default_factory=dict)
    """Ephemeral keys issued by ``/v1/realtime/client_secrets``: value -> expires_at (Unix s)."""
