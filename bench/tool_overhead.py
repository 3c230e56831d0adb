"""Tool-call overhead: ``arguments.done`` out of the API -> ``function_call_output`` back.

    python -m bench tool_overhead [--window 30]

One ``switchboard runner`` and one Celery worker on the ``tools`` queue. Calls play a
scenario in which every turn makes the model call a tool that returns at once:
``lookup_order`` (async Python: run in-process on the runner's loop) or
``lookup_order_blocking`` (a plain function: run by Celery). Measured at the emulator:
the time it sent ``response.function_call_arguments.done`` -> the time the
``function_call_output`` item arrived (the ``response.create`` follows in the same
write burst). The tools' own time is a few microseconds and is not subtracted.
"""

from __future__ import annotations

import time
from typing import Any

from bench import plots
from bench.report import Report, main_for
from bench.session_bench import SendClock, SessionBench, session_bench
from bench.stats import latency_ms

CALLS_PER_KIND = 20
TURN_S = 1.2
"""About one tool call per call per this many seconds (scenario pauses + speech)."""


def _overheads(bench: SessionBench, clock: SendClock, call_ids: list[str]) -> list[float]:
    found = []
    for call_id in call_ids:
        truth: dict[str, Any] = bench.truth(call_id)
        for output in truth["tool_outputs"]:
            sent = clock.sent_at.get((call_id, output["call_id"]))
            if sent is not None:
                found.append(output["at"] - sent)
    return found


def run(window_s: float) -> Report:
    report = Report(
        "tool_overhead",
        "Tool-call overhead: arguments.done -> function_call_output",
        f"python -m bench tool_overhead --window {window_s:g}",
    )
    samples: dict[str, list[float]] = {}
    with (
        session_bench("tool_overhead") as bench,
        SendClock("response.function_call_arguments.done", "call_id") as clock,
    ):
        bench.stack.worker("tools", 2, "warning")
        bench.stack.runner("bench-tools")
        for kind, scenario in (("in-process", "bench-tool-async"), ("celery", "bench-tool-celery")):
            calls = [bench.place_call(scenario) for _ in range(CALLS_PER_KIND)]
            time.sleep(window_s)
            samples[kind] = _overheads(bench, clock, calls)
    targets = {"in-process": 2.0, "celery": 15.0}
    for kind, found in samples.items():
        summary = latency_ms(found)
        report.add(f"{kind} p50", summary["p50_ms"], "ms")
        report.add(f"{kind} p99", summary["p99_ms"], "ms", "<=", targets[kind])
        report.details[kind] = summary
    report.details["calls_per_kind"] = CALLS_PER_KIND
    fig, axes = plots.figure("tool_overhead", 1)
    plots.latency_cdf(axes[0], samples, "Tool-call overhead (emulator's view)", None)
    report.plot = plots.save(fig, "tool_overhead")
    return report


if __name__ == "__main__":
    main_for(run)
