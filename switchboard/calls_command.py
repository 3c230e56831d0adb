"""``switchboard calls``: live calls across the cluster, one call's record, and commands.

``list``, ``show`` and ``tail`` read the cluster's Redis; ``transfer``, ``hangup`` and
``say`` queue a command on the call's command stream (``shared.commands``, the same
path as the admin API) for the runner that holds the call. ``--wait S`` waits up to S
seconds for the runner's answer; if the runner refused the command or did not answer in
time, the reason goes to stderr (one line) and the exit code is 1.
The ``--json`` documents are those of the admin API (``ingress.admin_documents``).
Imports happen inside the verbs: every ``switchboard`` process loads this module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from shared.models import CallRecord
    from shared.store import CallStore

calls_app = typer.Typer(
    help="Live calls: list, show, follow, and commands for them.", no_args_is_help=True
)

JsonFlag = Annotated[bool, typer.Option("--json", help="One JSON document for scripts.")]
CallId = Annotated[str, typer.Argument(help="The call id (rtc_...).", metavar="ID")]
WaitOption = Annotated[
    float,
    typer.Option(
        "--wait", min=0.0, help="Seconds to wait for the runner's answer (0: just queue it)."
    ),
]


@calls_app.callback()
def calls_group() -> None:
    """Live calls: list, show, follow, and commands for them."""


def _record(store: CallStore, call_id: str) -> CallRecord:
    from switchboard.output import fail

    try:
        record = store.get(call_id)
    except ValueError:  # not a well-formed id
        record = None
    if record is None:
        fail(f"no such call {call_id!r}")
    return record


@calls_app.command("list")
def list_command(
    json_out: JsonFlag = False,
    state: Annotated[
        list[str] | None, typer.Option(help="Only calls in this state (repeatable).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="At most this many.")] = 1000,
) -> None:
    """Live calls across the cluster, oldest first."""
    import time

    from ingress.admin_documents import call_document
    from shared.models import LIVE_STATES, CallState
    from shared.store import CallStore
    from switchboard.cluster import open_cluster
    from switchboard.output import (
        age,
        console,
        duration,
        print_json,
        refusals,
        table,
        usage_error,
        usd,
    )

    live = {s.value for s in LIVE_STATES}
    if state and not set(state) <= live:
        usage_error(f"--state must be one of {', '.join(sorted(live))}")
    with refusals():
        records = CallStore(open_cluster()).list_calls(
            [CallState(s) for s in state] if state else None, limit=limit
        )
    now_s = time.time()
    documents = [call_document(record, now_s) for record in records]
    if json_out:
        print_json({"calls": documents})
        return
    rows = [
        [
            d["id"],
            d["state"],
            d["profile"] or "-",
            d["from"],
            d["to"],
            duration(d["duration_s"]) if d["duration_s"] is not None else age(d["created_at"]),
            d["runner"] or "-",
            usd(d["cost_usd"]),
        ]
        for d in documents
    ]
    columns = ["call", "state", "profile", "from", "to", "for", "runner", "cost"]
    console().print(table(f"{len(rows)} live calls", columns, rows))


@calls_app.command("show")
def show_command(call_id: CallId, json_out: JsonFlag = False) -> None:
    """One call's record, live or ended."""
    import time

    from ingress.admin_documents import call_document
    from shared.store import CallStore
    from switchboard.cluster import open_cluster
    from switchboard.output import console, duration, key_values, print_json, refusals, usd, when

    with refusals():
        record = _record(CallStore(open_cluster()), call_id)
    document = call_document(record, time.time())
    if json_out:
        print_json(document)
        return
    shown: dict[str, Any] = {
        "call": document["id"],
        "state": document["state"],
        "profile": document["profile"],
        "from": document["from"],
        "to": document["to"],
        "received": when(document["created_at"]),
        "accepted": when(document["accepted_at"]),
        "ended": when(document["ended_at"]),
        "end reason": document["end_reason"],
        "detail": document["end_detail"] or document["error"],
        "duration": duration(document["duration_s"]) if document["duration_s"] else None,
        "runner": document["runner"],
        "cost": usd(document["cost_usd"]),
        "tokens": ", ".join(f"{k} {v}" for k, v in sorted(document["usage"].items()) if v),
    }
    console().print(key_values(None, shown))


