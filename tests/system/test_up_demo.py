"""``switchboard up --demo`` end to end: simulated calls are served, the operator's view of
the cluster reconciles with the emulator's ground truth, and Ctrl-C stops everything."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.support.procs import wait_until
from tests.support.up_stack import cli_json, running_up, survivors

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


def test_the_demo_serves_calls_reconciles_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    args = ["--demo", "--calls-per-second", "3", "--duration", "3", "--time-scale", "0.02"]
    with running_up(tmp_path, *args) as up:
        token = str(up.info["admin_token"])
        # While calls are live, every call the cluster lists is one the emulator placed.
        seen: set[str] = set()

        def listed_calls_are_real() -> bool:
            ids = {call["id"] for call in cli_json("calls", "list", cwd=tmp_path)["calls"]}
            seen.update(ids)
            for call_id in ids:
                assert up.emulator_call(call_id)["call_id"] == call_id
            return bool(seen)

        wait_until(listed_calls_are_real, 15.0, "a live call in `calls list`", up.child)

        def all_calls_done() -> bool:
            ledger = up.ledger()
            live = sum(ledger["by_state"].get(state, 0) for state in LIVE)
            return bool(ledger["calls"] >= 9 and live == 0)

        wait_until(all_calls_done, 20.0, "9 calls placed, answered and finished", up.child)
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
        assert not (tmp_path / ".switchboard" / "up.json").exists()
        output = up.output()
        # Not a terminal: the live view prints plain lines instead of redrawing.
        assert "| calls/min " in output
        assert "stopped in" in output
        assert token not in output
        for log in (tmp_path / ".switchboard" / "logs").iterdir():
            assert token not in log.read_text(errors="replace"), log.name
