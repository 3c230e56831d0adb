"""Every operator verb against a running ``switchboard up`` (two runners, the emulator),
with the emulator's ground truth as the judge, and every error path's exit code."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml
from typer.testing import CliRunner

from shared.commands import CommandQueue
from shared.models import CallState
from shared.store import CallStore
from switchboard.cli import app
from tests.support.cluster_data import make_call
from tests.support.ports import free_port
from tests.support.procs import REPO, switchboard_argv, wait_until
from tests.support.up_stack import UpStack, clean_env, cli, cli_json, running_up

pytestmark = [pytest.mark.system, pytest.mark.timeout(90)]

HUMAN = "sip:agent@pbx.example.com"
DEMO_POLICY = REPO / "shared" / "demo_policy.yaml"


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpStack]:
    with running_up(tmp_path_factory.mktemp("operator"), "--runners", "2") as stack:
        wait_until(lambda: len(stack.runner_ids()) == 2, 20.0, "two runners", stack.child)
        yield stack


def live_call(up: UpStack, scenario: str = "long-call") -> str:
    """A call placed through the emulator, answered, and held by a runner."""
    call_id = up.place_call(scenario)

    def held() -> bool:
        record = up.record(call_id)
        return record is not None and record.state.value == "active" and bool(record.owner)

    wait_until(held, 20.0, f"{call_id} active on a runner", up.child)
    return call_id


def refused(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    """The one stderr line of a refused verb."""
    assert result.returncode == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_list_show_and_stats_see_a_live_call(up: UpStack) -> None:
    call_id = live_call(up)
    listed = {c["id"]: c for c in cli_json("calls", "list", cwd=up.cwd)["calls"]}
    assert listed[call_id]["state"] == "active"
    table = cli("calls", "list", cwd=up.cwd)
    assert table.returncode == 0
    assert call_id in table.stdout

    record = cli_json("calls", "show", call_id, cwd=up.cwd)
    required = {"id", "state", "profile", "from", "to", "accepted_at", "ended_at", "end_reason"}
    assert required | {"cost_usd", "usage"} <= set(record)
    assert (record["id"], record["profile"], record["from"]) == (call_id, "support", "+14155550100")
    assert record["to"] == "+18005550100"
    assert record["ended_at"] is None
    assert record["runner"] in {r["id"] for r in cli_json("runners", "list", cwd=up.cwd)["runners"]}
    shown = cli("calls", "show", call_id, cwd=up.cwd)
    assert shown.returncode == 0
    assert "active" in shown.stdout

    stats = cli_json("stats", cwd=up.cwd)
    assert stats["active_calls"] >= 1
    assert stats["calls_by_state"]["active"] >= 1
    assert stats["runners"]["alive"] == 2
    assert stats["setup_latency_s"]["p50"] is not None
    text = cli("stats", cwd=up.cwd)
    assert text.returncode == 0
    assert "active calls" in text.stdout


def test_say_then_transfer_reach_the_api_and_end_the_call(up: UpStack) -> None:
    call_id = live_call(up)
    said = cli("calls", "say", call_id, "Please hold the line.", "--wait", "10", cwd=up.cwd)
    assert said.returncode == 0, said.stderr
    assert "done" in said.stdout

    def spoken() -> bool:
        truth = httpx.get(f"{up.emulator}/_emulator/calls/{call_id}", timeout=5).json()
        received: list[dict[str, Any]] = truth["events_received"]
        return any(
            e.get("type") == "response.create" and "Please hold the line." in json.dumps(e)
            for e in received
        )

    wait_until(spoken, 10.0, "the say command's response.create")

    moved = cli_json("calls", "transfer", call_id, "human", "--wait", "10", cwd=up.cwd)
    assert (moved["status"], moved["kind"], moved["call_id"]) == ("done", "transfer", call_id)
    wait_until(lambda: up.emulator_call(call_id)["state"] == "ended", 10.0, "the refer")
    assert up.emulator_call(call_id)["refer_target"] == HUMAN

    wait_until(lambda: getattr(up.record(call_id), "terminal", False), 10.0, "the record to end")
    record = cli_json("calls", "show", call_id, cwd=up.cwd)
    assert record["end_reason"] == "transferred"
    assert "is ended" in refused(cli("calls", "say", call_id, "hello?", cwd=up.cwd))
    assert "is ended" in refused(cli("calls", "hangup", call_id, cwd=up.cwd))


def test_tail_follows_the_call_until_an_operator_hangs_it_up(up: UpStack) -> None:
    call_id = live_call(up)
    out = up.cwd / f"tail-{call_id}.txt"
    with out.open("w") as sink:
        tail = subprocess.Popen(
            switchboard_argv("calls", "tail", call_id),
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=clean_env(),
            cwd=up.cwd,
        )
    try:
        # The greeting's transcript line arrives while the tail is following.
        wait_until(lambda: " agent: " in out.read_text(), 15.0, "tail to show the greeting")
        hung_up = cli("calls", "hangup", call_id, "--wait", "10", cwd=up.cwd)
        assert hung_up.returncode == 0, hung_up.stderr
        assert tail.wait(timeout=15) == 0
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.wait()
    lines = out.read_text().splitlines()
    assert lines[-1] == f"call {call_id} ended: operator_hangup"
    assert any("* attached kind=first" in line for line in lines)
    assert any("* ended reason=operator_hangup" in line for line in lines)
    assert up.emulator_call(call_id)["ended_by"] == "hangup"


def test_refusals_and_usage_errors_have_their_exit_codes(
    up: UpStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    call_id = live_call(up, "order-status")
    unreachable = clean_env(SWITCHBOARD_REDIS_URL=f"redis://:pw-secret@127.0.0.1:{free_port()}/0")
    cases: list[tuple[list[str], Path, dict[str, str] | None, str]] = [
        (["calls", "show", "rtc_nobody"], up.cwd, None, "no such call"),
        (["calls", "tail", "rtc_nobody"], up.cwd, None, "no such call"),
        (["calls", "say", "rtc_nobody", "hi"], up.cwd, None, "no such call"),
        (["calls", "hangup", "rtc_nobody"], up.cwd, None, "no such call"),
        (["calls", "transfer", "rtc_nobody", "human"], up.cwd, None, "no such call"),
        (["calls", "show", "rtc_{braces}"], up.cwd, None, "no such call"),
        (["calls", "transfer", call_id, "not a target"], up.cwd, None, "unknown transfer target"),
        (["calls", "transfer", call_id, "http://x"], up.cwd, None, "unknown transfer target"),
        (["calls", "say", call_id, "  "], up.cwd, None, "non-empty"),
        (["runners", "drain", "nobody"], up.cwd, None, "no such runner"),
        (["calls", "list"], up.cwd, unreachable, "unreachable"),
        (["stats"], up.cwd, unreachable, "unreachable"),
        (["runners", "list"], up.cwd, unreachable, "unreachable"),
        (["calls", "hangup", "x"], up.cwd, unreachable, "unreachable"),
        # A second up in the same directory would take the first one's up.json.
        (["up"], up.cwd, None, "already running"),
        # No SWITCHBOARD_REDIS_URL and no up.json here: nothing to talk to.
        (["calls", "list"], tmp_path, None, "no cluster"),
    ]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda c: cli(*c[0], cwd=c[1], env=c[2]), cases))
    for (args, _, _, reason), result in zip(cases, results, strict=True):
        line = refused(result)
        assert reason in line, (args, line)
        assert "pw-secret" not in line
    assert cli_json("calls", "show", call_id, cwd=up.cwd)["state"] == "active"
    assert (up.cwd / ".switchboard" / "up.json").exists()

    # An id that would name one of a real runner's other keys is a usage error.
    runner_id = sorted(up.runner_ids())[0]
    for suffix in (":commands", ":calls"):
        line = refused(cli("runners", "drain", runner_id + suffix, cwd=up.cwd), 2)
        assert line.startswith(f"error: invalid runner id {runner_id + suffix!r}"), line
    assert all(not r["draining"] for r in cli_json("runners", "list", cwd=up.cwd)["runners"])

    # Usage errors are the parser's: in process, against the same stack.
    monkeypatch.chdir(up.cwd)
    runner = CliRunner()
    for usage in (
        ["calls", "show"],
        ["calls", "transfer", call_id],
        ["calls", "list", "--state", "bogus"],
        ["calls", "frobnicate"],
        ["runners", "drain"],
        ["stats", "--bogus"],
        ["calls", "say", call_id, "hi", "--wait", "-1"],
        ["up", "--runners", "-1"],
        ["runner", "--id", "r1:calls"],
    ):
        assert runner.invoke(app, usage).exit_code == 2, usage


def test_list_by_state_transfer_to_a_uri_and_tail_json(up: UpStack, tmp_path: Path) -> None:
    call_id = live_call(up)
    active = cli_json("calls", "list", "--state", "active", cwd=up.cwd)["calls"]
    assert call_id in {c["id"] for c in active}
    assert {c["state"] for c in active} == {"active"}
    ringing = cli_json("calls", "list", "--state", "incoming", "--state", "accepting", cwd=up.cwd)
    assert call_id not in {c["id"] for c in ringing["calls"]}
    assert {c["state"] for c in ringing["calls"]} <= {"incoming", "accepting"}

    # From any directory, with nothing but the Redis URL (no up.json there).
    only_url = clean_env(SWITCHBOARD_REDIS_URL=str(up.info["redis_url"]))
    shown = cli("calls", "show", call_id, "--json", cwd=tmp_path, env=only_url)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["state"] == "active"
    assert not (tmp_path / ".switchboard").exists()

    out = tmp_path / "tail.jsonl"
    with out.open("w") as sink:
        tail = subprocess.Popen(
            switchboard_argv("calls", "tail", call_id, "--json"),
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=clean_env(),
            cwd=up.cwd,
        )
    desk = "sip:desk@pbx.example.com"
    try:
        wait_until(lambda: '"transcript"' in out.read_text(), 15.0, "tail --json to follow")
        moved = cli("calls", "transfer", call_id, desk, "--wait", "10", cwd=up.cwd)
        assert moved.returncode == 0, moved.stderr
        assert tail.wait(timeout=15) == 0
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.wait()
    assert up.emulator_call(call_id)["refer_target"] == desk
    entries = [json.loads(line) for line in out.read_text().splitlines()]
    assert entries[-1] == {"stream": "end", "state": "ended", "end_reason": "transferred"}
    assert {e["stream"] for e in entries[:-1]} == {"transcript", "events"}
    assert any(e["stream"] == "events" and e.get("type") == "attached" for e in entries)
    assert all(isinstance(e["at"], float) for e in entries[:-1])

    assert "is ended" in refused(cli("calls", "transfer", call_id, "human", cwd=up.cwd))


def test_wait_reports_a_refusal_or_no_answer_on_stderr(up: UpStack, tmp_path: Path) -> None:
    # This operator's policy names a target the cluster's policy does not know: the command
    # line queues it, the runner refuses it.
    policy = yaml.safe_load(DEMO_POLICY.read_text())
    policy["transfer_targets"]["desk"] = "sip:desk@pbx.example.com"
    policy["profiles"]["support"]["transfer_targets"].append("desk")
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(policy))
    call_id = live_call(up)
    with_desk = clean_env(SWITCHBOARD_CONFIG=str(policy_file))
    for extra in ([], ["--json"]):
        args = ["calls", "transfer", call_id, "desk", "--wait", "10", *extra]
        result = cli(*args, cwd=up.cwd, env=with_desk)
        line = refused(result)
        assert line.startswith("error: transfer refused by the call's runner:"), line
        assert "unknown transfer target 'desk'" in line
        if extra:
            document = json.loads(result.stdout)
            assert (document["status"], document["call_id"]) == ("failed", call_id)
        else:
            assert result.stdout == ""
    assert up.emulator_call(call_id)["refer_target"] is None
    assert cli_json("calls", "show", call_id, cwd=up.cwd)["state"] == "active"
    assert cli("calls", "hangup", call_id, cwd=up.cwd).returncode == 0

    # A live call no runner holds: the command waits in its stream, unanswered.
    client = redis.Redis.from_url(str(up.info["redis_url"]), decode_responses=True)
    try:
        make_call(client, "rtc_unheld")
        unanswered = cli("calls", "say", "rtc_unheld", "hello?", "--wait", "1", cwd=up.cwd)
        line = refused(unanswered)
        assert "no answer from the call's runner within 1s" in line
        assert unanswered.stdout == ""
        assert len(CommandQueue(client).read_commands("rtc_unheld")) == 1
    finally:
        CallStore(client).transition("rtc_unheld", CallState.ACTIVE, CallState.ENDED, {})
        client.close()


def test_runners_list_and_drain_hands_the_calls_to_the_other_runner(up: UpStack) -> None:
    runners = cli_json("runners", "list", cwd=up.cwd)["runners"]
    assert len(runners) == 2
    assert all(r["alive"] and not r["draining"] and r["capacity"] > 0 for r in runners)
    assert all(r["heartbeat_age_s"] < 5 for r in runners)
    call_ids = [live_call(up), live_call(up)]
    owners = {cli_json("calls", "show", c, cwd=up.cwd)["runner"] for c in call_ids}
    busiest = max(runners, key=lambda r: sum(1 for o in owners if o == r["id"]))
    table = cli("runners", "list", cwd=up.cwd)
    assert busiest["id"] in table.stdout

    drained = cli_json("runners", "drain", busiest["id"], cwd=up.cwd)
    assert drained == {"runner_id": busiest["id"], "draining": True}

    def handed_over() -> bool:
        holders = {getattr(up.record(c), "owner", None) for c in call_ids}
        return busiest["id"] not in up.runner_ids() | holders

    wait_until(handed_over, 20.0, "the drained runner to hand over and leave", up.child)
    (other,) = (r["id"] for r in cli_json("runners", "list", cwd=up.cwd)["runners"])
    assert other != busiest["id"]
    for call_id in call_ids:
        record = cli_json("calls", "show", call_id, cwd=up.cwd)
        assert (record["state"], record["runner"]) == ("active", other)
        assert up.emulator_call(call_id)["state"] == "active"
    # The stack lives on without the drained runner; up says what happened.
    assert up.child.alive()
    wait_until(lambda: "was drained" in up.output(), 10.0, "up to report the drain")
    up.child.proc.send_signal(signal.SIGINT)
    assert up.child.proc.wait(timeout=12) == 0
