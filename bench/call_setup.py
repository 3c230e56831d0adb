"""Call setup, our side: webhook in -> accept request received by the (emulated) API.

    python -m bench call_setup [--window 30]

The real path: the emulator sends the signed ``realtime.call.incoming`` webhook to one
``switchboard ingress``; the ingress records the call and queues it; a Celery control
worker (``switchboard worker -Q control -P threads -c 4``) runs admission and the
routing policy and sends ``POST /v1/realtime/calls/{id}/accept`` to the emulator, which
adds no latency. Calls are placed at 50 and then 200 calls/s for the window each.
Accepted calls are taken off the runners' pending list and ended by a stand-in for the
runners (``bench.call_taker``), so that the control worker's recovery sweep does not
see a backlog of accepted calls no runner takes, which grows all through the run.

The threads pool: in the same run conditions it spent ~3.7 ms of worker CPU per call
against ~5.2 ms for 4 prefork processes (parent plus children), and at 100 calls/s
kept p99 near 30 ms where prefork reached ~200 ms. Four threads rather than eight: at
200 calls/s, in alternating runs, eight spent ~3.2-3.9 ms of worker CPU per call and
three or four ~2.4-3.6 ms (more threads, more handing the GIL around), with lower
latencies as well; two or three prefork processes did no better.

Beside the latencies, the CPU each process spent per call placed during the window
(and the settling after it): ingress, control worker (with its pool processes),
emulator, Redis, and this process, which places the calls (``open_loop`` requests on
keep-alive connections) and runs the stand-in for the runners.

Two clocks, both read on this machine (``time.time()``):
- our side (the target): the ingress's receive time in the call record (``created_at``)
  -> the emulator's ``accepted_at``;
- end to end: the emulator's webhook send time -> ``accepted_at``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import Any

from bench import plots
from bench.call_taker import CallTaker
from bench.emulator_truth import first_delivery_at, ground_truths, place_calls
from bench.procstat import child_running, tree_cpu_s
from bench.report import Report, main_for
from bench.stack import BenchStack
from bench.stats import latency_ms
from shared import keys

RATES_PER_S = (50, 200)
WARMUP_S = 3.0
SETTLE_S = 5.0
WORKER_POOL = "threads"
WORKER_CONCURRENCY = 4
WORKER_LOGLEVEL = "warning"


def _setup_times(
    truths: list[dict[str, Any]], created: dict[str, float]
) -> tuple[list[float], list[float], int]:
    ours, end_to_end, missing = [], [], 0
    for truth in truths:
        accepted_at = truth.get("accepted_at")
        sent_at = first_delivery_at(truth)
        received_at = created.get(truth["call_id"])
        if accepted_at is None or sent_at is None or received_at is None:
            missing += 1
            continue
        ours.append(accepted_at - received_at)
        end_to_end.append(accepted_at - sent_at)
    return ours, end_to_end, missing


def _cpu(processes: dict[str, int | None]) -> dict[str, float]:
    """CPU seconds used so far by each process (with its children), and by this one."""
    used = {name: tree_cpu_s(pid) for name, pid in processes.items() if pid is not None}
    used["benchmark (placer, runner stand-in)"] = time.process_time()
    return used


def _cpu_ms_per_call(
    before: dict[str, float], after: dict[str, float], calls: int
) -> dict[str, float]:
    per_call = {name: (after[name] - before[name]) * 1000 / max(1, calls) for name in after}
    per_call["total"] = sum(per_call.values())
    return {name: round(ms, 3) for name, ms in per_call.items()}


def run(window_s: float) -> Report:
    report = Report(
        "call_setup",
        "Call setup: webhook in -> accept request sent",
        f"python -m bench call_setup --window {window_s:g}",
    )
    results: dict[int, dict[str, Any]] = {}
    samples: dict[str, list[float]] = {}
    with BenchStack("call_setup") as stack, contextlib.ExitStack() as taking:
        stack.start_redis()
        rdb = stack.rdb()
        taking.enter_context(CallTaker(stack.redis_url))
        ingress, ingress_url = stack.ingress()
        emu = stack.emulator(f"{ingress_url}/webhooks/openai", "--ring-timeout", "60")
        worker = stack.worker("control", WORKER_CONCURRENCY, WORKER_LOGLEVEL, WORKER_POOL)
        processes = {
            "ingress": ingress.proc.pid,
            "control worker": worker.proc.pid,
            "emulator": child_running(os.getpid(), " emulator "),
            "redis": stack.children[0].proc.pid,
        }
        for rate in RATES_PER_S:
            asyncio.run(place_calls(emu.base_url, rate, WARMUP_S, "quick-question"))
            before = _cpu(processes)
            placed = asyncio.run(place_calls(emu.base_url, rate, window_s, "quick-question"))
            time.sleep(SETTLE_S)
            cpu_ms = _cpu_ms_per_call(before, _cpu(processes), len(placed))
            truths = asyncio.run(ground_truths(emu.base_url, placed))
            pipe = rdb.pipeline(transaction=False)
            for call_id in placed:
                pipe.hget(keys.call_record(call_id), "created_at")
            created = {
                c: float(v) for c, v in zip(placed, pipe.execute(), strict=True) if v is not None
            }
            ours, end_to_end, missing = _setup_times(truths, created)
            results[rate] = {
                "placed": len(placed),
                "not_accepted": missing,
                "ours": latency_ms(ours),
                "end_to_end": latency_ms(end_to_end),
                "cpu_ms_per_call": cpu_ms,
            }
            samples[f"{rate} calls/s"] = ours
    for rate, result in results.items():
        target_p50, target_p99 = (5, 20) if rate == 200 else (None, None)
        op = "<=" if rate == 200 else None
        report.add(f"p50 at {rate} calls/s", result["ours"]["p50_ms"], "ms", op, target_p50)
        report.add(f"p99 at {rate} calls/s", result["ours"]["p99_ms"], "ms", op, target_p99)
        report.add(
            f"calls not accepted at {rate} calls/s", result["not_accepted"], "calls", "==", 0
        )
    report.details = {
        "worker_pool": WORKER_POOL,
        "worker_concurrency": WORKER_CONCURRENCY,
        "worker_loglevel": WORKER_LOGLEVEL,
        "rates": results,
    }
    fig, axes = plots.figure("call_setup", 1)
    plots.latency_cdf(axes[0], samples, "Call setup (ingress receive -> accept)", 20)
    report.plot = plots.save(fig, "call_setup")
    return report


if __name__ == "__main__":
    main_for(run)
