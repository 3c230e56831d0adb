"""The emulator's ``/metrics``: its ground truth and the faults in force."""

from __future__ import annotations

import httpx

from tests.observability.exposition import parse, value
from tests.support.emulator import running_emulator


def test_the_emulator_exports_calls_and_fault_rates() -> None:
    with running_emulator(time_scale=0.05) as emu:
        emu.place_call(scenario="quick-question")
        emu.set_faults(rest_5xx_rate=1.0)
        response = httpx.get(f"{emu.base_url}/metrics", timeout=5.0)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = parse(response.text)
    assert value(samples, "switchboard_emulator_calls_placed_total") == 1
    states = sum(v for (n, _), v in samples.items() if n == "switchboard_emulator_calls")
    assert states == 1
    assert value(samples, "switchboard_emulator_fault_rate", fault="rest_5xx_rate") == 1.0
    assert value(samples, "switchboard_emulator_fault_rate", fault="ws_drop_rate") == 0.0
    assert value(samples, "switchboard_emulator_responses_total") == 0
