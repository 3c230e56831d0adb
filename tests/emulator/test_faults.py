"""Injected REST faults: what the SDK sees, and that nothing happened behind them."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from tests.emulator.conftest import SdkFactory
from tests.support.emulator import running_emulator


def test_503_at_rate_one_reaches_the_sdk_after_its_retries(sdk: SdkFactory) -> None:
    with running_emulator() as emu:
        call_id = emu.place_call()
        emu.set_faults(rest_5xx_rate=1.0, retry_after_s=0.01)
        client = sdk(emu, max_retries=1)
        with pytest.raises(openai.InternalServerError) as raised:
            client.realtime.calls.accept(call_id, type="realtime")

        response = raised.value.response
        assert response.status_code == 503
        assert response.headers["retry-after"] == "0.01"
        assert response.headers["retry-after-ms"] == "10"
        assert raised.value.type == "server_error"
        assert emu.call(call_id)["state"] == "ringing"

        emu.set_faults(rest_5xx_rate=0.0)
        client.realtime.calls.accept(call_id, type="realtime")
        assert emu.call(call_id)["state"] == "active"


def test_429_at_rate_one_is_a_rate_limit_error_with_retry_after(sdk: SdkFactory) -> None:
    with running_emulator() as emu:
        call_id = emu.place_call()
        emu.set_faults(rest_429_rate=1.0, retry_after_s=2.0)
        client = sdk(emu)
        with pytest.raises(openai.RateLimitError) as raised:
            client.realtime.calls.reject(call_id)

        assert raised.value.code == "rate_limit_exceeded"
        assert raised.value.response.headers["retry-after"] == "2"
        assert emu.call(call_id)["state"] == "ringing"


def test_latency_delays_each_answer() -> None:
    with running_emulator() as emu:
        emu.set_faults(rest_latency_ms_min=150, rest_latency_ms_max=200)
        started_s = time.monotonic()
        response = httpx.post(
            f"{emu.api_url}/realtime/calls/rtc_unknown/hangup",
            headers={"Authorization": "Bearer k"},
        )
        assert response.status_code == 404
        assert time.monotonic() - started_s >= 0.15


@pytest.mark.parametrize(
    ("patch", "param"),
    [
        ({"rest_5xx_rate": 1.5}, "rest_5xx_rate"),
        ({"rest_429_rate": -0.1}, "rest_429_rate"),
        ({"webhook_delay_ms": "soon"}, "webhook_delay_ms"),
        ({"explode": True}, "explode"),
        ({"rest_latency_ms_min": 50, "rest_latency_ms_max": 10}, "rest_latency_ms_min"),
    ],
)
def test_bad_fault_update_is_400_and_changes_nothing(patch: dict[str, object], param: str) -> None:
    with running_emulator() as emu:
        before = emu.set_faults(webhook_duplicate_rate=0.5)
        response = httpx.post(f"{emu.base_url}/_emulator/faults", json=patch)
        assert response.status_code == 400
        assert response.json()["error"]["param"] == param
        assert httpx.get(f"{emu.base_url}/_emulator/faults").json() == before


def test_fault_update_is_partial() -> None:
    with running_emulator() as emu:
        emu.set_faults(rest_429_rate=0.25)
        current = emu.set_faults(webhook_delay_ms=5)
        assert current["rest_429_rate"] == 0.25
        assert current["webhook_delay_ms"] == 5
