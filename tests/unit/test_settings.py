"""Settings: the sideband websocket base derived from the REST base URL."""

from __future__ import annotations

import pytest

from shared.settings import Settings


@pytest.mark.parametrize(
    ("rest_base", "sideband_base"),
    [
        ("https://api.openai.com/v1", "wss://api.openai.com/v1/realtime"),
        ("http://127.0.0.1:8080/v1", "ws://127.0.0.1:8080/v1/realtime"),
        ("https://gateway.example.com/openai/v1/", "wss://gateway.example.com/openai/v1/realtime"),
        ("http://emulator:9000", "ws://emulator:9000/realtime"),
        # Only the scheme is rewritten: "http" elsewhere in the URL stays as it is.
        ("https://http.example.com/http/v1", "wss://http.example.com/http/v1/realtime"),
    ],
)
def test_the_sideband_base_is_the_rest_base_over_websockets(
    rest_base: str, sideband_base: str
) -> None:
    assert Settings(openai_base_url=rest_base).sideband_base_url == sideband_base


def test_without_a_base_url_the_sideband_is_openais(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert Settings().sideband_base_url == "wss://api.openai.com/v1/realtime"


def test_the_base_url_comes_from_openai_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://localhost:4010/v1")
    assert Settings().sideband_base_url == "ws://localhost:4010/v1/realtime"
