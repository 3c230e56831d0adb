"""``switchboard up --demo`` end to end: simulated calls are served, the operator's view of
the cluster reconciles with the emulator's ground truth, and Ctrl-C stops everything."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.support.procs import wait_until
from tests.support.up_stack import UpStack, cli_json, running_up, survivors

pytestmark = [pytest.mark.system, pytest.mark.timeout(120)]

USAGE_FIELDS = (
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "input_text_tokens",
    "input_audio_tokens",
    "cached_tokens",
    "cached_text_tokens",
    "cached_audio_tokens",
    "output_text_tokens",
    "output_audio_tokens",
)
LIVE = ("ringing", "active")
OVER = ("ended", "rejected")
"""Emulator states after which the cluster must no longer list a call. A ``missed`` call
(the caller gave up while it rang) stays listed until routing finds the caller gone."""
SERVED_WITHIN_S = 20.0
"""From starting ``up`` to every simulated call accepted and completed."""


def emulator_calls(up: UpStack) -> dict[str, str]:
    """Call id -> state of every call the emulator has seen."""
    response = httpx.get(f"{up.emulator}/_emulator/calls", timeout=5)
    return {c["call_id"]: c["state"] for c in response.json()["calls"]}


def test_the_demo_serves_calls_reconciles_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    args = ["--demo", "--calls-per-second", "3", "--duration", "3", "--time-scale", "0.02"]
    started = time.monotonic()
    with running_up(tmp_path, *args) as up:
        token = str(up.info["admin_token"])
        (redis_dir,) = (tmp_path / ".switchboard").glob("redis-*")
        deadline = started + SERVED_WITHIN_S
        # While calls are live, `calls list` and the emulator agree on which are. Both move,
        # so the list, read between two readings of the emulator, must hold every call live
        # at both and only calls the emulator knows and had not ended at the first.
        seen: set[str] = set()

        def list_agrees_with_the_emulator() -> bool:
            before = emulator_calls(up)
            listed = {call["id"] for call in cli_json("calls", "list", cwd=tmp_path)["calls"]}
            after = emulator_calls(up)
            live_throughout = {c for c, state in before.items() if state in LIVE} & {
                c for c, state in after.items() if state in LIVE
            }
            possible = {c for c in after if before.get(c) not in OVER}
            assert live_throughout <= listed, (live_throughout - listed, before, after)
            assert listed <= possible, (listed - possible, before, after)
            seen.update(listed)
            return bool(listed)

        wait_until(
            list_agrees_with_the_emulator,
            deadline - time.monotonic(),
            "a live call in `calls list`",
            up.child,
        )

        def all_calls_done() -> bool:
            ledger = up.ledger()
            live = sum(ledger["by_state"].get(state, 0) for state in LIVE)
            return bool(ledger["calls"] >= 9 and live == 0)

        wait_until(
            all_calls_done,
            deadline - time.monotonic(),
            f"9 calls placed, answered and finished within {SERVED_WITHIN_S:g}s of start",
            up.child,
        )
        ledger = up.ledger()
        assert ledger["by_state"].get("ended", 0) >= 5, ledger
        assert ledger["defects"] == 0, ledger

        # Runners write the last usage after the call ends; wait until the books close.
        def books_closed() -> bool:
            stats = cli_json("stats", cwd=tmp_path)
            return bool(stats["tokens"]["total_tokens"] == ledger["usage"]["total_tokens"])

        wait_until(books_closed, 10.0, "stats to account for every response", up.child)
        stats = cli_json("stats", cwd=tmp_path)
        assert {f: stats["tokens"][f] for f in USAGE_FIELDS} == ledger["usage"]
        assert stats["responses"] == ledger["responses"]
        ended = dict(stats["outcomes"]["ended"])
        # A caller who hung up while it rang is "missed" for the emulator; for us the call
        # ended before it could be answered.
        assert ended.pop("caller_gone", 0) == ledger["by_state"].get("missed", 0)
        assert sum(ended.values()) == ledger["by_state"]["ended"]
        assert ended.get("transferred", 0) == ledger["ended_by"].get("refer", 0)
        assert ended.get("caller_hangup", 0) == ledger["ended_by"].get("caller", 0)
        assert stats["active_calls"] == 0
        assert stats["cost_usd"] > 0
        # Setup latency is the cluster's, not only that of the calls still live.
        accepted = sum(stats["outcomes"]["accepted"].values())
        assert stats["setup_latency_s"]["calls"] == accepted >= ledger["by_state"]["ended"] > 0
        assert 0 < stats["setup_latency_s"]["p50"] <= stats["setup_latency_s"]["p99"]
        assert stats["runners"]["alive"] == 1
        assert cli_json("calls", "list", cwd=tmp_path)["calls"] == []

        # One call in detail: the record's usage is the emulator's usage of that call.
        for call_id in sorted(seen)[:3]:
            record = cli_json("calls", "show", call_id, cwd=tmp_path)
            truth = up.emulator_call(call_id)
            assert record["state"] in ("ended", "rejected", "failed")
            assert record["usage"].get("total_tokens", 0) == truth["usage"]["total_tokens"]
            assert record["ended_at"] is not None
            if truth["state"] == "ended":
                assert record["accepted_at"] is not None
                assert record["end_reason"] not in (None, "caller_gone")
            else:
                assert (truth["state"], record["end_reason"]) == ("missed", "caller_gone")

        # Ctrl-C: everything drains and stops within 10 s, exit 0, nothing left behind.
        started = time.monotonic()
        up.child.proc.send_signal(signal.SIGINT)
        code = up.child.proc.wait(timeout=12)
        elapsed = time.monotonic() - started
        assert code == 0, up.output()
        assert elapsed < 10.0
        assert survivors(up.child_pids) == []
        assert [pid for pid in up.child_pids if Path(f"/proc/{pid}").exists()] == []
        assert not (tmp_path / ".switchboard" / "up.json").exists()
        # The embedded Redis's private directory goes with it.
        assert not redis_dir.exists()
        assert list((tmp_path / ".switchboard").glob("redis-*")) == []
        output = up.output()
        # Not a terminal: the live view prints plain lines instead of redrawing.
        assert "| calls/min " in output
        assert "stopped in" in output
        assert token not in output
        for log in (tmp_path / ".switchboard" / "logs").iterdir():
            assert token not in log.read_text(errors="replace"), log.name
