"""The figures and the plot of the runner-density benchmark, from its measured windows.

Pure but for the plot file: ``judge`` marks which runner steps count towards the
target, ``add_figures`` puts each figure beside its target of performance.md, ``plot``
draws the three panels.
"""

from __future__ import annotations

import math
from typing import Any

from bench import plots
from bench.report import Report

TARGET_CALLS = 2000
TARGET_LAG_S = 0.01
TARGET_EVENTS_PER_CALL = 10.0
TARGET_IDLE_KB = 100.0
TARGET_ACTIVE_KB = 1024.0
RATE_KEPT = 0.9
"""A step's calls must get this share of the event rate per call the baseline got."""
SATURATED = 0.95
"""A runner above this CPU share is saturated: no further step."""

Window = dict[str, Any]


def judge(steps: list[Window], reference_rate: float) -> None:
    """Mark each step ``counts``: every call held, lag p99 <= target, rate kept, CPU left."""
    for step in steps:
        if "error" in step:
            step["counts"] = False
            continue
        step["rate_kept"] = step["events_per_s_per_call"] >= RATE_KEPT * reference_rate
        step["counts"] = (
            step["held_at_end"] >= step["calls"]
            and step["loop_lag"]["share_over_target"] <= 0.01
            and step["cpu_share"] <= SATURATED
            and step["rate_kept"]
        )


def held_at_target(steps: list[Window]) -> int:
    """The largest step such that it and every step below it count (0: none)."""
    held = 0
    for step in steps:
        if not step.get("counts"):
            break
        held = step["calls"]
    return held


def _ratio(sdk: float | None, runner: float | None) -> float:
    return sdk / runner if sdk is not None and runner else math.nan


def _or_nan(value: float | None) -> float:
    return math.nan if value is None else value


def baseline_step(steps: list[Window], sdk: Window) -> Window | None:
    """The runner's step on the baseline's calls, if it was measured."""
    first = steps[0] if steps else None
    if first is None or "error" in first or first["calls"] != sdk["calls"]:
        return None
    return first


def add_figures(
    report: Report,
    steps: list[Window],
    sdk: Window,
    idle: Window,
    reference_rate: float,
    scenario: str,
) -> None:
    measured = [s for s in steps if "error" not in s]
    held = held_at_target(steps)
    report.add(
        "live calls held at the realistic rate with loop lag p99 <= 10 ms",
        held,
        "calls",
        ">=",
        TARGET_CALLS,
    )
    for step in measured:
        n, lag = step["calls"], step["loop_lag"]
        report.add(
            f"loop lag p99 at {n} calls (bucket bound, {lag['samples']} samples)",
            lag["p99_bound_ms"],
            "ms",
            "<=",
            TARGET_LAG_S * 1000,
        )
        report.add(
            f"events/s per call at {n} calls ({RATE_KEPT:.0%} of the baseline's)",
            step["events_per_s_per_call"],
            "events/s",
            ">=",
            round(RATE_KEPT * reference_rate, 2),
        )
        report.add(f"runner CPU share at {n} calls", step["cpu_share"] * 100, "% of a core")
    report.add(
        f"event rate per call of {scenario}, baseline's {sdk['calls']} calls "
        f"(target ~{TARGET_EVENTS_PER_CALL:g})",
        reference_rate,
        "events/s",
    )
    at = next((s for s in measured if s["calls"] == held), measured[-1] if measured else None)
    if at is not None:
        report.add(
            f"RSS per active call at {at['calls']} calls (mean: RSS growth / calls)",
            at["rss_per_call_kb"],
            "KB",
            "<=",
            TARGET_ACTIVE_KB,
        )
    report.add(
        f"RSS per idle call ({idle['calls']} silent calls)",
        idle["rss_per_call_kb"],
        "KB",
        "<=",
        TARGET_IDLE_KB,
    )
    first = baseline_step(steps, sdk)
    if first is None:
        return
    n = sdk["calls"]
    lag = sdk["loop_lag"]
    report.add(
        f"SDK baseline loop lag p99 at {n} calls (bucket bound, {lag['samples']} samples)",
        lag["p99_bound_ms"],
        "ms",
    )
    for key, label, unit in (
        ("cpu_per_call_pct", "CPU per call", "% of a core"),
        ("cpu_pct_per_1k_events_per_s", "CPU per 1,000 events/s", "% of a core"),
        ("rss_per_call_kb", "RSS per call", "KB"),
    ):
        report.add(f"runner {label}, the {n} baseline calls", _or_nan(first[key]), unit)
        report.add(f"SDK baseline {label}, the same {n} calls", _or_nan(sdk[key]), unit)
        report.add(f"SDK baseline / runner, {label}", _ratio(sdk[key], first[key]), "x")


def plot(report: Report, steps: list[Window], sdk: Window, idle: Window) -> None:
    """Lag and CPU per step; event rate per call and emulator CPU; RSS per call."""
    fig, (left, middle, right) = plots.figure("runner_density", 3)
    measured = [s for s in steps if "error" not in s]
    xs = [s["calls"] for s in measured]
    left.plot(
        xs,
        [s["loop_lag"]["p99_bound_ms"] for s in measured],
        marker="o",
        label="loop lag p99, bucket bound (ms)",
    )
    left.plot(xs, [s["cpu_share"] * 100 for s in measured], marker="s", label="CPU (% of a core)")
    left.axhline(TARGET_LAG_S * 1000, color="red", linestyle="--", label="lag target 10 ms")
    left.set_ylim(bottom=0)
    left.set_xlabel("live calls in one runner")
    left.set_title("Runner under load")
    left.legend(fontsize=8)
    middle.plot(
        xs, [s["events_per_s_per_call"] for s in measured], marker="o", label="runner received"
    )
    middle.axhline(
        TARGET_EVENTS_PER_CALL, color="red", linestyle="--", label="realistic rate ~10/s"
    )
    middle.set_ylim(bottom=0)
    middle.set_xlabel("live calls in one runner")
    middle.set_ylabel("events/s per call")
    emulator = [s["emulator_cpu_share"] * 100 for s in measured if "emulator_cpu_share" in s]
    if emulator and len(emulator) == len(xs):
        cpu = middle.twinx()
        cpu.plot(xs, emulator, color="tab:grey", linestyle=":", marker="^")
        cpu.set_ylabel("emulator CPU (% of a core, dotted)")
        cpu.set_ylim(bottom=0)
    middle.set_title("Event rate delivered per call")
    middle.legend(fontsize=8, loc="lower left")
    bars = {f"runner idle\n({idle['calls']} calls)": idle["rss_per_call_kb"]}
    first = baseline_step(steps, sdk)
    if first is not None:
        bars[f"runner busy\n({first['calls']} calls)"] = first["rss_per_call_kb"]
    bars[f"SDK busy\n(same {sdk['calls']} calls)"] = sdk["rss_per_call_kb"]
    plots.bars(right, bars, "RSS per call", "KB", None)
    right.axhline(TARGET_IDLE_KB, color="red", linestyle="--", label="idle target 100 KB")
    right.legend(fontsize=8)
    report.plot = plots.save(fig, "runner_density")
