"""``switchboard up``: start the stack, show it, stop it cleanly on Ctrl-C or SIGTERM.

Exit 0 after a requested stop, 1 if the stack could not start or a child died (its last
log lines go to stderr and the rest is stopped, never left running half a stack), 2 for
usage errors. Whatever happens, every child is stopped before ``up`` returns.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer

from switchboard.cluster import STATE_DIR

if TYPE_CHECKING:
    from switchboard.up import Stack, StackAddresses

SIP_URI_SHAPE = "sip:{project}@sip.api.openai.com;transport=tls"
TICK_S = 1.0


class _Interrupted(BaseException):
    """SIGINT or SIGTERM arrived while the stack was still starting."""


def banner(stack: Stack, addresses: StackAddresses, public_url: str | None) -> list[str]:
    """What an operator needs to know once the stack is up; no secret in it."""
    lines = [
        f"switchboard up: {len(stack.supervisor.children)} processes, "
        f"logs in {stack.supervisor.log_dir}",
        f"  redis     {'embedded, ' if stack.redis else ''}{_redacted(addresses.redis_url)}",
        f"  ingress   {addresses.ingress_url} (metrics {addresses.metrics_urls['ingress']})",
        f"  admin API {addresses.admin_url} (bearer token in {stack.up_file})",
    ]
    if addresses.emulator_url is not None:
        lines.append(f"  emulator  {addresses.emulator_url} (ledger /_emulator/ledger)")
    else:
        webhook = (
            f"{public_url.rstrip('/')}/webhooks/openai"
            if public_url
            else "https://<public address of this ingress>/webhooks/openai"
        )
        project = os.environ.get("OPENAI_PROJECT_ID") or "$PROJECT_ID"
        lines += [
            "Against the OpenAI Realtime API. Register this webhook (platform.openai.com >",
            "Settings > Project > Webhooks, event realtime.call.incoming):",
            f"  {webhook}",
            f"  (it must reach {addresses.webhook_url})",
            "Point your SIP trunk at:",
            f"  {SIP_URI_SHAPE.format(project=project)}",
        ]
    lines.append("Ctrl-C stops everything.")
    return lines


def _redacted(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


@contextmanager
def _signals(stopping: threading.Event, starting: list[bool]) -> Iterator[None]:
    """SIGINT/SIGTERM: abort a start in progress, else ask the watch loop to stop."""

    def handle(signum: int, frame: FrameType | None) -> None:
        stopping.set()
        if starting[0]:
            starting[0] = False
            raise _Interrupted

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        # The stop that follows must finish: a second Ctrl-C may not cut it short.
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)


def _watch(stack: Stack, addresses: StackAddresses, stopping: threading.Event, demo: bool) -> int:
    """Show the stack until asked to stop (0) or a child dies (1)."""
    from switchboard.supervisor import ChildDied

    view = None
    if demo:
        from switchboard.live_view import open_view

        urls = addresses.metrics_urls
        runners = [url for name, url in urls.items() if name.startswith("runner-")]
        workers = [url for name, url in urls.items() if name.startswith("worker-")]
        view = open_view(addresses.redis_url, runners, workers)
    try:
        while not stopping.is_set():
            for note in stack.check_children():
                print(f"switchboard up: {note}", file=sys.stderr, flush=True)
            if view is not None:
                view.tick()
            stopping.wait(TICK_S)
    except ChildDied as died:
        if view is not None:
            view.close()
            view = None
        code = "none" if died.returncode is None else str(died.returncode)
        print(f"switchboard up: {died.name} stopped (exit code {code}); stopping", file=sys.stderr)
        print(died.last_lines, file=sys.stderr)
        return 1
    finally:
        if view is not None:
            view.close()
    return 0


def up_command(
    demo: Annotated[
        bool, typer.Option("--demo", help="Simulated callers and a live view (emulator).")
    ] = False,
    runners: Annotated[int, typer.Option(min=0, help="Session-runner processes.")] = 1,
    workers: Annotated[int, typer.Option(min=1, help="Celery worker processes.")] = 1,
    calls_per_second: Annotated[
        float, typer.Option(min=0.0, help="Rate of simulated calls with --demo.")
    ] = 1.0,
    duration: Annotated[
        float | None,
        typer.Option(min=0.0, help="Seconds of simulated calls with --demo (default: no end)."),
    ] = None,
    scenario: Annotated[str, typer.Option(help="Scenario of simulated calls, or 'mix'.")] = "mix",
    time_scale: Annotated[
        float,
        typer.Option(min=0.001, help="Multiplies the simulated callers' pauses (emulator)."),
    ] = 1.0,
    host: Annotated[str, typer.Option(help="Interface the ingress listens on.")] = "127.0.0.1",
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Ingress port (default: a free one).")
    ] = None,
    public_url: Annotated[
        str | None,
        typer.Option(
            envvar="SWITCHBOARD_PUBLIC_URL", help="Public base URL of the ingress (real API)."
        ),
    ] = None,
    state_dir: Annotated[
        Path, typer.Option(help="Where up.json and the logs go.", file_okay=False)
    ] = STATE_DIR,
) -> None:
    """Run the whole stack on this machine; Ctrl-C stops everything."""
    from switchboard.embedded_redis import RedisMissing
    from switchboard.supervisor import ChildDied
    from switchboard.up import Stack, UpOptions, UpRefused, stop_report

    options = UpOptions(
        demo=demo,
        runners=runners,
        workers=workers,
        calls_per_second=calls_per_second,
        duration_s=duration,
        scenario=scenario,
        host=host,
        ingress_port=port,
        time_scale=time_scale,
        state_dir=state_dir,
    )
    stack = Stack(options)
    if demo and os.environ.get("OPENAI_API_KEY"):
        print(
            "switchboard up: --demo uses the emulator; OPENAI_API_KEY is ignored", file=sys.stderr
        )
    stopping = threading.Event()
    starting = [True]
    code = 0
    try:
        with _signals(stopping, starting):
            try:
                addresses = stack.start()
                starting[0] = False
            except (RedisMissing, UpRefused) as err:
                print(f"error: {err}", file=sys.stderr)
                code = 1
            except ChildDied as died:
                print(f"error: {died.name} did not start", file=sys.stderr)
                print(died.last_lines, file=sys.stderr)
                code = 1
            except _Interrupted:
                pass
            else:
                print("\n".join(banner(stack, addresses, public_url)), flush=True)
                code = _watch(stack, addresses, stopping, demo)
    finally:
        stop_report(stack)
    raise typer.Exit(code)