@calls_app.command("tail")
def tail_command(call_id: CallId, json_out: JsonFlag = False) -> None:
    """Follow a call's transcript and events live until it ends."""
    from shared.store import CallStore
    from switchboard.call_tail import follow_call
    from switchboard.cluster import open_cluster
    from switchboard.output import refusals

    with refusals():
        client = open_cluster()
        _record(CallStore(client), call_id)
        try:
            follow_call(client, call_id, json_out)
        except KeyboardInterrupt:
            raise typer.Exit(130) from None


def _queue(call_id: str, kind: str, args: dict[str, Any], wait_s: float, json_out: bool) -> None:
    from ingress.admin_documents import command_document
    from shared.commands import CallEnded, CallNotFound, CommandQueue, InvalidCommand
    from shared.errors import PolicyError
    from shared.policy_file import PolicySource
    from shared.settings import Settings
    from switchboard.cluster import open_cluster
    from switchboard.output import fail, print_json, refusals

    with refusals():
        client = open_cluster()
        try:
            # Named transfer targets come from the same policy the cluster runs.
            policies = PolicySource(Settings().config)
        except PolicyError as err:
            fail(f"invalid policy (SWITCHBOARD_CONFIG): {err}")
        queue = CommandQueue(client, policies.current)
        try:
            command_id = queue.enqueue_command(call_id, kind, args)
        except CallNotFound:
            fail(f"no such call {call_id!r}")
        except CallEnded as err:
            fail(str(err))
        except InvalidCommand as err:
            fail(str(err))
        document: dict[str, Any] = command_document(call_id, command_id, kind)
        result = queue.wait_result(call_id, command_id, wait_s) if wait_s > 0 else None
    if result is not None:
        document.update(status="done" if result.ok else "failed", detail=result.detail)
    if json_out:
        # Scripts get the document whatever became of the command; failures also exit 1.
        print_json(document)
    if wait_s > 0 and result is None:
        fail(f"no answer from the call's runner within {wait_s:g}s; {command_id} stays queued")
    if result is not None and not result.ok:
        fail(f"{kind} refused by the call's runner: {result.detail}")
    if json_out:
        return
    if result is None:
        typer.echo(f"{kind} queued for {call_id} ({command_id})")
    else:
        typer.echo(f"{kind} done for {call_id}: {result.detail}")


@calls_app.command("transfer")
def transfer_command(
    call_id: CallId,
    target: Annotated[str, typer.Argument(help="sip:/tel: URI or a named transfer target.")],
    announcement: Annotated[
        str | None, typer.Option(help="What the agent says before transferring.")
    ] = None,
    wait: WaitOption = 0.0,
    json_out: JsonFlag = False,
) -> None:
    """Transfer a live call to a sip:/tel: URI or a named target."""
    args = {"target": target} | ({"announcement": announcement} if announcement else {})
    _queue(call_id, "transfer", args, wait, json_out)


@calls_app.command("hangup")
def hangup_command(
    call_id: CallId,
    goodbye: Annotated[str | None, typer.Option(help="What the agent says first.")] = None,
    wait: WaitOption = 0.0,
    json_out: JsonFlag = False,
) -> None:
    """Hang up a live call."""
    _queue(call_id, "hangup", {"goodbye": goodbye} if goodbye else {}, wait, json_out)


@calls_app.command("say")
def say_command(
    call_id: CallId,
    text: Annotated[str, typer.Argument(help="What the agent says.")],
    wait: WaitOption = 0.0,
    json_out: JsonFlag = False,
) -> None:
    """Have the agent say something on a live call."""
    _queue(call_id, "say", {"text": text}, wait, json_out)
