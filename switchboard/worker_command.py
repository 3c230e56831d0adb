"""``switchboard worker``: a Celery worker for call-control work on the configured Redis.

Configuration comes from the environment (``shared.settings``). The policy is loaded
once before the worker starts, so a broken ``SWITCHBOARD_CONFIG`` stops it at once
with the error's location instead of failing on the first call. ``--metrics-port``
serves the Prometheus metrics of every pool process (``workers.worker_metrics``; the
values are kept in ``PROMETHEUS_MULTIPROC_DIR`` if set, else in a private folder).
A worker on the control queue also runs the recovery loop (``workers.recovery``)
every ``--recovery-every`` seconds.

By default the Celery worker runs as a child process that is restarted whenever it
exits without being asked to (``switchboard.worker_restart``); ``--no-restart`` runs
it in this process instead (for a container whose orchestrator restarts it).

``--pool threads`` runs the tasks on threads of one process instead of forked
processes: call-control tasks mostly wait on Redis and the REST API, and one process
spends less CPU per task than a parent feeding children through pipes (measured by
``bench/call_setup.py``). Threads cannot be killed, so the time limits are not
enforced there; the tools queue, whose blocking functions rely on them, refuses it.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from shared.queues import ALL_QUEUES, COMMANDS_QUEUE, CONTROL_QUEUE, TOOLS_QUEUE

LOG_FORMAT = "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"
POOLS = ("prefork", "threads")


def worker_command(
    queues: Annotated[
        str, typer.Option("--queues", "-Q", help="Comma-separated queues to consume.")
    ] = ",".join(ALL_QUEUES),
    concurrency: Annotated[
        int | None,
        typer.Option(
            "--concurrency", "-c", min=1, help="Worker processes or threads (default: CPUs)."
        ),
    ] = None,
    pool: Annotated[
        str,
        typer.Option(
            "--pool",
            "-P",
            envvar="SWITCHBOARD_WORKER_POOL",
            help=f"Task pool: {' or '.join(POOLS)} (threads: not for the tools queue).",
        ),
    ] = "prefork",
    loglevel: Annotated[str, typer.Option("--loglevel", "-l", help="Log level.")] = "info",
    metrics_port: Annotated[
        int,
        typer.Option(
            min=0,
            max=65535,
            envvar="SWITCHBOARD_WORKER_METRICS_PORT",
            help="Serve Prometheus metrics of all pool processes on this port (0: none).",
        ),
    ] = 0,
    recovery_every: Annotated[
        float,
        typer.Option(
            min=0.0,
            envvar="SWITCHBOARD_RECOVERY_EVERY_S",
            help="Seconds between recovery sweeps of cut-off call routings (0: none).",
        ),
    ] = 1.0,
    restart: Annotated[
        bool,
        typer.Option(
            envvar="SWITCHBOARD_WORKER_RESTART",
            help="Restart the Celery worker when it exits on its own (backoff up to 30 s).",
        ),
    ] = True,
) -> None:
    """Run a Celery worker for call control, commands, tools and post-call work."""
    from shared.errors import PolicyError
    from shared.policy_file import PolicySource
    from shared.settings import Settings

    chosen = [name.strip() for name in queues.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(ALL_QUEUES))
    if not chosen or unknown:
        raise typer.BadParameter(
            f"unknown queue(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(ALL_QUEUES)}",
            param_hint="--queues",
        )
    if pool not in POOLS:
        raise typer.BadParameter(f"choose {' or '.join(POOLS)}", param_hint="--pool")
    if pool == "threads" and TOOLS_QUEUE in chosen:
        raise typer.BadParameter(
            "the tools queue needs the prefork pool (its time limits stop blocking tools)",
            param_hint="--pool",
        )
    level = logging.getLevelName(loglevel.upper())
    if not isinstance(level, int):
        raise typer.BadParameter(f"unknown log level {loglevel!r}", param_hint="--loglevel")
    settings = Settings()
    if not settings.redis_url:
        typer.echo("error: SWITCHBOARD_REDIS_URL is not set", err=True)
        raise typer.Exit(1)
    calling = [name for name in (CONTROL_QUEUE, COMMANDS_QUEUE) if name in chosen]
    if calling and settings.openai_api_key is None:
        queues_named = " and ".join(calling)
        typer.echo(
            f"error: OPENAI_API_KEY is not set (the {queues_named} queue calls the API)", err=True
        )
        raise typer.Exit(1)
    try:
        PolicySource(settings.config)
    except PolicyError as err:
        typer.echo(f"error: invalid policy:\n{err}", err=True)
        raise typer.Exit(1) from None
    logging.basicConfig(level=level, format=LOG_FORMAT)
    if restart:
        from switchboard.worker_restart import WorkerKeeper

        child = [sys.executable, "-m", "switchboard", "worker", "--no-restart"]
        child += ["--queues", ",".join(chosen), "--pool", pool, "--loglevel", loglevel]
        child += ["--metrics-port", str(metrics_port), "--recovery-every", str(recovery_every)]
        if concurrency is not None:
            child += ["--concurrency", str(concurrency)]
        raise typer.Exit(WorkerKeeper(child).run())

    from workers import worker_metrics

    if metrics_port:
        # Before any metric exists: the pool's children inherit the mode and the folder.
        given = os.environ.get(worker_metrics.MULTIPROC_ENV)
        worker_metrics.prepare_multiprocess(Path(given) if given else None)
        worker_metrics.serve(metrics_port)
    worker_metrics.install()
    if CONTROL_QUEUE in chosen and recovery_every > 0:
        from workers import recovery_loop
        from workers.recovery import RecoveryConfig

        recovery_loop.install(settings.redis_url, RecoveryConfig(every_s=recovery_every))

    from workers.celery_app import app, transport_options

    app.conf.broker_transport_options = transport_options(chosen)

    argv = [
        "worker",
        "--queues",
        ",".join(chosen),
        "--loglevel",
        loglevel.upper(),
        "--hostname",
        f"switchboard-{os.getpid()}@%h",
        # Mingle and gossip only add start-up delay and broker chatter here: workers
        # share nothing but the queues.
        "--without-mingle",
        "--without-gossip",
        "--pool",
        pool,
    ]
    if concurrency is not None:
        argv += ["--concurrency", str(concurrency)]
    # Celery's command line returns normally whatever the worker's exit code (1 after an
    # "Unrecoverable error"); take it from the worker itself, or this process would exit
    # 0 as if the worker had been stopped, and the restarter would not restart it.
    from celery import signals

    exit_codes: list[int] = []

    def on_shutdown(sender: object, **_: object) -> None:
        exit_codes.append(int(getattr(sender, "exitcode", 0) or 0))

    signals.worker_shutdown.connect(on_shutdown, weak=False, dispatch_uid="switchboard-exit")
    app.start(argv)
    raise typer.Exit(exit_codes[-1] if exit_codes else 0)
