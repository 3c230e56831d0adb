"""Call control through the official SDK, unchanged: accept, reject, refer, hangup, create."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.emulator.conftest import SDP_OFFER, SdkFactory
from tests.support.emulator import EmulatorHandle, running_emulator


def test_accept_records_the_body_and_activates_the_call(
    emulator: EmulatorHandle, sdk: SdkFactory
) -> None:
    call_id = emulator.place_call()
    session = {
        "type": "realtime",
        "model": "gpt-realtime",
        "instructions": "Be brief.",
        "audio": {
            "input": {"turn_detection": {"type": "semantic_vad", "eagerness": "high"}},
            "output": {"voice": "marin", "speed": 1.2},
        },
        "tools": [{"type": "function", "name": "lookup_order", "parameters": {"type": "object"}}],
        "max_output_tokens": "inf",
    }
    result = sdk(emulator).realtime.calls.accept(call_id, **session)  # type: ignore[arg-type]

    assert result is None
    truth = emulator.call(call_id)
    assert truth["state"] == "active"
    assert truth["accept"] == session
    assert truth["accepted_at"] is not None
    assert truth["defects"] == []


async def test_async_client_drives_a_call_to_its_end(emulator: EmulatorHandle) -> None:
    client = openai.AsyncOpenAI(base_url=emulator.api_url, api_key=emulator.api_key, max_retries=0)
    accepted, rejected, hung_up = (emulator.place_call() for _ in range(3))

    await client.realtime.calls.accept(accepted, type="realtime")
    await client.realtime.calls.refer(accepted, target_uri="tel:+14155550123")
    await client.realtime.calls.reject(rejected, status_code=486)
    await client.realtime.calls.hangup(hung_up)
    answer = await client.realtime.calls.create(sdp=SDP_OFFER)
    secret = await client.realtime.client_secrets.create(session={"type": "realtime"})
    await client.close()

    assert answer.content.startswith(b"v=0")
    assert secret.value.startswith("ek_")

    referred = emulator.call(accepted)
    assert (referred["state"], referred["ended_by"]) == ("ended", "refer")
    assert referred["refer_target"] == "tel:+14155550123"
    declined = emulator.call(rejected)
    assert (declined["state"], declined["reject_status"]) == ("rejected", 486)
    assert emulator.call(hung_up)["ended_by"] == "hangup"


def test_every_refer_and_hangup_request_is_counted_even_refused(
    emulator: EmulatorHandle, sdk: SdkFactory
) -> None:
    call_id = emulator.place_call()
    client = sdk(emulator)
    client.realtime.calls.accept(call_id, type="realtime")
    client.realtime.calls.refer(call_id, target_uri="tel:+14155550123")
    with pytest.raises(openai.NotFoundError):
        client.realtime.calls.refer(call_id, target_uri="tel:+14155550199")
    with pytest.raises(openai.NotFoundError):
        client.realtime.calls.hangup(call_id)
    truth = emulator.call(call_id)
    assert truth["control_requests"] == ["refer", "refer", "hangup"]
    assert (truth["refer_target"], truth["ended_by"]) == ("tel:+14155550123", "refer")


def test_reject_defaults_to_603(emulator: EmulatorHandle, sdk: SdkFactory) -> None:
    call_id = emulator.place_call()
    sdk(emulator).realtime.calls.reject(call_id)
    assert emulator.call(call_id)["reject_status"] == 603


@pytest.mark.parametrize("status_code", [200, 299, 700, 1000])
def test_reject_status_outside_300_to_699_is_refused(
    emulator: EmulatorHandle, status_code: int, sdk: SdkFactory
) -> None:
    call_id = emulator.place_call()
    with pytest.raises(openai.BadRequestError) as raised:
        sdk(emulator).realtime.calls.reject(call_id, status_code=status_code)
    assert raised.value.param == "status_code"
    assert emulator.call(call_id)["state"] == "ringing"


def test_reject_refuses_unknown_fields(emulator: EmulatorHandle, sdk: SdkFactory) -> None:
    call_id = emulator.place_call()
    with pytest.raises(openai.BadRequestError) as raised:
        sdk(emulator).realtime.calls.reject(call_id, extra_body={"reason": "busy"})
    assert raised.value.param == "reason"


@pytest.mark.parametrize("target", ["https://example.com", "+14155550123", "sip:", ""])
def test_refer_needs_a_sip_or_tel_target(
    emulator: EmulatorHandle, target: str, sdk: SdkFactory
) -> None:
    call_id = emulator.place_call()
    client = sdk(emulator)
    client.realtime.calls.accept(call_id, type="realtime")
    with pytest.raises(openai.BadRequestError) as raised:
        client.realtime.calls.refer(call_id, target_uri=target)
    assert raised.value.param == "target_uri"
    assert emulator.call(call_id)["state"] == "active"


def test_refer_of_a_ringing_call_is_a_conflict(emulator: EmulatorHandle, sdk: SdkFactory) -> None:
    call_id = emulator.place_call()
    with pytest.raises(openai.ConflictError):
        sdk(emulator).realtime.calls.refer(call_id, target_uri="sip:agent@example.com")
    assert emulator.call(call_id)["state"] == "ringing"


def test_a_decided_call_cannot_be_decided_again(emulator: EmulatorHandle, sdk: SdkFactory) -> None:
    """As the real API answers a redelivered webhook's accept: 404, nothing changes."""
    client = sdk(emulator)
    accepted, rejected = emulator.place_call(), emulator.place_call()
    client.realtime.calls.accept(accepted, type="realtime", instructions="first")
    client.realtime.calls.reject(rejected)

    with pytest.raises(openai.NotFoundError) as again:
        client.realtime.calls.accept(accepted, type="realtime", instructions="second")
    assert again.value.code == "call_not_found"
    with pytest.raises(openai.NotFoundError):
        client.realtime.calls.reject(accepted)
    with pytest.raises(openai.NotFoundError) as crossed:
        client.realtime.calls.accept(rejected, type="realtime")
    assert crossed.value.code == "call_not_found"
    with pytest.raises(openai.NotFoundError):
        client.realtime.calls.reject(rejected, status_code=486)

    first, second = emulator.call(accepted), emulator.call(rejected)
    assert (first["state"], first["accept"]["instructions"]) == ("active", "first")
    assert first["repeat_decisions"] == ["accept", "reject"]
    assert (second["state"], second["reject_status"]) == ("rejected", 603)
    assert second["repeat_decisions"] == ["accept", "reject"]


