"""``switchboard emulator``: the OpenAI Realtime API emulator as a service.

Options fall back to the environment (``SWITCHBOARD_EMULATOR_*``; the signing secret
to ``OPENAI_WEBHOOK_SECRET``, the one the ingress verifies with). The secret and the
API key are never printed. With ``--calls-per-second`` it also places simulated calls.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def emulator_command(
    host: Annotated[str, typer.Option(envvar="SWITCHBOARD_EMULATOR_HOST")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="SWITCHBOARD_EMULATOR_PORT", min=0, max=65535)] = 8100,
    webhook_url: Annotated[
        str | None,
        typer.Option(envvar="SWITCHBOARD_EMULATOR_WEBHOOK_URL", help="Where to POST webhooks."),
    ] = None,
    webhook_secret: Annotated[
        str | None,
        typer.Option(
            envvar="OPENAI_WEBHOOK_SECRET",
            show_default=False,
            help="whsec_... signing secret (default: the emulator's built-in one).",
        ),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="SWITCHBOARD_EMULATOR_API_KEY",
            show_default=False,
            help="The only API key accepted (default: any non-empty key).",
        ),
    ] = None,
    calls_per_second: Annotated[
        float | None, typer.Option(min=0.0, help="Place simulated calls at this rate.")
    ] = None,
    duration: Annotated[
        float | None, typer.Option(min=0.0, help="Seconds to place calls for (default: forever).")
    ] = None,
    scenario: Annotated[str, typer.Option(help="Scenario of placed calls, or 'mix'.")] = "mix",
    time_scale: Annotated[
        float, typer.Option(min=0.0, help="Multiplies every scripted pause.")
    ] = 1.0,
    ring_timeout: Annotated[
        float, typer.Option(min=0.0, help="Seconds a caller lets an unanswered call ring.")
    ] = 30.0,
    scenario_dir: Annotated[
        list[Path] | None,
        typer.Option(exists=True, file_okay=False, help="Extra folder of YAML scenarios."),
    ] = None,
) -> None:
    """Run the OpenAI Realtime API emulator, optionally placing simulated calls."""
    import base64
    import binascii

    from pydantic import ValidationError

    from emulator.config import EmulatorConfig
    from emulator.dialer import UnknownScenarioError
    from emulator.serve import serve

    settings: dict[str, object] = {
        "api_key": api_key or None,
        "webhook_url": webhook_url or None,
        "time_scale": time_scale,
        "ring_timeout_s": ring_timeout,
        "scenario_dirs": scenario_dir or [],
    }
    if webhook_secret:
        if webhook_secret.startswith("whsec_"):
            try:
                base64.b64decode(webhook_secret.removeprefix("whsec_"), validate=True)
            except binascii.Error:
                typer.echo(
                    "error: --webhook-secret (OPENAI_WEBHOOK_SECRET): "
                    "the part after whsec_ is not base64",
                    err=True,
                )
                raise typer.Exit(2) from None
        settings["webhook_secret"] = webhook_secret
    try:
        config = EmulatorConfig.model_validate(settings)
        serve(
            config,
            host,
            port,
            calls_per_second=calls_per_second or None,
            duration_s=duration,
            scenario=scenario,
        )
    except ValidationError as exc:
        typer.echo(f"error: invalid emulator setting: {exc.errors()[0]['loc']}", err=True)
        raise typer.Exit(2) from None
    except UnknownScenarioError as exc:
        typer.echo(f"error: unknown scenario {exc.args[0]!r}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        pass
