"""``switchboard runner``: a session-runner process on uvloop, configured from the environment.

SIGTERM (or Ctrl-C) drains the runner: it stops taking calls and hands the ones it
holds to other runners, or keeps them until they end (up to ``--drain-grace``); a
second signal stops it at once, leaving its calls to be taken over when their leases
expire. ``--metrics-port`` serves the runner's Prometheus metrics; ``--lag-sample``
sets how often the event loop's lag is sampled into them (benchmarks sample often).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import signal
import socket
from typing import Annotated

import typer

LOG_FORMAT = "%(asctime)s %(levelname)s runner %(name)s: %(message)s"
FULL_GC_EVERY_S = 60.0
"""How often a runner process runs a full garbage collection (``workers.sessions.collector``)."""


def new_runner_id() -> str:
    """A runner id unique across restarts: host, pid and a random suffix.

    Characters a runner id may not hold (``shared.runner_registry``) become ``-``.
    """
    host = re.sub(r"[^A-Za-z0-9_.@+-]", "-", socket.gethostname())[:100] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


def runner_command(
    capacity: Annotated[
        int, typer.Option(min=1, envvar="SWITCHBOARD_RUNNER_CAPACITY", help="Calls held at most.")
    ] = 1000,
    runner_id: Annotated[
        str | None,
        typer.Option("--id", envvar="SWITCHBOARD_RUNNER_ID", help="Runner id (default: unique)."),
    ] = None,
    metrics_port: Annotated[
        int,
        typer.Option(
            min=0, max=65535, envvar="SWITCHBOARD_RUNNER_METRICS_PORT", help="0: no endpoint."
        ),
    ] = 0,
    drain_grace: Annotated[
        float,
        typer.Option(
            min=0.0,
            envvar="SWITCHBOARD_RUNNER_DRAIN_GRACE_S",
            help="Seconds a draining runner keeps calls nobody can take.",
        ),
    ] = 300.0,
    lag_sample: Annotated[
        float,
        typer.Option(
            min=0.001,
            max=60.0,
            envvar="SWITCHBOARD_RUNNER_LAG_SAMPLE_S",
            help="Seconds between two samples of the event loop's lag (its metrics histogram).",
        ),
    ] = 0.25,
    loglevel: Annotated[str, typer.Option("--loglevel", "-l", help="Log level.")] = "info",
) -> None:
    """Run a session runner: hosts the live calls' sideband sessions."""
    from prometheus_client import CollectorRegistry, start_http_server

    from shared.errors import ConfigError, PolicyError
    from shared.policy_file import PolicySource
    from shared.runner_registry import RUNNER_ID_RULE, valid_runner_id
    from shared.settings import Settings
    from workers.sessions.runner import Runner, RunnerConfig
    from workers.sessions.services import open_services

    if runner_id is not None and not valid_runner_id(runner_id):
        raise typer.BadParameter(f"{runner_id!r}: {RUNNER_ID_RULE}", param_hint="--id")
    level = logging.getLevelName(loglevel.upper())
    if not isinstance(level, int):
        raise typer.BadParameter(f"unknown log level {loglevel!r}", param_hint="--loglevel")
    logging.basicConfig(level=level, format=LOG_FORMAT)
    settings = Settings()
    try:
        policies = PolicySource(settings.config)
    except PolicyError as err:
        typer.echo(f"error: invalid policy:\n{err}", err=True)
        raise typer.Exit(1) from None
    config = RunnerConfig(
        capacity=capacity,
        drain_grace_s=drain_grace,
        full_gc_every_s=FULL_GC_EVERY_S,
        loop_lag_every_s=lag_sample,
    )
    registry = CollectorRegistry()
    if metrics_port:
        start_http_server(metrics_port, registry=registry)
    ident = runner_id or new_runner_id()

    async def main() -> None:
        async with open_services(
            settings, ident, config.lease_ttl_s, registry, policies
        ) as services:
            runner = Runner(config, services)
            loop = asyncio.get_running_loop()

            def on_signal() -> None:
                if runner.draining:
                    runner.stop()
                else:
                    runner.drain()

            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, on_signal)
            logging.getLogger(__name__).info("runner %s started, capacity %d", ident, capacity)
            await runner.run()

    try:
        import uvloop

        uvloop.run(main())
    except ConfigError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
