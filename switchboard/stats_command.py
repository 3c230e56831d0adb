"""``switchboard stats``: cluster totals: active calls, outcomes, setup latency, cost.

Costs are derived from the cluster's token counters with the price table of the
policy in ``SWITCHBOARD_CONFIG`` (the built-in one by default), so they match the
cluster's own accounting when both use the same policy. Setup latency (webhook
received -> call accepted) covers every call the cluster accepted, ended or live.
"""

from __future__ import annotations

from typing import Annotated

import typer


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms"


def stats_command(
    json_out: Annotated[
        bool, typer.Option("--json", help="One JSON document for scripts.")
    ] = False,
) -> None:
    """Cluster totals: active calls, outcomes, setup latency, cost."""
    from shared.errors import PolicyError
    from shared.policy_file import PolicySource
    from shared.settings import Settings
    from switchboard.cluster import open_cluster
    from switchboard.cluster_stats import read_stats, stats_document
    from switchboard.output import console, fail, key_values, print_json, refusals, usd

    try:
        prices = PolicySource(Settings().config).current().prices
    except PolicyError as err:
        fail(f"invalid policy (SWITCHBOARD_CONFIG): {err}")
    with refusals():
        document = stats_document(read_stats(open_cluster(), prices))
    if json_out:
        print_json(document)
        return
    by_state = document["calls_by_state"]
    outcomes = [
        f"{outcome} {sum(reasons.values())}"
        + (
            " (" + ", ".join(f"{r} {n}" for r, n in reasons.items() if r) + ")"
            if any(reasons)
            else ""
        )
        for outcome, reasons in document["outcomes"].items()
    ]
    setup = document["setup_latency_s"]
    runners = document["runners"]
    tokens = document["tokens"]
    shown = {
        "active calls": f"{document['active_calls']}"
        + (
            " (" + ", ".join(f"{s} {n}" for s, n in sorted(by_state.items())) + ")"
            if by_state
            else ""
        ),
        "outcomes": "; ".join(outcomes) or "none yet",
        "setup latency": f"p50 {_ms(setup['p50'])}, p99 {_ms(setup['p99'])} "
        f"over {setup['calls']} accepted calls",
        "cost": usd(document["cost_usd"]),
        "responses": document["responses"],
        "tokens": f"{tokens['input_tokens']} in ({tokens['cached_tokens']} cached), "
        f"{tokens['output_tokens']} out",
        "runners": f"{runners['alive']} alive, load {runners['load']}/{runners['capacity']}",
    }
    console().print(key_values("cluster", shown))
