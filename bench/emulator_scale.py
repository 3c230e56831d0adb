"""Emulator capacity: calls placed per second, and live sidebands one emulator holds.

    python -m bench emulator_scale [--window 30]

The other benchmarks drive ``switchboard emulator``; this one shows it is never their
bottleneck. Each phase starts one ``switchboard emulator`` process on a free loopback
port, posting its webhooks to ``bench.webhook_sink`` (a bare asyncio server in its own
process that answers 200 and counts), and playing ``long-call``.

1. Placement: ``POST /_emulator/calls`` at increasing rates from a load process
   (``bench.emulator_load place``, open loop on keep-alive connections), each step for
   a fifth of the window (4 to 6 s). Per step: the achieved placement rate (answers 200
   over the time it took), the webhook delivery rate (webhooks the sink counted over
   the time from the first placement to the last delivery), the calls the emulator
   registered (its ledger), and, for a sample of the step's calls, its ground truth of
   the first delivery (status, and time from placement to the sink's answer). Before the
   next step every webhook must have arrived; the steps stop once the emulator falls
   behind. The sustained rate is the highest step at which both rates kept up (90 %).
2. Sidebands: a fresh emulator; a load process (``bench.emulator_load sidebands``)
   places 2,000 calls, accepts each over REST and attaches one plain ``websockets``
   client to each, reading every event. After a short settle they are held for the
   window: reported are the sockets still attached at its end (and those the emulator's
   ground truth shows open), the emulator's CPU share and RSS per sideband (RSS growth
   since start over the sidebands held: each call's ground truth included), and the
   events delivered per second.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import statistics
import sys
import time
from typing import Any

import httpx

from bench import plots
from bench.emulator_truth import ground_truths
from bench.procstat import CpuSampler, rss_bytes
from bench.report import Report, main_for
from bench.stack import API_KEY, WEBHOOK_SECRET, BenchStack
from bench.stats import latency_ms
from tests.support.ports import free_port
from tests.support.procs import Child, http_ok, spawn, switchboard_argv, wait_until

SCENARIO = "long-call"
PLACE_RATES = (250, 500, 750, 1000, 1500, 2000)
PLACE_TARGET = 500
SIDEBANDS = 2000
KEEP_UP = 0.9
"""A step is sustained when placement and delivery both reach this share of the offer
(a few seconds on a shared machine: the slack absorbs one stall, not a growing backlog)."""
CONNECTIONS = 32
DRAIN_TIMEOUT_S = 15.0
TRUTH_SAMPLE = 200
SETTLE_S = 3.0


def _emulator(stack: BenchStack, webhook_url: str, *args: str) -> tuple[Child, str]:
    """``switchboard emulator`` on a free port, stopped with the stack; it and its URL."""
    port = free_port()
    argv = switchboard_argv(
        "emulator", "--host", "127.0.0.1", "--port", str(port), "--webhook-url", webhook_url, *args
    )
    env = {"SWITCHBOARD_EMULATOR_API_KEY": API_KEY, "OPENAI_WEBHOOK_SECRET": WEBHOOK_SECRET}
    child = spawn(f"emulator-{port}", argv, stack.log_dir, env=env)
    stack.children.append(child)
    url = f"http://127.0.0.1:{port}"
    wait_until(http_ok(f"{url}/healthz"), 30.0, "emulator /healthz", child)
    return child, url


def _load(stack: BenchStack, name: str, *args: str) -> Child:
    argv = [sys.executable, "-m", "bench.emulator_load", *args]
    child = spawn(name, argv, stack.log_dir)
    stack.children.append(child)
    return child


def _finish(child: Child, timeout_s: float) -> None:
    wait_until(lambda: not child.alive(), timeout_s, f"{child.name} to finish")
    if child.proc.returncode != 0:
        raise RuntimeError(f"{child.name} failed:\n{child.tail()}")


def _get(url: str) -> dict[str, Any]:
    response = httpx.get(url, timeout=30.0)
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def _truth_sample(emu_url: str, call_ids: list[str]) -> dict[str, Any]:
    """The emulator's record of the first webhook delivery of up to TRUTH_SAMPLE calls."""
    stride = max(1, len(call_ids) // TRUTH_SAMPLE)
    sample = call_ids[::stride][:TRUTH_SAMPLE]
    truths = asyncio.run(ground_truths(emu_url, sample))
    delivered = 0
    lag_s = []
    for truth in truths:
        deliveries = truth["webhook_deliveries"]
        if deliveries and 200 <= (deliveries[0]["status"] or 0) < 300:
            delivered += 1
            first = deliveries[0]
            lag_s.append(first["sent_at"] + first["duration_ms"] / 1000 - truth["created_at"])
    return {"sampled": len(truths), "delivered_2xx": delivered, "webhook_lag": latency_ms(lag_s)}


def _placement_step(
    stack: BenchStack, emu: Child, emu_url: str, sink_url: str, rate: int, step_s: float
) -> dict[str, Any]:
    httpx.get(f"{sink_url}/reset", timeout=10.0).raise_for_status()
    calls_before = _get(f"{emu_url}/_emulator/ledger")["calls"]
    out = stack.workdir / f"place-{rate}.json"
    with CpuSampler(emu.proc.pid) as cpu:
        child = _load(
            stack, f"place-{rate}", "place", "--base-url", emu_url, "--rate", str(rate),
            "--duration", str(step_s), "--connections", str(CONNECTIONS),
            "--scenario", SCENARIO, "--out", str(out),
        )  # fmt: skip
        _finish(child, step_s * 20 + 30)
        load: dict[str, Any] = json.loads(out.read_text())
        placed = _get(f"{emu_url}/_emulator/ledger")["calls"] - calls_before
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while (sink := _get(f"{sink_url}/count"))["count"] < placed:
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        drained_at = time.time()
    delivered = sink["count"]
    place_s = load["ended_at"] - load["started_at"]
    deliver_s = (sink["last_at"] or 0.0) - load["started_at"]
    listing = _get(f"{emu_url}/_emulator/calls")["calls"][calls_before:]
    step: dict[str, Any] = {
        "offered_per_s": rate,
        "duration_s": step_s,
        "answered_200": load["ok"],
        "statuses": load["statuses"],
        "errors": load["errors"],
        "late_sends": load["late_sends"],
        "placed_per_s": load["ok"] / place_s if place_s > 0 else 0.0,
        "place_latency": load["latency"],
        "registered_by_emulator": placed,
        "webhooks_delivered": delivered,
        "webhooks_missing": placed - delivered,
        "delivered_per_s": delivered / deliver_s if deliver_s > 0 else 0.0,
        "emulator_cpu_share": cpu.between(load["started_at"], load["ended_at"]) / place_s,
        "emulator_cpu_us_per_call": (
            cpu.between(load["started_at"], drained_at) / placed * 1e6 if placed else 0.0
        ),
        "ground_truth": _truth_sample(emu_url, [c["call_id"] for c in listing]),
    }
    step["kept_up"] = (
        step["placed_per_s"] >= KEEP_UP * rate
        and step["delivered_per_s"] >= KEEP_UP * rate
        and step["webhooks_missing"] == 0
        and load["errors"] == 0
        and load["ok"] == load["completed"]
    )
    return step


def _placement(stack: BenchStack, sink_url: str, window_s: float) -> list[dict[str, Any]]:
    step_s = max(4.0, min(6.0, window_s / 5))
    emu, emu_url = _emulator(stack, f"{sink_url}/webhooks")
    steps = []
    for rate in PLACE_RATES:
        step = _placement_step(stack, emu, emu_url, sink_url, rate, step_s)
        steps.append(step)
        print(
            f"placement {rate}/s: placed {step['placed_per_s']:.0f}/s, "
            f"delivered {step['delivered_per_s']:.0f}/s",
            file=sys.stderr,
            flush=True,
        )
        if not step["kept_up"]:
            break
    emu.stop()
    return steps


def _open_in_truth(emu_url: str, call_ids: list[str]) -> int:
    truths = asyncio.run(ground_truths(emu_url, call_ids))
    return sum(
        1
        for t in truths
        if t["state"] == "active" and any(a["closed_at"] is None for a in t["attachments"])
    )


def _sidebands(stack: BenchStack, sink_url: str, window_s: float) -> dict[str, Any]:
    emu, emu_url = _emulator(stack, f"{sink_url}/webhooks", "--ring-timeout", "120")
    time.sleep(1.0)
    rss_empty = rss_bytes(emu.proc.pid)
    status = stack.workdir / "sidebands"
    status.mkdir()
    child = _load(
        stack, "sidebands", "sidebands", "--base-url", emu_url, "--api-key", API_KEY,
        "--calls", str(SIDEBANDS), "--scenario", SCENARIO, "--settle", str(SETTLE_S),
        "--window", str(window_s), "--status-dir", str(status),
    )  # fmt: skip
    attached_path, window_path = status / "attached.json", status / "window.json"
    wait_until(attached_path.exists, 200.0, "sidebands attached", child)
    attached: dict[str, Any] = json.loads(attached_path.read_text())
    print(f"sidebands attached: {attached['attached']}", file=sys.stderr, flush=True)
    with CpuSampler(emu.proc.pid) as cpu:
        wait_until(window_path.exists, SETTLE_S + window_s + 60.0, "sideband window", child)
    rss_held = rss_bytes(emu.proc.pid)
    window: dict[str, Any] = json.loads(window_path.read_text())
    open_in_truth = _open_in_truth(emu_url, attached["call_ids"])
    child.proc.send_signal(signal.SIGUSR1)
    _finish(child, 60.0)
    emu.stop()
    start, end = window["window_start"], window["window_end"]
    held = window["open_at_end"]
    return {
        "calls": SIDEBANDS,
        "attached": attached["attached"],
        "attach_failures": attached["failures"],
        "attach_s": attached["attach_s"],
        "attach_latency": attached["attach_latency"],
        "open_at_window_start": window["open_at_start"],
        "open_at_window_end": held,
        "open_in_ground_truth": open_in_truth,
        "closed_during_window_by_code": window["closed_during_window"],
        "window_started_at": start,
        "window_s": end - start,
        "events_in_window": window["events_in_window"],
        "events_per_s": window["events_per_s"],
        "events_per_s_per_sideband": window["events_per_s"] / held if held else 0.0,
        "emulator_cpu_share": cpu.between(start, end) / (end - start),
        "emulator_rss_empty_mb": rss_empty / 2**20,
        "emulator_rss_held_mb": rss_held / 2**20,
        "rss_per_sideband_kb": (rss_held - rss_empty) / held / 1024 if held else float("nan"),
        "timeline": window["timeline"],
    }


def _plot(report: Report, steps: list[dict[str, Any]], hold: dict[str, Any]) -> None:
    fig, (left, right) = plots.figure("emulator_scale", 2)
    offered = [s["offered_per_s"] for s in steps]
    left.plot(offered, offered, color="grey", linestyle=":", label="offered")
    left.plot(offered, [s["placed_per_s"] for s in steps], marker="o", label="placed (REST 200)")
    left.plot(
        offered, [s["delivered_per_s"] for s in steps], marker="s", label="webhooks delivered"
    )
    left.axhline(PLACE_TARGET, color="red", linestyle="--", label=f"target {PLACE_TARGET}/s")
    left.set_ylim(bottom=0)
    left.set_xlabel("offered calls/s")
    left.set_ylabel("achieved per second")
    left.set_title("Call placement, one emulator")
    left.legend(fontsize=8)
    timeline = hold["timeline"]
    t0 = timeline[0]["t"]
    ts = [p["t"] - t0 for p in timeline]
    window_from = hold["window_started_at"] - t0
    right.axvspan(
        window_from, window_from + hold["window_s"], color="grey", alpha=0.12, label="window"
    )
    right.axhline(SIDEBANDS, color="red", linestyle="--", label=f"target {SIDEBANDS:,}")
    right.plot(
        ts, [p["open"] for p in timeline], color="tab:blue", linewidth=2.5, label="sidebands open"
    )
    right.set_ylim(0, SIDEBANDS * 1.15)
    right.set_xlabel("seconds since all were attached")
    right.set_ylabel("open sidebands")
    rates = right.twinx()
    pairs = [(a, b) for a, b in itertools.pairwise(timeline) if b["t"] - a["t"] >= 0.5]
    rates.plot(
        [b["t"] - t0 for _, b in pairs],
        [(b["events"] - a["events"]) / (b["t"] - a["t"]) for a, b in pairs],
        color="tab:green",
        label="events/s delivered",
    )
    rates.set_ylim(bottom=0)
    rates.set_ylabel("events/s", color="tab:green")
    right.set_title(f"{SIDEBANDS:,} sidebands held ({SCENARIO})")
    handles, labels = right.get_legend_handles_labels()
    more_handles, more_labels = rates.get_legend_handles_labels()
    rates.legend(handles + more_handles, labels + more_labels, fontsize=8, loc="lower left")
    report.plot = plots.save(fig, "emulator_scale")


def run(window_s: float) -> Report:
    report = Report(
        "emulator_scale",
        "Emulator capacity: calls placed per second and sidebands held",
        f"python -m bench emulator_scale --window {window_s:g}",
    )
    with BenchStack("emulator_scale") as stack:
        _, sink_url = stack.python_server("bench.webhook_sink")
        steps = _placement(stack, sink_url, window_s)
        hold = _sidebands(stack, sink_url, window_s)
    sustained = max((s["offered_per_s"] for s in steps if s["kept_up"]), default=0)
    report.add(
        "calls placed/s sustained (REST answered and webhook delivered)",
        sustained,
        "calls/s",
        ">=",
        PLACE_TARGET,
    )
    report.add("REST placement, peak achieved", max(s["placed_per_s"] for s in steps), "calls/s")
    report.add(
        "webhook delivery, peak achieved", max(s["delivered_per_s"] for s in steps), "webhooks/s"
    )
    cpu_per_call = statistics.median(s["emulator_cpu_us_per_call"] for s in steps)
    report.add("emulator CPU per placed call (REST + webhook)", cpu_per_call, "us")
    report.add(
        "webhooks not delivered", sum(s["webhooks_missing"] for s in steps), "webhooks", "==", 0
    )
    report.add(
        "sidebands attached at the end of the window",
        hold["open_at_window_end"],
        "sidebands",
        ">=",
        SIDEBANDS,
    )
    report.add("emulator CPU share holding them", hold["emulator_cpu_share"] * 100, "% of a core")
    report.add("emulator RSS per sideband", hold["rss_per_sideband_kb"], "KB")
    report.add("events delivered", hold["events_per_s"], "events/s")
    report.details = {
        "scenario": SCENARIO,
        "placement_steps": steps,
        "sidebands": {k: v for k, v in hold.items() if k != "timeline"},
    }
    report.notes.append(
        "The emulator, the load process and the webhook sink share the machine's cores; "
        "the rates are what one emulator process reached beside them."
    )
    _plot(report, steps, hold)
    return report


if __name__ == "__main__":
    main_for(run)
