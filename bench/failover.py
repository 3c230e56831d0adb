"""Failover: SIGKILL a runner holding N calls -> every call attached again by another runner.

    python -m bench failover [--window 30]

Runner A takes N live calls (a caller who talks every ten seconds); runner B starts
and holds nothing (A already took every call). A is killed with SIGKILL; the emulator's
attachment ground truth then tells, per call, when a new sideband opened after the
kill. Reported: the time to the last re-attachment and the per-call p50/p99, and the
calls lost (not attached again within the window, or ended by anything but their
caller).
"""

from __future__ import annotations

import signal
import time
from typing import Any

from bench import plots
from bench.report import Report, main_for
from bench.session_bench import session_bench
from bench.stats import latency_ms

CALLS = 200


def _reattached_at(truth: dict[str, Any], killed_at: float) -> float | None:
    opened = [a["opened_at"] for a in truth["attachments"] if a["opened_at"] >= killed_at]
    return min(opened) if opened else None


def run(window_s: float) -> Report:
    report = Report(
        "failover",
        "Failover: runner killed -> its calls re-attached elsewhere",
        f"python -m bench failover --window {window_s:g}",
    )
    with session_bench("failover") as bench:
        victim = bench.stack.runner("bench-victim")
        calls = [bench.place_call("bench-hold") for _ in range(CALLS)]
        bench.wait_attached(calls)
        bench.stack.runner("bench-survivor")
        time.sleep(2.0)
        killed_at = time.time()
        victim.stop(signal.SIGKILL)
        deadline = time.monotonic() + max(window_s, 15.0)
        times: dict[str, float] = {}
        while len(times) < len(calls) and time.monotonic() < deadline:
            for call_id in calls:
                if call_id in times:
                    continue
                at = _reattached_at(bench.truth(call_id), killed_at)
                if at is not None:
                    times[call_id] = at - killed_at
            time.sleep(0.2)
        lost = 0
        for call_id in calls:
            truth = bench.truth(call_id)
            if call_id not in times or truth["state"] != "active":
                lost += 1
    summary = latency_ms(list(times.values()))
    report.add("time to the last re-attachment", summary["max_ms"] / 1000, "s")
    report.add("per-call p50", summary["p50_ms"] / 1000, "s")
    report.add("per-call p99", summary["p99_ms"] / 1000, "s", "<=", 5)
    report.add("calls lost", lost, "calls", "==", 0)
    report.details = {"calls": CALLS, "reattach": summary}
    fig, axes = plots.figure("failover", 1)
    plots.latency_cdf(axes[0], {f"{CALLS} calls": list(times.values())}, "Re-attachment", 5000)
    report.plot = plots.save(fig, "failover")
    return report


if __name__ == "__main__":
    main_for(run)
