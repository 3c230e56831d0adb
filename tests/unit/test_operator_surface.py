"""Pieces of the operator surface that need no running stack: finding the cluster, the
banner of ``up``, the lines of ``calls tail`` and the call document."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from ingress.admin_documents import call_document
from shared.models import CallRecord
from shared.runner_registry import valid_runner_id
from switchboard.call_tail import entry_json, entry_line
from switchboard.cluster import ClusterAddress, ClusterUnavailable, locate, write_up_file
from switchboard.runner_command import new_runner_id
from switchboard.up import Stack, StackAddresses, UpOptions
from switchboard.up_command import banner


def test_the_environment_wins_over_up_json(tmp_path: Path) -> None:
    up = tmp_path / "up.json"
    write_up_file(up, {"redis_url": "redis://127.0.0.1:1/0", "pid": os.getpid()})
    found = locate({"SWITCHBOARD_REDIS_URL": "redis://10.0.0.5:6380/2"}, up)
    assert found == ClusterAddress("redis://10.0.0.5:6380/2", "SWITCHBOARD_REDIS_URL")
    assert locate({}, up) == ClusterAddress("redis://127.0.0.1:1/0", str(up))
    assert os.stat(up).st_mode & 0o777 == 0o600


def test_no_cluster_and_a_stale_up_json_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ClusterUnavailable, match="no cluster"):
        locate({}, tmp_path / "up.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ClusterUnavailable, match="no cluster"):
        locate({}, tmp_path / "bad.json")
    gone = tmp_path / "gone.json"
    # A pid far above any pid_max: no such process.
    write_up_file(gone, {"redis_url": "redis://127.0.0.1:1/0", "pid": 2**30})
    with pytest.raises(ClusterUnavailable, match="stale"):
        locate({}, gone)


@pytest.mark.parametrize(
    ("url", "where"),
    [
        ("redis://:secret@db.example.com:6380/0", "db.example.com:6380"),
        ("rediss://user:pw@10.1.2.3/1", "10.1.2.3:6379"),
        ("unix:///run/redis.sock", "/run/redis.sock"),
    ],
)
def test_where_never_shows_credentials(url: str, where: str) -> None:
    assert ClusterAddress(url, "x").where == where


def addresses(emulator: str | None) -> StackAddresses:
    return StackAddresses(
        redis_url="redis://:hunter2@127.0.0.1:6379/0",
        ingress_url="http://127.0.0.1:8080",
        emulator_url=emulator,
        webhook_url="http://127.0.0.1:8080/webhooks/openai",
        metrics_urls={"ingress": "http://127.0.0.1:8080/metrics"},
        admin_url="http://127.0.0.1:8080/v1",
        admin_token="tok-very-secret",
        pid=1,
        children={},
    )


def test_the_real_api_banner_says_what_to_register(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj_abc")
    stack = Stack(UpOptions(state_dir=tmp_path), environ={"OPENAI_API_KEY": "sk-x"})
    text = "\n".join(banner(stack, addresses(None), "https://sb.example.com/"))
    assert "https://sb.example.com/webhooks/openai" in text
    assert "sip:proj_abc@sip.api.openai.com;transport=tls" in text
    assert "realtime.call.incoming" in text
    assert "hunter2" not in text
    assert "tok-very-secret" not in text

    monkeypatch.delenv("OPENAI_PROJECT_ID")
    text = "\n".join(banner(stack, addresses(None), None))
    assert "sip:$PROJECT_ID@sip.api.openai.com;transport=tls" in text
    assert "<public address of this ingress>" in text


def test_the_emulator_banner_names_the_ledger(tmp_path: Path) -> None:
    stack = Stack(UpOptions(demo=True, state_dir=tmp_path), environ={"OPENAI_API_KEY": "sk-x"})
    assert stack.uses_emulator  # the demo's callers are simulated: never the real API
    text = "\n".join(banner(stack, addresses("http://127.0.0.1:8100"), None))
    assert "http://127.0.0.1:8100 (ledger /_emulator/ledger)" in text
    assert "transport=tls" not in text


def test_tail_lines() -> None:
    at = time.mktime((2026, 1, 2, 3, 4, 5, 0, 0, -1))
    line = entry_line("transcript", "1-0", {"role": "caller", "text": "Hi there", "at": str(at)})
    assert line == "03:04:05 caller: Hi there"
    event = {"type": "ended", "at": str(at), "reason": "transferred", "detail": "sip:a@b"}
    assert entry_line("events", "1-1", event) == (
        "03:04:05 * ended reason=transferred detail=sip:a@b"
    )
    assert json.loads(entry_json("events", "1-1", event)) == {
        "stream": "events",
        "id": "1-1",
        "type": "ended",
        "at": at,
        "reason": "transferred",
        "detail": "sip:a@b",
    }
    assert entry_line("events", "2-0", {"type": "x", "at": "garbage"}) == "- * x"


def test_the_call_document_has_the_documented_fields() -> None:
    record = CallRecord.model_validate(
        {
            "id": "rtc_1",
            "state": "ended",
            "from": "+1415",
            "to": "+1800",
            "profile": "support",
            "created_at": 100.0,
            "accepted_at": 100.5,
            "ended_at": 130.5,
            "end_reason": "caller_hangup",
            "cost_usd": "0.1234567",
            "usage": {"input_tokens": 5},
            "caller_turns": "3",
        }
    )
    document = call_document(record, now_s=999.0)
    assert document["duration_s"] == 30.0  # accept to end, not to "now"
    assert document["cost_usd"] == pytest.approx(0.1234567)
    assert document["caller_turns"] == 3
    assert {"id", "state", "profile", "from", "to", "accepted_at", "ended_at"} <= set(document)
    assert {"end_reason", "cost_usd", "usage"} <= set(document)
    json.dumps(document)  # plain JSON all the way down


@pytest.mark.parametrize(
    ("runner_id", "valid"),
    [
        ("host-a-4242-1f2e3d", True),
        ("runner_1.eu@rack+2", True),
        ("r" * 128, True),
        ("", False),
        ("r" * 129, False),
        ("r1:commands", False),
        ("r1:calls", False),
        ("{r1}", False),
        ("r 1", False),
        ("r1\n", False),
        ("r\u00e9", False),
        (7, False),
    ],
)
def test_runner_ids_cannot_name_other_keys(runner_id: object, valid: bool) -> None:
    assert valid_runner_id(runner_id) is valid


def test_the_default_runner_id_is_a_valid_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("socket.gethostname", lambda: "odd host:name{1}")
    made = new_runner_id()
    assert valid_runner_id(made)
    assert made.startswith("odd-host-name-1--")
