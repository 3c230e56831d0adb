"""Emulator configuration: one value object, named defaults, built by the CLI or by tests."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field


class EmulatorConfig(BaseModel):
    """How the emulator behaves; every field has a default that suits a local demo."""

    api_key: str | None = None
    """The bearer key REST and websocket clients must send; ``None`` accepts any non-empty key."""

    webhook_url: str | None = None
    """Where ``realtime.call.incoming`` webhooks go; ``None`` sends none."""

    webhook_secret: str = "whsec_" + "ZW11bGF0b3Itd2ViaG9vay1zZWNyZXQtMzJieXRlcyE="
    """Standard Webhooks signing secret (``whsec_`` + base64 key)."""

    webhook_retry_schedule_s: list[float] = Field(default_factory=lambda: [1.0, 5.0, 30.0, 120.0])
    """Delays between delivery attempts after a non-2xx answer or a timeout."""

    webhook_timeout_s: float = 5.0
    ring_timeout_s: float = 30.0
    """How long a caller lets the call ring before giving up (accept then gets 404)."""

    dead_air_timeout_s: float = 30.0
    """How long a caller stays on an answered call with no sideband attached."""

    time_scale: float = 1.0
    """Multiplies every scripted pause; tests use a small value to run calls quickly."""

    scenario_dirs: list[Path] = Field(default_factory=list)
    """Extra folders of YAML scenarios, added to the built-in ones."""

    sip_domain: str = "sip.example.com"
