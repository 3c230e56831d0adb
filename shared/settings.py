"""Process settings, read once per entry point from the environment and passed down.

Tests build ``Settings(...)`` directly instead of touching the environment.
Secrets are ``SecretStr`` so that they never render in logs, reprs or errors.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"


class Settings(BaseSettings):
    """Everything a Switchboard process needs to know about its surroundings."""

    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_", extra="ignore")

    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_API_KEY", "openai_api_key")
    )
    openai_base_url: str = Field(
        default=DEFAULT_OPENAI_BASE_URL,
        validation_alias=AliasChoices("OPENAI_BASE_URL", "openai_base_url"),
    )
    openai_webhook_secret: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("OPENAI_WEBHOOK_SECRET", "openai_webhook_secret"),
    )
    redis_url: str | None = None
    config: Path | None = None
    admin_token: SecretStr | None = None
    post_call_webhook_url: str | None = None
    """Where ``call.completed`` webhooks go unless the policy names a ``post_call_webhook``."""
    post_call_webhook_secret: SecretStr | None = None
    """The ``whsec_...`` secret those webhooks are signed with."""

    @property
    def sideband_base_url(self) -> str:
        """The websocket base derived from the REST base: https->wss, + ``/realtime``."""
        base = self.openai_base_url.rstrip("/")
        if base.startswith("https://"):
            base = "wss://" + base[len("https://") :]
        elif base.startswith("http://"):
            base = "ws://" + base[len("http://") :]
        return base + "/realtime"
