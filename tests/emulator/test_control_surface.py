"""The ``/_emulator`` control surface: placing calls, ground truth, ledger, health."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from emulator.app import create_app
from emulator.config import EmulatorConfig
from tests.emulator.conftest import SdkFactory
from tests.support.emulator import EmulatorHandle


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"to": "+18005550100", "scenario": "quick-question"}, "from"),
        ({"from": "0155", "to": "+18005550100", "scenario": "quick-question"}, "from"),
        ({"from": "+14155550100", "to": "mailto:x", "scenario": "quick-question"}, "to"),
        ({"from": "+14155550100", "to": "+18005550100", "scenario": "no-such"}, "scenario"),
        ({"from": "+14155550100", "to": "+18005550100"}, "scenario"),
        (
            {
                "from": "+14155550100",
                "to": "+18005550100",
                "scenario": "quick-question",
                "sip_headers": [{"name": "Bad Name", "value": "x"}],
            },
            "sip_headers[0].name",
        ),
        (
            {"from": "+14155550100", "to": "+1800555", "scenario": "x", "colour": "red"},
            None,
        ),
    ],
)
def test_bad_place_call_is_400_and_places_nothing(
    emulator: EmulatorHandle, body: dict[str, Any], param: str | None
) -> None:
    before = emulator.ledger()["calls"]
    response = httpx.post(f"{emulator.base_url}/_emulator/calls", json=body)
    assert response.status_code == 400
    if param is not None:
        assert response.json()["error"]["param"] == param
    assert emulator.ledger()["calls"] == before


def test_sip_and_tel_uris_are_accepted_as_parties(emulator: EmulatorHandle) -> None:
    call_id = emulator.place_call(from_="sip:alice@carrier.example", to="tel:+18005550100")
    truth = emulator.call(call_id)
    assert truth["from"] == "sip:alice@carrier.example"
    assert truth["to"] == "tel:+18005550100"


def test_ground_truth_lists_and_ledger(emulator: EmulatorHandle, sdk: SdkFactory) -> None:
    client = sdk(emulator)
    before = emulator.ledger()
    ringing, rejected = emulator.place_call(), emulator.place_call()
    client.realtime.calls.reject(rejected, status_code=486)

    truth = emulator.call(ringing)
    assert truth["state"] == "ringing"
    assert truth["scenario"] == "quick-question"
    assert "events_sent" in truth
    assert "events_sent" not in emulator.call(ringing, events=False)
    states = {c["call_id"]: c["state"] for c in emulator.calls()}
    assert states[ringing] == "ringing"
    assert states[rejected] == "rejected"
    only_rejected = httpx.get(
        f"{emulator.base_url}/_emulator/calls", params={"state": "rejected"}
    ).json()["calls"]
    assert rejected in {c["call_id"] for c in only_rejected}
    assert ringing not in {c["call_id"] for c in only_rejected}

    after = emulator.ledger()
    assert after["calls"] == before["calls"] + 2
    assert after["ended_by"].get("reject", 0) == before["ended_by"].get("reject", 0) + 1


def test_unknown_call_and_path_are_404_in_the_openai_shape(emulator: EmulatorHandle) -> None:
    for url in (f"{emulator.base_url}/_emulator/calls/rtc_nope", f"{emulator.base_url}/nope"):
        response = httpx.get(url)
        assert response.status_code == 404
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_healthz(emulator: EmulatorHandle) -> None:
    assert httpx.get(f"{emulator.base_url}/healthz").json() == {"status": "ok"}


CONTROL_REQUESTS = [
    ("POST", "/_emulator/calls"),
    ("GET", "/_emulator/calls"),
    ("GET", "/_emulator/calls/rtc_any"),
    ("GET", "/_emulator/ledger"),
    ("GET", "/_emulator/faults"),
    ("POST", "/_emulator/faults"),
]


async def test_control_surface_refuses_clients_off_loopback() -> None:
    app = create_app(EmulatorConfig())
    place = {"from": "+14155550100", "to": "+18005550100", "scenario": "quick-question"}
    bodies = {"/_emulator/calls": place, "/_emulator/faults": {"rest_5xx_rate": 1.0}}
    remote = httpx.ASGITransport(app=app, client=("203.0.113.7", 40000))
    local = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    async with (
        httpx.AsyncClient(transport=remote, base_url="http://emulator") as outsider,
        httpx.AsyncClient(transport=local, base_url="http://emulator") as insider,
    ):
        for method, path in CONTROL_REQUESTS:
            refused = await outsider.request(method, path, json=bodies.get(path))
            assert refused.status_code == 403, (method, path)
            assert set(refused.json()["error"]) == {"message", "type", "param", "code"}
            assert "loopback" in refused.json()["error"]["message"]
        assert (await outsider.get("/healthz")).status_code == 200
        assert (await insider.get("/_emulator/ledger")).json()["calls"] == 0
        assert (await insider.get("/_emulator/faults")).json()["rest_5xx_rate"] == 0.0
    assert app.state.ctx.registry.all() == []
