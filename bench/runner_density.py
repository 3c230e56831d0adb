"""Runner density: live calls one ``switchboard runner`` holds at a realistic event rate.

    python -m bench runner_density [--window 30]

The emulator (its own process) plays ``busy-call``: a turn every ~5 s, each turn a burst
of VAD, transcription deltas, response and usage events, ~10 events/s per call (the
target's realistic rate). Calls are added in steps; at each step,
once every call is attached, the runner's CPU share, RSS and event-loop lag (its own
``switchboard_runner_event_loop_lag_seconds`` histogram, p99 as a bucket bound) are
measured over the window. The steps go on until the runner's CPU is saturated.

Baseline, same run and same emulator traffic: the first step's number of fresh calls
held the straightforward way (``bench.sdk_calls``: one ``openai`` SDK
``realtime.connect(call_id=...)`` per call in one process, answering tool calls), with
CPU and memory per call compared to the runner's at that step.
"""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import httpx

from bench import plots
from bench.procstat import CpuSampler, rss_bytes
from bench.report import Report, main_for
from bench.session_bench import SessionBench, session_bench
from bench.stack import API_KEY
from tests.support.ports import free_port

STEPS = (200, 500, 1000, 2000)
SCENARIO = "busy-call"
SETTLE_S = 5.0
LAG_METRIC = "switchboard_runner_event_loop_lag_seconds"
EVENTS_METRIC = "switchboard_session_events_total"


def _scrape(url: str) -> dict[str, float]:
    samples: dict[str, float] = {}
    for line in httpx.get(url, timeout=10.0).text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def _lag_p99_s(before: dict[str, float], after: dict[str, float]) -> tuple[float, int]:
    """The bucket bound under which 99 % of the window's lag samples fall, and the count."""
    buckets = []
    for name, value in after.items():
        if name.startswith(LAG_METRIC + "_bucket"):
            bound_text = name.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float(bound_text), value - before.get(name, 0.0)))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0.0
    for bound, count in buckets:
        if total and count >= 0.99 * total:
            return bound, int(total)
    return float("nan"), int(total)


def _events(samples: dict[str, float]) -> float:
    return sum(v for k, v in samples.items() if k.startswith(EVENTS_METRIC))


def _measure(pid: int, window_s: float, metrics_url: str | None) -> dict[str, Any]:
    before = _scrape(metrics_url) if metrics_url else {}
    with CpuSampler(pid) as sampler:
        started = time.time()
        time.sleep(window_s)
        ended = time.time()
    after = _scrape(metrics_url) if metrics_url else {}
    result: dict[str, Any] = {
        "cpu_share": sampler.between(started, ended) / (ended - started),
        "rss_bytes": rss_bytes(pid),
    }
    if metrics_url:
        lag_p99, lag_samples = _lag_p99_s(before, after)
        result |= {
            "loop_lag_p99_ms": lag_p99 * 1000,
            "loop_lag_samples": lag_samples,
            "events_per_s": (_events(after) - _events(before)) / (ended - started),
        }
    return result


def _place(bench: SessionBench, count: int) -> list[str]:
    return [bench.place_call(SCENARIO) for _ in range(count)]


def _runner_steps(bench: SessionBench, window_s: float) -> tuple[list[dict[str, Any]], int]:
    metrics_port = free_port()
    runner = bench.stack.runner(
        "bench-density", "--capacity", str(max(STEPS) + 100), "--metrics-port", str(metrics_port)
    )
    time.sleep(2.0)
    rss_empty = rss_bytes(runner.proc.pid)
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    steps: list[dict[str, Any]] = []
    calls: list[str] = []
    for target in STEPS:
        calls += _place(bench, target - len(calls))
        try:
            bench.wait_attached(calls, timeout_s=120.0)
        except TimeoutError as exc:
            steps.append({"calls": target, "error": str(exc)})
            break
        time.sleep(SETTLE_S)
        step = {"calls": target} | _measure(runner.proc.pid, window_s, url)
        step["rss_per_call_kb"] = (step["rss_bytes"] - rss_empty) / target / 1024
        step["cpu_per_call_pct"] = step["cpu_share"] * 100 / target
        steps.append(step)
        if step["cpu_share"] > 0.95:
            break
    runner.stop(9)
    return steps, rss_empty