def test_unknown_call_is_404(emulator: EmulatorHandle, sdk: SdkFactory) -> None:
    client = sdk(emulator)
    with pytest.raises(openai.NotFoundError):
        client.realtime.calls.accept("rtc_does_not_exist", type="realtime")
    with pytest.raises(openai.NotFoundError):
        client.realtime.calls.hangup("rtc_does_not_exist")


def test_hangup_ends_a_ringing_call_then_it_is_gone(
    emulator: EmulatorHandle, sdk: SdkFactory
) -> None:
    call_id = emulator.place_call()
    client = sdk(emulator)
    client.realtime.calls.hangup(call_id)
    assert emulator.call(call_id)["ended_by"] == "hangup"
    with pytest.raises(openai.NotFoundError):
        client.realtime.calls.accept(call_id, type="realtime")


def test_accept_after_the_caller_gave_up_is_404(sdk: SdkFactory) -> None:
    with running_emulator(ring_timeout_s=0.2, time_scale=0.05) as emu:
        call_id = emu.place_call("quick-question")
        early = emu.place_call("hang-up-early")
        for gone in (call_id, early):
            truth = emu.wait_for_call(gone, lambda c: c["state"] == "missed", what="ring out")
            assert truth["ended_by"] == "ring_timeout"
            with pytest.raises(openai.NotFoundError):
                sdk(emu).realtime.calls.accept(gone, type="realtime")


def test_hang_up_early_caller_gives_up_before_the_ring_timeout() -> None:
    with running_emulator(ring_timeout_s=30.0, time_scale=0.05) as emu:
        call_id = emu.place_call("hang-up-early")
        emu.wait_for_call(call_id, lambda c: c["state"] == "missed", timeout_s=5.0)


def test_wrong_or_missing_key_is_401(sdk: SdkFactory) -> None:
    with running_emulator(api_key="sk-right") as emu:
        call_id = emu.place_call()
        wrong = sdk(emu, api_key="sk-wrong")
        with pytest.raises(openai.AuthenticationError) as raised:
            wrong.realtime.calls.accept(call_id, type="realtime")
        assert "sk-wrong" not in raised.value.message
        bare = httpx.post(
            f"{emu.api_url}/realtime/calls/{call_id}/accept", json={"type": "realtime"}
        )
        assert bare.status_code == 401
        error = bare.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["code"] == "invalid_api_key"
        assert emu.call(call_id)["state"] == "ringing"
        sdk(emu, api_key="sk-right").realtime.calls.hangup(call_id)


def test_create_answers_sdp_with_the_call_location(
    emulator: EmulatorHandle, sdk: SdkFactory
) -> None:
    client = sdk(emulator)
    raw = client.realtime.calls.with_raw_response.create(sdp=SDP_OFFER)
    assert raw.status_code == 201
    assert raw.headers["content-type"].startswith("application/sdp")
    call_id = raw.headers["location"].rsplit("/", 1)[-1]
    assert raw.headers["location"] == f"/v1/realtime/calls/{call_id}"
    assert raw.http_response.text.startswith("v=0")

    answer = client.realtime.calls.create(
        sdp=SDP_OFFER, session={"type": "realtime", "instructions": "Hello"}
    )
    assert answer.content.startswith(b"v=0")
    states = {c["call_id"]: c["state"] for c in emulator.calls()}
    assert states[call_id] == "active"


def test_create_validates_the_session_part(emulator: EmulatorHandle, sdk: SdkFactory) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        sdk(emulator).realtime.calls.create(
            sdp=SDP_OFFER,
            session={"type": "realtime", "temperature": 0.7},  # type: ignore[typeddict-unknown-key]
        )
    assert raised.value.param == "session.temperature"
