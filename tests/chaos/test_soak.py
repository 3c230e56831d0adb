"""Soak: a steady load of live calls for a while, faults injected at random, then the
reconciliation over every call and the runners' memory growth.

``make soak``: 10 minutes at 300 concurrent calls (``SWITCHBOARD_SOAK_S=600``,
``SWITCHBOARD_SOAK_CALLS=300``); ``make test`` runs 60 s at 30 concurrent calls, which
is what this 2-core machine carries next to the rest of the suite. The figures go to
``tests/chaos/results/last_soak.json`` (``last_soak_short.json`` for runs under 5 min).

Faults drawn at random every few seconds: REST 5xx and 429 storms, sideband drops,
duplicated and delayed webhooks, malformed sideband events, a runner SIGKILLed (and a
new one started), and in the long soak only, Redis SIGKILLed and restarted. A Celery
worker is not killed here: ``test_process_faults`` does that.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.chaos.conftest import RESULTS
from tests.support.chaos_stack import ChaosStack, StackOptions, chaos_stack
from tests.support.reconcile import reconcile, wait_settled, wait_slots_free

DURATION_S = float(os.environ.get("SWITCHBOARD_SOAK_S", "60"))
CONCURRENCY = int(os.environ.get("SWITCHBOARD_SOAK_CALLS", "30"))
SETTLE_S = 240.0
SCENARIOS = ("steady-call", "steady-order", "quick-question", "order-status", "transfer-to-human")
TIMED_FAULTS = {
    "rest_5xx_storm": {"rest_5xx_rate": 0.3},
    "rest_429_storm": {"rest_429_rate": 0.3},
    "sideband_drops": {"ws_drop_rate": 0.01},
    "webhook_duplicates": {"webhook_duplicate_rate": 0.5},
    "webhook_delays": {"webhook_delay_ms": 400.0},
    "malformed_events": {"malformed_event_rate": 0.05},
}
KINDS = [*TIMED_FAULTS, "runner_sigkill", *(["redis_restart"] if DURATION_S >= 300 else [])]
"""Redis restarts only in the long soak (``test_process_faults`` restarts it on its own)."""
NO_FAULTS = {name: 0.0 for fault in TIMED_FAULTS.values() for name in fault}

pytestmark = [pytest.mark.soak, pytest.mark.timeout(int(DURATION_S + SETTLE_S + 420))]


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def runner_rss(stack: ChaosStack) -> dict[str, int | None]:
    return {rid: rss_kib(child.proc.pid) for rid, child in stack.runners.items() if child.alive()}


def inject(stack: ChaosStack, kind: str) -> None:
    if kind in TIMED_FAULTS:
        stack.emulator.set_faults(**TIMED_FAULTS[kind])
    elif kind == "runner_sigkill":
        victim = random.choice(sorted(stack.runners))
        stack.kill_runner(victim)
        stack.runners.pop(victim)
        stack.start_runner()
    elif kind == "redis_restart":
        stack.restart_redis(signal.SIGKILL)


def test_soak(tmp_path: Path) -> None:
    rng = random.Random(int(os.environ.get("SWITCHBOARD_SOAK_SEED", "1")))
    time_scale = 0.1 if CONCURRENCY <= 50 else 0.2
    options = StackOptions(
        runners=2,
        workers=1,
        worker_concurrency=2,
        max_calls=CONCURRENCY * 2,
        time_scale=time_scale,
        ring_timeout_s=20.0,
    )
    with chaos_stack(tmp_path / "soak", options) as stack:
        emu = stack.emulator
        assert emu.app is not None
        registry = emu.app.state.ctx.registry
        rss_start = runner_rss(stack)
        faults: Counter[str] = Counter()
        placed: list[str] = []
        started = time.monotonic()
        next_fault_at = started + 5.0
        fault_on = False
        while time.monotonic() - started < DURATION_S:
            for _ in range(min(20, CONCURRENCY - registry.live_count())):
                placed.append(stack.place(rng.choice(SCENARIOS)))
            now = time.monotonic()
            if now >= next_fault_at:
                if fault_on:
                    emu.set_faults(**NO_FAULTS)
                    fault_on = False
                    next_fault_at = now + rng.uniform(2.0, 5.0)
                else:
                    kind = rng.choice(KINDS)
                    inject(stack, kind)
                    faults[kind] += 1
                    fault_on = kind in TIMED_FAULTS
                    next_fault_at = time.monotonic() + rng.uniform(3.0, 6.0)
            time.sleep(0.1)
        emu.set_faults(**NO_FAULTS)
        rss_end = runner_rss(stack)
        rdb = stack.client()
        try:
            unsettled = wait_settled(emu, rdb, placed, SETTLE_S)
            wait_slots_free(rdb, 10.0)
            result = reconcile(emu, rdb, placed, recorder=stack.recorder, whole_cluster=True)
        finally:
            rdb.close()
        figures = {
            "duration_s": DURATION_S,
            "target_concurrent_calls": CONCURRENCY,
            "time_scale": time_scale,
            "runners": 2,
            "faults_injected": dict(faults),
            "unsettled_after_s": {"seconds": SETTLE_S, "calls": len(unsettled)},
            **result.as_json(),
            "runner_rss_kib": {
                rid: {"start": rss_start.get(rid), "end": rss_end.get(rid)}
                for rid in sorted(set(rss_start) | set(rss_end))
            },
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        RESULTS.mkdir(parents=True, exist_ok=True)
        name = "last_soak.json" if DURATION_S >= 300 else "last_soak_short.json"
        (RESULTS / name).write_text(json.dumps(figures, indent=2) + "\n")

    assert sum(faults.values()) > 0
    result.assert_clean()
    assert result.accounted == result.placed == len(placed)
