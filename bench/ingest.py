"""Webhook ingest: signed webhooks/s into one ingress process, and p50/p99 at 70 % of it.

    python -m bench ingest [--window 30]

One ``switchboard ingress`` on a real Redis, and beside it (same run, same server kind:
uvicorn on uvloop with the HTTP implementation uvicorn picks) a bare Starlette route that
only answers 200: the ceiling. Load comes from two generator processes
(``bench.webhook_load``) holding keep-alive connections and pre-signed requests:

1. peak of the bare route (closed loop),
2. peak of the ingress (closed loop, every webhook a new call),
3. the ingress at 70 % of its peak (open loop; latency from each request's due time).

The ingress's CPU seconds per webhook during its peak are reported too.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import uvicorn.config

from bench import plots
from bench.procstat import CpuSampler
from bench.report import Report, main_for
from bench.stack import WEBHOOK_SECRET, BenchStack
from bench.stats import latency_ms

GENERATORS = 2
CONNECTIONS = 24
"""Per generator: enough to keep the server busy, few enough to stay lean."""
WARMUP_S = 3.0
SIGN_RATE_PER_S = 6_000
"""Webhooks signed per generator per second of window (the ingress peak stays below)."""


@dataclass
class Phase:
    """Merged results of the generators of one phase."""

    completed: int
    rate_per_s: float
    latencies_s: list[float]
    statuses: dict[str, int]
    errors: int
    started_at: float


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def run_generators(
    stack: BenchStack, url: str, mode: str, kind: str, window_s: float, rate_per_s: float = 0.0
) -> Phase:
    """Run the generator processes to completion and merge what they measured."""
    procs, outs = [], []
    for n in range(GENERATORS):
        out = stack.workdir / f"load-{kind}-{mode}-{n}.json"
        argv = [
            sys.executable, "-m", "bench.webhook_load",
            "--port", str(_port(url)), "--mode", mode, "--kind", kind,
            "--connections", str(CONNECTIONS), "--duration", str(window_s),
            "--warmup", str(WARMUP_S), "--rate", str(rate_per_s / GENERATORS),
            "--count", str(int(SIGN_RATE_PER_S * (window_s + WARMUP_S))),
            "--secret", WEBHOOK_SECRET, "--out", str(out),
        ]  # fmt: skip
        log = (stack.log_dir / f"load-{kind}-{mode}-{n}.log").open("wb")
        procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT))
        log.close()
        outs.append(out)
    deadline = time.monotonic() + window_s * 3 + 120
    for proc in procs:
        try:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
        if proc.returncode != 0:
            raise RuntimeError(f"load generator failed (see {stack.log_dir})")
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    completed = errors = 0
    started_at = 0.0
    for out in outs:
        data = json.loads(Path(out).read_text())
        completed += data["completed"]
        started_at = max(started_at, data["started_at"])
        errors += data["errors"]
        latencies += data["latencies_s"]
        for status, count in data["statuses"].items():
            statuses[status] = statuses.get(status, 0) + count
    return Phase(completed, completed / window_s, latencies, statuses, errors, started_at)


def http_implementation() -> str:
    """What uvicorn's ``http="auto"`` resolves to in this environment."""
    return "httptools" if uvicorn.config.HTTP_PROTOCOLS["auto"] and _has_httptools() else "h11"


def _has_httptools() -> bool:
    try:
        import httptools  # noqa: F401
    except ImportError:
        return False
    return True


def run(window_s: float) -> Report:
    report = Report(
        "ingest",
        "Webhook ingest into one ingress process",
        f"python -m bench ingest --window {window_s:g}",
    )
    with BenchStack("ingest") as stack:
        stack.start_redis()
        rdb = stack.rdb()
        ingress, ingress_url = stack.ingress()
        _, bare_url = stack.python_server("bench.bare_server")
        bare = run_generators(stack, bare_url, "closed", "bare", window_s)
        with CpuSampler(ingress.proc.pid) as sampler:
            peak = run_generators(stack, ingress_url, "closed", "webhook", window_s)
        cpu_used = sampler.between(peak.started_at, peak.started_at + window_s)
        calls_recorded = sum(1 for _ in rdb.scan_iter("*call*", count=10_000))
        rdb.flushall()
        steady_rate = 0.7 * peak.rate_per_s
        steady = run_generators(stack, ingress_url, "open", "webhook", window_s, steady_rate)
    steady_ms = latency_ms(steady.latencies_s)
    report.add("ingress peak", peak.rate_per_s, "webhooks/s", ">=", 5000)
    report.add("p50 at 70 % of peak", steady_ms["p50_ms"], "ms")
    report.add("p99 at 70 % of peak", steady_ms["p99_ms"], "ms", "<=", 10)
    report.add("bare Starlette route peak (ceiling)", bare.rate_per_s, "req/s")
    report.add("ingress / ceiling", peak.rate_per_s / bare.rate_per_s, "ratio")
    report.add("ingress CPU per webhook at peak", cpu_used / max(1, peak.completed) * 1e6, "us")
    report.details = {
        "http": http_implementation(),
        "generators": GENERATORS,
        "connections_per_generator": CONNECTIONS,
        "bare": {"rate_per_s": bare.rate_per_s, "statuses": bare.statuses},
        "peak": {
            "rate_per_s": peak.rate_per_s,
            "statuses": peak.statuses,
            "errors": peak.errors,
            "latency": latency_ms(peak.latencies_s),
            "redis_keys_matching_call": calls_recorded,
        },
        "steady": {
            "offered_rate_per_s": steady_rate,
            "achieved_rate_per_s": steady.rate_per_s,
            "statuses": steady.statuses,
            "errors": steady.errors,
            "latency": steady_ms,
        },
    }
    fig, (left, right) = plots.figure("ingest", 2)
    plots.bars(
        left,
        {"bare route": bare.rate_per_s, "ingress": peak.rate_per_s},
        "Peak rate, one process",
        "requests/s",
        5000,
    )
    plots.latency_cdf(
        right, {f"ingress at {steady_rate:,.0f}/s": steady.latencies_s}, "Response time", 10
    )
    report.plot = plots.save(fig, "ingest")
    return report


if __name__ == "__main__":
    main_for(run)
