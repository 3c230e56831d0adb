"""Runner density: live calls one ``switchboard runner`` holds at a realistic event rate.

    python -m bench runner_density [--window 30]
    python -m bench.runner_density --window 5 --steps 50,100 --idle-calls 50   (a quick check)

The emulator (its own process) plays ``bench-busy``: ``busy-call``'s turns (a turn every
~5 s, each a burst of VAD, transcription deltas, response and usage events, ~10 events/s
per call, the target's realistic rate) played three times over, so that the calls placed
first outlive the whole run. Three phases, one after the other, each measured over the
window once every call is attached and a settling time has passed:

1. Idle: a runner holds ``--idle-calls`` calls of ``bench-idle`` (a caller who never
   speaks; no idle timeout is set, so nothing happens on them): RSS per idle call. The
   calls are then hung up and that runner drains and exits.
2. Baseline: the first step's calls held the straightforward way (``bench.sdk_calls``:
   one ``openai`` SDK ``realtime.connect(call_id=...)`` per call in one plain asyncio
   process, counting the events it receives). Those calls are kept off the runners'
   queue while it holds them.
3. Runner: a fresh runner; once it is warm, the baseline process lets go of its calls,
   they are queued, and the runner re-attaches to the very same calls (the first step);
   more calls are added in steps until the runner's CPU is saturated.

Before its empty RSS is read, each process is ready (the runner registered and answers
``/metrics``; the SDK process said so on stdout) and warm: it has held one call through
its first turn, so what either loads on first use is not charged to the calls. Each
one's CPU share with no call is read too (``empty_cpu_share``). Both sample their event
loop's lag the same way, every ``LAG_SAMPLE_S``, and so pay the same for it.

At each step: CPU share, RSS, events received per second (in total and per call) and
the event loop's lag, sampled every ``LAG_SAMPLE_S`` (``--lag-sample``), with the number
of samples. A step counts towards the target only if it and every step below it held
every call with a lag p99 <= 10 ms and the calls still got ``RATE_KEPT`` of the event
rate the baseline received on them (if the emulator or the runner falls behind, the
rate per call drops and the load is no longer the realistic one); the emulator's own
CPU share is reported beside, to tell which one fell behind. The calls of each step
start spread over one turn (``SPREAD_S``), so that their turns do not fall together.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import yaml

from bench import density_figures
from bench.density_figures import SATURATED, TARGET_LAG_S, Window
from bench.lag_window import lag_window
from bench.procstat import CpuSampler, children, machine_cpu_s, rss_bytes
from bench.report import DEFAULT_WINDOW_S, Report
from bench.runner_under_test import RunnerUnderTest, events, hang_up, hold_back, queue
from bench.sdk_calls import SdkCalls
from bench.session_bench import SessionBench, session_bench
from bench.stack import API_KEY
from emulator.scenarios import builtin_scenarios
from tests.observability.exposition import parse
from tests.support.emulator import EmulatorHandle

STEPS = (200, 500, 1000, 2000)
IDLE_CALLS = 500
SCENARIO = "bench-busy"
IDLE_SCENARIO = "bench-idle"
SETTLE_S = 5.0
SPREAD_S = 5.0
"""One turn of busy-call: the calls of a step start spread over it at least, so that
their turns do not fall together (placements are paced, the baseline's attaches too)."""
EMPTY_WINDOW_S = 5.0
"""The empty runner's CPU is read over this long (at most the window)."""
LAG_SAMPLE_S = 0.01
"""The runners' lag sampling period here: ~100 samples/s, so a window's p99 rests on
thousands of samples (the default, 0.25 s, gives 120 per 30 s)."""
RUNNER_ARGS = ("--lag-sample", str(LAG_SAMPLE_S), "--drain-grace", "5")

IDLE_CALL = """\
name: bench-idle
description: A caller who never speaks (no idle timeout fires), for idle memory per call.
greeting_wait_s: 0
max_duration_s: 1800
steps:
  - silence_s: 1800
"""

T = TypeVar("T")


def busy_scenario() -> str:
    """``bench-busy``: ``busy-call``'s turns three times over, then its goodbye."""
    busy = builtin_scenarios()["busy-call"].model_dump(mode="json", exclude_none=True)
    turns, goodbye = busy["steps"][:-1], busy["steps"][-1]
    busy |= {
        "name": SCENARIO,
        "description": "busy-call's turns three times over (~30 min), for long load runs.",
        "steps": turns * 3 + [goodbye],
    }
    return yaml.safe_dump(busy, sort_keys=False)


def _say(text: str) -> None:
    print(f"runner_density: {text}", file=sys.stderr, flush=True)


def _emulator_pid(emu: EmulatorHandle) -> int | None:
    """The spawned emulator's process (a child of this one, serving ``emu``'s port)."""
    port = str(urlsplit(emu.base_url).port).encode()
    for pid in children(os.getpid()):
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if b"emulator" in argv and port in argv:
                return pid
    return None


def _window(
    pids: dict[str, int | None], window_s: float, read: Callable[[], T]
) -> tuple[T, T, Window]:
    """``read()`` at both ends of a window of ``window_s``, with each process's CPU share."""
    samplers = {name: CpuSampler(pid) for name, pid in pids.items() if pid is not None}
    with contextlib.ExitStack() as stack:
        for sampler in samplers.values():
            stack.enter_context(sampler)
        first = read()
        started, (busy0, all0) = time.time(), machine_cpu_s()
        time.sleep(window_s)  # the measurement itself: the bench stays idle meanwhile
        ended, (busy1, all1) = time.time(), machine_cpu_s()
        last = read()
    elapsed = ended - started
    window: Window = {
        "window_s": elapsed,
        "loadavg_1m": os.getloadavg()[0],
        "machine_cpu_busy_cores": (busy1 - busy0) / elapsed,
        "machine_cpu_busy_share": (busy1 - busy0) / (all1 - all0) if all1 > all0 else None,
    }
    for name, sampler in samplers.items():
        window[f"{name}_cpu_share"] = sampler.between(started, ended) / elapsed
    return first, last, window


def _place(bench: SessionBench, count: int) -> list[str]:
    """``count`` busy calls, placed evenly over ``SPREAD_S`` at least."""
    started, calls = time.monotonic(), []
    for i in range(count):
        time.sleep(max(0.0, started + i * SPREAD_S / count - time.monotonic()))  # pacing
        calls.append(bench.place_call(SCENARIO))
    return calls


def _per_call(window: Window, calls: int, rss_empty: int) -> Window:
    """CPU, memory and event figures per call of a measured window."""
    events_per_s = window["events_per_s"]
    cpu_pct = window["cpu_share"] * 100
    return window | {
        "calls": calls,
        "rss_empty_mb": rss_empty / 2**20,
        "rss_mb": window["rss_bytes"] / 2**20,
        "rss_per_call_kb": (window["rss_bytes"] - rss_empty) / calls / 1024,
        "cpu_per_call_pct": cpu_pct / calls,
        "cpu_pct_per_1k_events_per_s": cpu_pct / (events_per_s / 1000) if events_per_s else None,
        "events_per_s_per_call": events_per_s / calls,
    }


def _runner_window(
    runner: RunnerUnderTest, emu_pid: int | None, calls: int, rss_empty: int, window_s: float
) -> Window:
    pids = {"runner": runner.pid, "emulator": emu_pid}
    before, after, window = _window(pids, window_s, runner.scrape)
    window["cpu_share"] = window.pop("runner_cpu_share")
    window["rss_bytes"] = rss_bytes(runner.pid)
    window["events_per_s"] = (events(after) - events(before)) / window["window_s"]
    window["held_at_end"] = runner.held()
    window["loop_lag"] = lag_window(before, after, TARGET_LAG_S)
    return _per_call(window, calls, rss_empty)


# Phases ------------------------------------------------------------------------------


def _idle_phase(bench: SessionBench, count: int, window_s: float, emu_pid: int | None) -> Window:
    """RSS per idle call in a runner of its own, which then drains and exits."""
    runner = RunnerUnderTest.start(bench, "bench-idle", "--capacity", str(count + 10), *RUNNER_ARGS)
    runner.warm_up(bench, SCENARIO)
    rss_empty = rss_bytes(runner.pid)
    _say(f"idle: empty runner {rss_empty / 2**20:.1f} MB; placing {count} silent calls")
    calls = [bench.place_call(IDLE_SCENARIO) for _ in range(count)]
    try:
        bench.wait_attached(calls, timeout_s=120.0)
        runner.wait_held(count, "idle calls held")
        time.sleep(SETTLE_S)
        idle = _runner_window(runner, emu_pid, count, rss_empty, window_s)
    finally:
        hang_up(bench, calls)
        ended = True
        try:
            runner.wait_empty("idle calls to end")
        except TimeoutError:
            ended = False
        runner.child.stop(signal.SIGTERM, timeout_s=30.0)
        hold_back(bench, calls)  # a call it gave back is over: none is left for the next runner
    idle["ended_cleanly"] = ended
    _say(f"idle: {idle['rss_per_call_kb']:.1f} KB per idle call")
    return idle


def _sdk_phase(
    bench: SessionBench, count: int, window_s: float, emu_pid: int | None
) -> tuple[Window, SdkCalls, list[str]]:
    """The baseline's window; returns it, the still-running process and its calls."""
    warm = bench.place_call(SCENARIO)
    hold_back(bench, [warm])
    sdk = SdkCalls(
        bench.emu.api_url,
        API_KEY,
        bench.stack.workdir / "sdk-calls.txt",
        bench.stack.log_dir / "sdk-calls.log",
        warm_up=warm,
        lag_sample_s=LAG_SAMPLE_S,
    )
    try:
        hang_up(bench, [warm])
        rss_empty = rss_bytes(sdk.pid)
        _, _, empty = _window({"sdk": sdk.pid}, min(window_s, EMPTY_WINDOW_S), lambda: None)
        _say(f"baseline: empty SDK process {rss_empty / 2**20:.1f} MB; placing {count} calls")
        calls = [bench.place_call(SCENARIO) for _ in range(count)]
        hold_back(bench, calls)
        sdk.go(calls, SPREAD_S)
        bench.wait_attached(calls, timeout_s=120.0)
        sdk.wait_open(count)
        time.sleep(SETTLE_S)
        before, after, window = _window({"sdk": sdk.pid, "emulator": emu_pid}, window_s, sdk.count)
    except BaseException:
        sdk.stop()
        raise
    window["cpu_share"] = window.pop("sdk_cpu_share")
    window["rss_bytes"] = rss_bytes(sdk.pid)
    window["events_per_s"] = (after["events"] - before["events"]) / (after["at"] - before["at"])
    window["held_at_end"] = after["open"]
    window["failed"] = after["failed"]
    window["last_error"] = after["last_error"]
    window["loop_lag"] = lag_window(parse(before["lag"]), parse(after["lag"]), TARGET_LAG_S)
    window["empty_cpu_share"] = empty["sdk_cpu_share"]
    baseline = _per_call(window, count, rss_empty)
    _say(
        f"baseline: CPU {baseline['cpu_share']:.0%}, "
        f"{baseline['events_per_s_per_call']:.1f} events/s per call"
    )
    return baseline, sdk, calls


def _runner_phase(
    bench: SessionBench,
    steps: tuple[int, ...],
    window_s: float,
    emu_pid: int | None,
    sdk: SdkCalls,
    sdk_calls: list[str],
) -> tuple[list[Window], int]:
    """The runner's steps, the first on the baseline's calls; and its empty RSS."""
    try:
        capacity = str(max(steps) + 100)
        runner = RunnerUnderTest.start(bench, "bench-density", "--capacity", capacity, *RUNNER_ARGS)
        runner.warm_up(bench, SCENARIO)
        rss_empty = rss_bytes(runner.pid)
        _, _, empty = _window({"runner": runner.pid}, min(window_s, EMPTY_WINDOW_S), lambda: None)
    finally:
        released_at = time.monotonic()
        sdk.stop()
    queue(bench, sdk_calls)  # the very calls the baseline held, now the runner's
    calls = list(sdk_calls)
    measured: list[Window] = []
    previous: Window | None = None
    for target in steps:
        calls += _place(bench, target - len(calls))
        try:
            bench.wait_attached(calls, timeout_s=120.0)
            runner.wait_held(target, "calls held")
        except TimeoutError as exc:
            measured.append({"calls": target, "error": str(exc).splitlines()[0]})
            break
        attached_s = time.monotonic() - released_at
        if previous is None:
            reattached = sum(len(bench.truth(c)["attachments"]) >= 2 for c in sdk_calls)
        time.sleep(SETTLE_S)
        step = _runner_window(runner, emu_pid, target, rss_empty, window_s)
        step["empty_cpu_share"] = empty["runner_cpu_share"]
        if previous is None:  # the baseline's calls, now attached a second time
            step["baseline_calls_reattached"] = reattached
            step["reattached_within_s"] = attached_s
        if previous is not None:
            grown = step["rss_bytes"] - previous["rss_bytes"]
            step["rss_per_added_call_kb"] = grown / (target - previous["calls"]) / 1024
        measured.append(step)
        previous = step
        _say(
            f"runner, {target} calls: CPU {step['cpu_share']:.0%}, "
            f"lag p99 <= {step['loop_lag']['p99_bound_ms']:g} ms, "
            f"{step['events_per_s_per_call']:.1f} events/s per call; "
            f"emulator CPU {step.get('emulator_cpu_share', float('nan')):.0%}, "
            f"machine {step['machine_cpu_busy_cores']:.2f} cores busy"
        )
        if step["cpu_share"] > SATURATED:
            break
    runner.child.stop(signal.SIGKILL)
    return measured, rss_empty


def run(window_s: float, steps: tuple[int, ...] = STEPS, idle_calls: int = IDLE_CALLS) -> Report:
    command = f"python -m bench runner_density --window {window_s:g}"
    if steps != STEPS or idle_calls != IDLE_CALLS:
        command = (
            f"python -m bench.runner_density --window {window_s:g} "
            f"--steps {','.join(map(str, steps))} --idle-calls {idle_calls}"
        )
    report = Report("runner_density", "Live calls per session-runner process", command)
    scenarios = {SCENARIO: busy_scenario(), IDLE_SCENARIO: IDLE_CALL}
    with session_bench("runner_density", spawned=True, extra_scenarios=scenarios) as bench:
        emu_pid = _emulator_pid(bench.emu)
        idle = _idle_phase(bench, idle_calls, window_s, emu_pid)
        sdk, sdk_process, sdk_calls = _sdk_phase(bench, steps[0], window_s, emu_pid)
        measured, rss_empty = _runner_phase(bench, steps, window_s, emu_pid, sdk_process, sdk_calls)
    first = density_figures.baseline_step(measured, sdk)
    reference_rate = sdk["events_per_s_per_call"]
    density_figures.judge(measured, reference_rate)
    density_figures.add_figures(report, measured, sdk, idle, reference_rate, SCENARIO)
    report.details = {
        "scenario": SCENARIO,
        "idle_scenario": IDLE_SCENARIO,
        "lag_sample_s": LAG_SAMPLE_S,
        "runner_rss_empty_mb": rss_empty / 2**20,
        "steps": measured,
        "sdk_baseline": sdk,
        "idle": idle,
        "emulator_cpu_measured": emu_pid is not None,
        "cpu_per_call_above_empty_pct": {
            "runner": _above_empty(first),
            "sdk": _above_empty(sdk),
        },
    }
    report.notes += [
        f"The baseline holds the first step's {steps[0]} calls before the runner does; "
        "the runner then re-attaches to the same calls: same calls, same scenario, "
        "compared per call and per 1,000 events/s received. Both processes sample their "
        "loop lag at the same period (the same cost); each one's CPU with no call is its "
        "empty_cpu_share (the runner's includes its leases, heartbeat and sweep loops).",
        "The loop-lag p99 is the bound of the histogram bucket it falls in (an upper "
        "bound); 10 ms is a bucket edge, so its pass/fail is exact. The runners sample "
        f"their lag every {LAG_SAMPLE_S:g} s here (default 0.25 s).",
        "RSS per active call is a mean (RSS growth over calls held); the target is a p99 "
        "(<= 1 MB): a mean above 1 MB fails it for sure, one below does not prove it.",
        "A step counts only if every call is still held, the runner's CPU is below "
        f"{SATURATED:.0%} and the calls get >= {density_figures.RATE_KEPT:.0%} of the "
        "event rate the baseline received on them; each window's details give the "
        "emulator's CPU share and the whole machine's (machine_cpu_busy_share: other "
        "work on a shared machine shows there).",
    ]
    density_figures.plot(report, measured, sdk, idle)
    return report


def _above_empty(window: Window | None) -> float | None:
    """CPU per call (% of a core) once the process's CPU with no call is taken off."""
    if window is None:
        return None
    above: float = (window["cpu_share"] - window["empty_cpu_share"]) * 100 / window["calls"]
    return above


def _steps(text: str) -> tuple[int, ...]:
    try:
        steps = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of numbers: {text!r}"
        ) from None
    if steps[0] < 1 or list(steps) != sorted(set(steps)):
        raise argparse.ArgumentTypeError(f"steps must be positive and increasing: {text!r}")
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.runner_density", description=__doc__)
    parser.add_argument(
        "--window",
        type=float,
        default=float(os.environ.get("BENCH_WINDOW_S", DEFAULT_WINDOW_S)),
        help="seconds of steady measurement per phase (default 30, or $BENCH_WINDOW_S)",
    )
    parser.add_argument(
        "--steps",
        type=_steps,
        default=STEPS,
        help=f"live calls at each runner step, increasing (default {','.join(map(str, STEPS))})",
    )
    parser.add_argument(
        "--idle-calls",
        type=int,
        default=IDLE_CALLS,
        help=f"silent calls held for the idle memory figure (default {IDLE_CALLS})",
    )
    args = parser.parse_args()
    if args.window <= 0 or args.idle_calls < 1:
        parser.error("--window and --idle-calls must be positive")
    report = run(args.window, args.steps, args.idle_calls)
    report.details.setdefault("window_s", args.window)
    report.save()


if __name__ == "__main__":
    main()
