"""``switchboard config check`` and the worker's start-up checks, as real subprocesses."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support.procs import REPO, switchboard_argv

BROKEN = """\
profiles:
  support:
    instructions: Hello {caller}
routes:
  - action: {type: accept, profile: support}
  - match: {caller: "+15550006660"}
    action:
      type: reject
      code: 6030
"""


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {
        k: v for k, v in os.environ.items() if not k.startswith(("SWITCHBOARD_", "OPENAI_"))
    }
    return subprocess.run(
        switchboard_argv(*args),
        capture_output=True,
        text=True,
        timeout=60,
        env={**full_env, **(env or {})},
        cwd=REPO,
        check=False,
    )


def test_a_valid_policy_passes_with_a_summary(tmp_path: Path) -> None:
    good = tmp_path / "policy.yaml"
    good.write_text((REPO / "shared" / "demo_policy.yaml").read_text())
    result = run("config", "check", str(good))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        f"{good}: ok: 2 profiles, 4 routes, 1 schedule, 2 transfer targets, 1 tool, "
        "capacity 200, prices 2026-11-01"
    )


def test_an_error_names_the_file_line_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "policy.yaml"
    bad.write_text(BROKEN)
    result = run("config", "check", str(bad))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"{bad}:9: routes[1].action.code: Input should be less than or equal to 699"
    ]


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    result = run("config", "check", str(tmp_path / "nope.yaml"))
    assert result.returncode == 1
    assert "nope.yaml: cannot read" in result.stderr


@pytest.mark.parametrize("args", [("config", "check"), ("config", "check", "a", "b")])
def test_usage_errors_exit_2(args: tuple[str, ...]) -> None:
    assert run(*args).returncode == 2


def test_the_worker_needs_redis(tmp_path: Path) -> None:
    result = run("worker")
    assert result.returncode == 1
    assert "SWITCHBOARD_REDIS_URL is not set" in result.stderr


@pytest.mark.parametrize("queues", ["control", "commands", "post_call,commands"])
def test_a_worker_that_calls_the_api_needs_an_api_key(queues: str) -> None:
    result = run("worker", "--queues", queues, env={"SWITCHBOARD_REDIS_URL": "redis://x"})
    assert result.returncode == 1
    assert "OPENAI_API_KEY is not set" in result.stderr


def test_the_worker_refuses_a_broken_policy(tmp_path: Path) -> None:
    bad = tmp_path / "policy.yaml"
    bad.write_text(BROKEN)
    env = {
        "SWITCHBOARD_REDIS_URL": "redis://127.0.0.1:1/0",
        "SWITCHBOARD_CONFIG": str(bad),
        "OPENAI_API_KEY": "sk-test",
    }
    result = run("worker", env=env)
    assert result.returncode == 1
    assert f"{bad}:9: routes[1].action.code" in result.stderr


def test_the_worker_refuses_unknown_queues() -> None:
    result = run("worker", "--queues", "control,bogus", env={"SWITCHBOARD_REDIS_URL": "redis://x"})
    assert result.returncode == 2
    assert "bogus" in result.stderr