def _sdk_baseline(bench: SessionBench, count: int, window_s: float) -> dict[str, Any]:
    calls = _place(bench, count)
    listing = bench.stack.workdir / "sdk-calls.txt"
    listing.write_text("\n".join(calls))
    argv = [
        sys.executable, "-m", "bench.sdk_calls",
        "--base-url", bench.emu.api_url, "--api-key", API_KEY, "--calls", str(listing),
    ]  # fmt: skip
    log = (bench.stack.log_dir / "sdk-calls.log").open("wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    try:
        time.sleep(1.0)
        rss_empty = rss_bytes(proc.pid)
        bench.wait_attached(calls, timeout_s=120.0)
        time.sleep(SETTLE_S)
        step = {"calls": count} | _measure(proc.pid, window_s, None)
        step["rss_per_call_kb"] = (step["rss_bytes"] - rss_empty) / count / 1024
        step["cpu_per_call_pct"] = step["cpu_share"] * 100 / count
        return step
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run(window_s: float) -> Report:
    report = Report(
        "runner_density",
        "Live calls per session-runner process",
        f"python -m bench runner_density --window {window_s:g}",
    )
    with session_bench("runner_density", spawned=True) as bench:
        steps, _ = _runner_steps(bench, window_s)
        baseline = _sdk_baseline(bench, STEPS[0], window_s)
    good = [
        s
        for s in steps
        if "error" not in s and s["loop_lag_p99_ms"] <= 10 and s["cpu_share"] <= 0.95
    ]
    best = good[-1] if good else None
    first = steps[0] if steps and "error" not in steps[0] else None
    report.add(
        "live calls held with loop lag p99 <= 10 ms",
        best["calls"] if best else 0,
        "calls",
        ">=",
        2000,
    )
    if best:
        report.add(
            f"loop lag p99 at {best['calls']} calls", best["loop_lag_p99_ms"], "ms", "<=", 10
        )
        report.add(f"CPU share at {best['calls']} calls", best["cpu_share"] * 100, "% of a core")
        report.add(f"events/s at {best['calls']} calls", best["events_per_s"], "events/s")
        report.add(
            f"RSS per active call at {best['calls']} calls",
            best["rss_per_call_kb"],
            "KB",
            "<=",
            1024,
        )
    if first:
        cpu_ratio = baseline["cpu_per_call_pct"] / max(first["cpu_per_call_pct"], 1e-9)
        mem_ratio = baseline["rss_per_call_kb"] / max(first["rss_per_call_kb"], 1e-9)
        report.add(f"SDK baseline / runner, CPU per call at {first['calls']} calls", cpu_ratio, "x")
        report.add(
            f"SDK baseline / runner, memory per call at {first['calls']} calls", mem_ratio, "x"
        )
    report.details = {"scenario": SCENARIO, "steps": steps, "sdk_baseline": baseline}
    report.notes.append(
        "RSS per call is measured on active busy-call calls (a turn every ~5 s); the "
        "idle figure (<= 100 KB) is not measured separately."
    )
    fig, (left, right) = plots.figure("runner_density", 2)
    measured = [s for s in steps if "error" not in s]
    xs = [s["calls"] for s in measured]
    left.plot(xs, [s["loop_lag_p99_ms"] for s in measured], marker="o", label="loop lag p99 (ms)")
    left.plot(xs, [s["cpu_share"] * 100 for s in measured], marker="s", label="CPU (% of a core)")
    left.axhline(10, color="red", linestyle="--", label="lag target 10 ms")
    left.set_xlabel("live calls in one runner")
    left.set_title("Runner under load")
    left.legend(fontsize=8)
    labels = ["runner", "SDK baseline"]
    if first:
        right.bar(labels, [first["rss_per_call_kb"], baseline["rss_per_call_kb"]])
    right.set_ylabel(f"RSS per call at {STEPS[0]} calls (KB)")
    right.set_title("Memory per call")
    report.plot = plots.save(fig, "runner_density")
    return report


if __name__ == "__main__":
    main_for(run)
