"""The traffic generator and the ``switchboard emulator`` command that runs it."""

from __future__ import annotations

import base64
import random
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import openai
import pytest

from emulator.app import create_app
from emulator.config import EmulatorConfig
from emulator.context import EmulatorContext
from emulator.dialer import Dialer, UnknownScenarioError
from emulator.traffic import MIX_WEIGHTS, TrafficGenerator
from tests.emulator.conftest import SdkFactory, WebhookReceiver
from tests.support.emulator import DEFAULT_SECRET, spawned_emulator
from tests.support.ports import free_port
from tests.support.procs import switchboard_argv, wait_until


@pytest.fixture
async def started() -> AsyncIterator[tuple[Dialer, EmulatorContext]]:
    """A started emulator app (lifespan run, no server): its dialer and context."""
    app = create_app(EmulatorConfig())
    async with app.router.lifespan_context(app):
        yield app.state.dialer, app.state.ctx


async def test_places_rate_times_duration_calls_over_the_mix(
    started: tuple[Dialer, EmulatorContext],
) -> None:
    dialer, ctx = started
    generator = TrafficGenerator(dialer, ctx.scenarios, 2000, duration_s=0.5, rng=random.Random(7))
    placed = await generator.run()

    assert placed == 1000
    calls = ctx.registry.all()
    assert len(calls) == 1000
    assert {c.state for c in calls} == {"ringing"}
    played = {c.scenario for c in calls}
    assert played <= set(MIX_WEIGHTS)
    assert len(played) >= 5
    assert all(c.from_uri.startswith("sip:+1") for c in calls)


async def test_one_named_scenario(started: tuple[Dialer, EmulatorContext]) -> None:
    dialer, ctx = started
    generator = TrafficGenerator(dialer, ctx.scenarios, 100, scenario="dtmf-zero", duration_s=0.1)
    assert await generator.run() == 10
    assert {c.scenario for c in ctx.registry.all()} == {"dtmf-zero"}


async def test_unknown_scenario_or_rate_is_refused(
    started: tuple[Dialer, EmulatorContext],
) -> None:
    dialer, ctx = started
    with pytest.raises(UnknownScenarioError):
        TrafficGenerator(dialer, ctx.scenarios, 10, scenario="no-such")
    with pytest.raises(ValueError, match="calls_per_second"):
        TrafficGenerator(dialer, ctx.scenarios, 0)


def test_command_places_calls_and_sends_their_webhooks(
    tmp_path: Path, receiver: WebhookReceiver, sdk: SdkFactory
) -> None:
    args = [
        "--webhook-url", receiver.url,
        "--calls-per-second", "40",
        "--duration", "0.5",
        "--scenario", "quick-question",
        "--ring-timeout", "60",
    ]  # fmt: skip
    with spawned_emulator(tmp_path, *args, api_key="sk-cli") as emu:
        wait_until(lambda: len(emu.calls()) >= 20, 15.0, "20 placed calls")
        receiver.wait_for(20)
        assert len(emu.calls()) == 20
        client = sdk(emu, api_key="sk-cli")
        event = client.webhooks.unwrap(
            receiver.received[0][0], receiver.received[0][1], secret=emu.webhook_secret
        )
        client.realtime.calls.accept(event.data.call_id, type="realtime")
        assert emu.call(event.data.call_id)["state"] == "active"
        denied = httpx.post(f"{emu.api_url}/realtime/calls/{event.data.call_id}/hangup")
        assert denied.status_code == 401


FLAG_SECRET = "whsec_" + base64.b64encode(b"a secret given on the command line").decode()


def test_command_flags_override_the_environment(
    tmp_path: Path, receiver: WebhookReceiver, sdk: SdkFactory
) -> None:
    args = ["--webhook-url", receiver.url, "--api-key", "sk-flag", "--webhook-secret", FLAG_SECRET]
    with spawned_emulator(tmp_path, *args, api_key="sk-env") as emu:
        assert emu.webhook_secret == DEFAULT_SECRET  # what the environment says
        call_id = emu.place_call()
        [(body, headers)] = receiver.wait_for(1)
        client = sdk(emu, api_key="sk-flag")
        event = client.webhooks.unwrap(body, headers, secret=FLAG_SECRET)
        assert event.data.call_id == call_id
        with pytest.raises(openai.InvalidWebhookSignatureError):
            client.webhooks.unwrap(body, headers, secret=DEFAULT_SECRET)
        client.realtime.calls.accept(call_id, type="realtime")
        other_key = {"Authorization": "Bearer sk-env"}
        denied = httpx.post(f"{emu.api_url}/realtime/calls/{call_id}/hangup", headers=other_key)
        assert emu.call(call_id)["state"] == "active"
    assert denied.status_code == 401
    error = denied.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_api_key")
    assert "sk-env" not in denied.text


def run_command(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        switchboard_argv("emulator", "--port", str(free_port()), *argv),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_command_refuses_an_unknown_scenario() -> None:
    result = run_command("--calls-per-second", "1", "--scenario", "no-such")
    assert result.returncode == 2
    assert "no-such" in result.stderr


def test_command_refuses_a_secret_that_is_not_base64() -> None:
    secret = "whsec_not*base64*at-all"
    result = run_command("--webhook-secret", secret)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: --webhook-secret (OPENAI_WEBHOOK_SECRET): the part after whsec_ is not base64"
    ]
    assert "not*base64" not in result.stdout + result.stderr
