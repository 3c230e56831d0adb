"""The ``switchboard`` command: one entry point for every service and operator verb."""

from __future__ import annotations

from typing import Annotated

import typer

from switchboard.calls_command import calls_app
from switchboard.config_command import config_app
from switchboard.emulator_command import emulator_command
from switchboard.runner_command import runner_command
from switchboard.runners_command import runners_app
from switchboard.stats_command import stats_command
from switchboard.up_command import up_command
from switchboard.worker_command import worker_command

app = typer.Typer(
    name="switchboard",
    help="Call-center backend for the OpenAI Realtime API over SIP.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def root() -> None:
    """Call-center backend for the OpenAI Realtime API over SIP."""


@app.command("ingress")
def ingress_command(
    host: Annotated[str, typer.Option(envvar="SWITCHBOARD_INGRESS_HOST")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="SWITCHBOARD_INGRESS_PORT", min=0, max=65535)] = 8080,
) -> None:
    """Serve the webhook receiver, health, readiness and metrics (uvicorn)."""
    from ingress.app import serve

    code = serve(host, port)
    if code:
        raise typer.Exit(code)


app.add_typer(config_app, name="config")
app.command("worker")(worker_command)
app.command("runner")(runner_command)
app.command("emulator")(emulator_command)
app.command("up")(up_command)
app.add_typer(calls_app, name="calls")
app.add_typer(runners_app, name="runners")
app.command("stats")(stats_command)


def main() -> None:
    """Console-script entry point."""
    app()
