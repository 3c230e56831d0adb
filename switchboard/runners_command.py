"""``switchboard runners``: the session runners with their load, and draining one.

``drain ID`` asks the runner (through its registry entry, read back with its next
heartbeat) to stop taking calls and hand the ones it holds to other runners.
"""

from __future__ import annotations

from typing import Annotated

import typer

runners_app = typer.Typer(help="Session runners: load, heartbeats, draining.", no_args_is_help=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="One JSON document for scripts.")]


@runners_app.callback()
def runners_group() -> None:
    """Session runners: load, heartbeats, draining."""


@runners_app.command("list")
def list_command(json_out: JsonFlag = False) -> None:
    """Registered runners with their load and the age of their last heartbeat."""
    import time

    from ingress.admin_documents import runner_document
    from shared.runner_registry import list_runners
    from switchboard.cluster import open_cluster
    from switchboard.cluster_stats import RUNNER_DEAD_AFTER_S
    from switchboard.output import console, duration, print_json, refusals, table

    with refusals():
        entries = list_runners(open_cluster())
    now_s = time.time()
    documents = [runner_document(entry, now_s, RUNNER_DEAD_AFTER_S) for entry in entries]
    if json_out:
        print_json({"runners": documents})
        return
    rows = [
        [
            d["id"],
            d["host"],
            str(d["pid"]),
            f"{d['load']}/{d['capacity']}",
            "draining" if d["draining"] else ("up" if d["alive"] else "silent"),
            duration(d["heartbeat_age_s"]),
        ]
        for d in documents
    ]
    columns = ["runner", "host", "pid", "load", "status", "heartbeat"]
    console().print(table(f"{len(rows)} runners", columns, rows))


@runners_app.command("drain")
def drain_command(
    runner_id: Annotated[str, typer.Argument(help="The runner id (see runners list).")],
    json_out: JsonFlag = False,
) -> None:
    """Hand a runner's calls over to the others and stop it taking new ones."""
    from shared.runner_registry import RUNNER_ID_RULE, request_drain, valid_runner_id
    from switchboard.cluster import open_cluster
    from switchboard.output import fail, print_json, refusals, usage_error

    if not valid_runner_id(runner_id):
        usage_error(f"invalid runner id {runner_id!r}: {RUNNER_ID_RULE}")
    with refusals():
        found = request_drain(open_cluster(), runner_id)
    if not found:
        fail(f"no such runner {runner_id!r}")
    if json_out:
        print_json({"runner_id": runner_id, "draining": True})
    else:
        typer.echo(f"runner {runner_id} asked to drain")
