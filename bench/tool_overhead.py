"""Tool-call overhead: ``arguments.done`` out of the API -> output + ``response.create`` in.

    python -m bench tool_overhead [--window 30]

One ``switchboard runner`` and one Celery worker on the ``tools`` queue. Calls play a
scenario in which every turn makes the model call a tool that returns at once:
``lookup_order`` (async Python: run in-process on the runner's loop) or
``lookup_order_blocking`` (a plain function: run by Celery). The two kinds are measured
one after the other, each on calls of its own, which are hung up before the next phase.

Measured at the emulator (``bench.tool_timing``): the time it sent
``response.function_call_arguments.done`` -> the time it received the
``response.create`` that follows the ``function_call_output``, minus the tool's own time
(``own_ms`` in its output, a few microseconds; ``bench.bench_tools``). Only tool calls
whose ``arguments.done`` went out inside the steady window count. Both clocks are read
in the emulator, so the figure includes the websocket hop each way (loopback).

Beside it: arguments.done -> ``function_call_output`` alone, and the CPU the runner and
the tools worker (parent and pool processes) used per tool call during the window (for
the runner, that is the whole turn: the caller's speech, the tool call and the reply).
"""

from __future__ import annotations

import time

from bench import plots
from bench.procstat import tree_cpu_s
from bench.report import Report, main_for
from bench.session_bench import ReceiveClock, SendClock, SessionBench, session_bench
from bench.stack import API_KEY
from bench.stats import latency_ms
from bench.tool_timing import OUTPUT_ITEM, RESPONSE_CREATE, ToolTiming, tool_timings

CALLS_PER_KIND = 20
TIME_SCALE = 0.25
"""The emulator plays the scenario 4x faster: a tool call per call every ~1.5 s, so a
30 s window holds a few hundred samples (at real speed a turn takes ~5 s)."""
WARMUP_S = 2.0
"""After the calls attached: first tool calls import the tool, fill pools."""
KINDS = (("in-process", "bench-tool-async", 2.0), ("celery", "bench-tool-celery", 15.0))
"""(kind, scenario, p99 target in ms)."""


def _hang_up(bench: SessionBench, call_ids: list[str]) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    for call_id in call_ids:
        url = f"{bench.emu.api_url}/realtime/calls/{call_id}/hangup"
        bench.emu.http.post(url, headers=headers)


def _phase(
    bench: SessionBench,
    sent: SendClock,
    received: ReceiveClock,
    scenario: str,
    window_s: float,
    processes: dict[str, int],
) -> tuple[list[ToolTiming], int, dict[str, float]]:
    calls = [bench.place_call(scenario) for _ in range(CALLS_PER_KIND)]
    bench.wait_attached(calls)
    time.sleep(WARMUP_S)
    cpu_before = {name: tree_cpu_s(pid) for name, pid in processes.items()}
    start = time.time()
    time.sleep(window_s)
    end = time.time()
    cpu_used = {name: tree_cpu_s(pid) - cpu_before[name] for name, pid in processes.items()}
    time.sleep(1.0)  # answers to the last arguments.done of the window
    _hang_up(bench, calls)
    in_window = {
        key: at for key, at in dict(sent.sent_at).items() if key[0] in calls and start <= at < end
    }
    timings, unanswered = tool_timings(in_window, received.calls(calls))
    return timings, unanswered, cpu_used


def run(window_s: float) -> Report:
    report = Report(
        "tool_overhead",
        "Tool-call overhead: arguments.done -> output + response.create, minus the tool",
        f"python -m bench tool_overhead --window {window_s:g}",
    )
    samples: dict[str, list[float]] = {}
    with (
        session_bench("tool_overhead", time_scale=TIME_SCALE) as bench,
        SendClock("response.function_call_arguments.done", "call_id") as sent,
        ReceiveClock(OUTPUT_ITEM, RESPONSE_CREATE) as received,
    ):
        processes = {
            "tools worker": bench.stack.worker("tools", 2, "warning").proc.pid,
            "runner": bench.stack.runner("bench-tools").proc.pid,
        }
        for kind, scenario, target_ms in KINDS:
            timings, unanswered, cpu_used = _phase(
                bench, sent, received, scenario, window_s, processes
            )
            samples[kind] = [t.overhead_s for t in timings]
            summary = latency_ms(samples[kind])
            report.add(f"{kind} p50", summary["p50_ms"], "ms")
            report.add(f"{kind} p99", summary["p99_ms"], "ms", "<=", target_ms)
            per_call = max(1, len(timings))
            report.details[kind] = {
                "overhead": summary,
                "to_function_call_output": latency_ms([t.to_output_s for t in timings]),
                "tool_own_ms_max": round(max((t.own_s for t in timings), default=0) * 1000, 4),
                "outputs_without_response_create": unanswered,
                "cpu_ms_per_tool_call": {
                    name: round(used / per_call * 1000, 3) for name, used in cpu_used.items()
                },
            }
    report.details["calls_per_kind"] = CALLS_PER_KIND
    report.details["emulator_time_scale"] = TIME_SCALE
    fig, axes = plots.figure("tool_overhead", 1)
    plots.latency_cdf(axes[0], samples, "Tool-call overhead (emulator's view)", None)
    report.plot = plots.save(fig, "tool_overhead")
    return report


if __name__ == "__main__":
    main_for(run)
