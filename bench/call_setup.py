"""Call setup, our side: webhook in -> accept request received by the (emulated) API.

    python -m bench call_setup [--window 30]

The real path: the emulator sends the signed ``realtime.call.incoming`` webhook to one
``switchboard ingress``; the ingress records the call and queues it; a Celery control
worker (``switchboard worker -Q control -P threads -c 8``) runs admission and the
routing policy and sends ``POST /v1/realtime/calls/{id}/accept`` to the emulator, which
adds no latency. Calls are placed at 50 and then 200 calls/s for the window each.

The threads pool: in the same run conditions it spent ~3.7 ms of worker CPU per call
against ~5.2 ms for 4 prefork processes (parent plus children), and at 100 calls/s
kept p99 near 30 ms where prefork reached ~200 ms.

Two clocks, both read on this machine (``time.time()``):
- our side (the target): the ingress's receive time in the call record (``created_at``)
  -> the emulator's ``accepted_at``;
- end to end: the emulator's webhook send time -> ``accepted_at``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench import plots
from bench.emulator_truth import first_delivery_at, ground_truths, place_calls
from bench.report import Report, main_for
from bench.stack import BenchStack
from bench.stats import latency_ms
from shared import keys

RATES_PER_S = (50, 200)
WARMUP_S = 3.0
SETTLE_S = 5.0
WORKER_POOL = "threads"
WORKER_CONCURRENCY = 8
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


def run(window_s: float) -> Report:
    report = Report(
        "call_setup",
        "Call setup: webhook in -> accept request sent",
        f"python -m bench call_setup --window {window_s:g}",
    )
    results: dict[int, dict[str, Any]] = {}
    samples: dict[str, list[float]] = {}
    with BenchStack("call_setup") as stack:
        stack.start_redis()
        rdb = stack.rdb()
        _, ingress_url = stack.ingress()
        emu = stack.emulator(f"{ingress_url}/webhooks/openai", "--ring-timeout", "60")
        stack.worker("control", WORKER_CONCURRENCY, WORKER_LOGLEVEL, WORKER_POOL)
        for rate in RATES_PER_S:
            asyncio.run(place_calls(emu.base_url, rate, WARMUP_S, "quick-question"))
            placed = asyncio.run(place_calls(emu.base_url, rate, window_s, "quick-question"))
            time.sleep(SETTLE_S)
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
