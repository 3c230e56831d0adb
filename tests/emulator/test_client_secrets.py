"""``/v1/realtime/client_secrets`` through the SDK, and the ephemeral key it issues."""

from __future__ import annotations

import time

import openai
import pytest

from tests.emulator.conftest import SDP_OFFER, SdkFactory
from tests.support.emulator import EmulatorHandle, running_emulator


def test_realtime_secret_parses_into_sdk_types(emulator: EmulatorHandle, sdk: SdkFactory) -> None:
    secret = sdk(emulator).realtime.client_secrets.create(
        expires_after={"anchor": "created_at", "seconds": 120},
        session={
            "type": "realtime",
            "model": "gpt-realtime",
            "audio": {"output": {"voice": "cedar"}},
        },
    )
    assert secret.value.startswith("ek_")
    assert abs(secret.expires_at - (time.time() + 120)) < 5
    session = secret.session
    assert isinstance(session, openai.types.realtime.RealtimeSessionCreateResponse)
    assert session.id.startswith("sess_")
    assert session.object == "realtime.session"
    assert session.model == "gpt-realtime"
    assert session.audio is not None
    assert session.audio.output is not None
    assert session.audio.output.voice == "cedar"
    assert session.audio.output.speed == 1.0


def test_default_expiry_and_transcription_session(
    emulator: EmulatorHandle, sdk: SdkFactory
) -> None:
    secret = sdk(emulator).realtime.client_secrets.create(
        session={
            "type": "transcription",
            "audio": {"input": {"transcription": {"model": "whisper-1"}}},
        }
    )
    assert abs(secret.expires_at - (time.time() + 600)) < 5
    assert secret.session.type == "transcription"
    assert secret.session.id.startswith("sess_")


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"expires_after": {"anchor": "created_at", "seconds": 5}}, "expires_after.seconds"),
        ({"expires_after": {"anchor": "created_at", "seconds": 7201}}, "expires_after.seconds"),
        ({"expires_after": {"anchor": "now", "seconds": 60}}, "expires_after.anchor"),
        ({"session": {"type": "realtime", "temperature": 1}}, "session.temperature"),
        ({"session": {"model": "gpt-realtime"}}, "session.type"),
        ({"session": {"type": "transcription", "voice": "x"}}, "session.voice"),
    ],
)
def test_bad_request_is_400_naming_the_field(
    emulator: EmulatorHandle, kwargs: dict[str, object], param: str, sdk: SdkFactory
) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        sdk(emulator).realtime.client_secrets.create(**kwargs)  # type: ignore[arg-type]
    assert raised.value.param == param


def test_ephemeral_key_creates_a_webrtc_call_only(sdk: SdkFactory) -> None:
    with running_emulator(api_key="sk-server") as emu:
        server = sdk(emu, api_key="sk-server")
        secret = server.realtime.client_secrets.create()
        browser = sdk(emu, api_key=secret.value)

        answer = browser.realtime.calls.create(sdp=SDP_OFFER)
        assert answer.content.startswith(b"v=0")
        call_id = emu.place_call()
        with pytest.raises(openai.AuthenticationError):
            browser.realtime.calls.accept(call_id, type="realtime")
