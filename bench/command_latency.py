"""Command latency: a transfer queued with the command API -> the refer request at the API.

    python -m bench command_latency [--window 30]

One ``switchboard runner`` holds live calls (a caller who talks every ten seconds). The
benchmark queues ``transfer`` commands with ``shared.commands.CommandQueue`` (what
``switchboard calls transfer`` runs) at a steady pace, one per call, and takes the
time from just before the enqueue to the moment the emulator received
``POST /v1/realtime/calls/{id}/refer`` (its ``ended_at`` for ``ended_by == "refer"``).
"""

from __future__ import annotations

import time

from bench import plots
from bench.report import Report, main_for
from bench.session_bench import session_bench
from bench.stats import latency_ms
from shared.commands import CommandQueue

CALLS_PER_WINDOW_S = 5
TARGET = "sip:agent@pbx.example.com"


def run(window_s: float) -> Report:
    report = Report(
        "command_latency",
        "Command latency: calls transfer -> refer request",
        f"python -m bench command_latency --window {window_s:g}",
    )
    with session_bench("command_latency") as bench:
        bench.stack.runner("bench-commands")
        count = max(30, int(window_s * CALLS_PER_WINDOW_S))
        calls = [bench.place_call("bench-hold") for _ in range(count)]
        bench.wait_attached(calls)
        queue = CommandQueue(bench.rdb)
        queued_at: dict[str, float] = {}
        gap_s = window_s / count
        for call_id in calls:
            queued_at[call_id] = time.time()
            queue.enqueue_command(call_id, "transfer", {"target": TARGET})
            time.sleep(gap_s)
        time.sleep(3.0)
        latencies, missed = [], 0
        for call_id in calls:
            truth = bench.truth(call_id)
            if truth["ended_by"] != "refer" or truth["refer_target"] != TARGET:
                missed += 1
                continue
            latencies.append(truth["ended_at"] - queued_at[call_id])
    summary = latency_ms(latencies)
    report.add("p50", summary["p50_ms"], "ms")
    report.add("p99", summary["p99_ms"], "ms", "<=", 50)
    report.add("transfers not carried out", missed, "calls", "==", 0)
    report.details = {"calls": len(latencies) + missed, "latency": summary}
    fig, axes = plots.figure("command_latency", 1)
    plots.latency_cdf(axes[0], {"transfer -> refer": latencies}, "Command latency", 50)
    report.plot = plots.save(fig, "command_latency")
    return report


if __name__ == "__main__":
    main_for(run)
