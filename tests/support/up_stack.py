"""``switchboard up`` as a child process for system tests, and the operator verbs against it.

``running_up`` starts ``up`` in a fresh working directory with a clean environment (no
``SWITCHBOARD_*``/``OPENAI_*`` from the developer's shell), waits for its ``up.json``
and always stops it; the test can also stop it itself and check how. ``survivors``
finds any process still in the process group of a child ``up`` started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis

from shared.models import CallRecord
from shared.runner_registry import list_runners
from shared.store import CallStore
from tests.support.procs import Child, spawn, switchboard_argv, wait_until


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without Switchboard or OpenAI settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SWITCHBOARD_", "OPENAI_"))}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout_s: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run one ``switchboard`` verb to completion."""
    return subprocess.run(
        switchboard_argv(*args),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=env or clean_env(),
        cwd=cwd,
        check=False,
    )


def cli_json(*args: str, cwd: Path) -> Any:
    """Run a verb with ``--json``; it must succeed."""
    result = cli(*args, "--json", cwd=cwd)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def survivors(pgids: list[int]) -> list[str]:
    """Processes (``pid command``) whose process group is one of ``pgids``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the command (in parentheses): state, ppid, pgrp, ...
        after = stat.rsplit(")", 1)[1].split()
        if after[0] != "Z" and int(after[2]) in pgids:
            found.append(f"{entry.name} {stat.split('(', 1)[1].split(')', 1)[0]}")
    return found


@dataclass
class UpStack:
    """A running ``switchboard up``: its process, working directory and ``up.json``."""

    child: Child
    cwd: Path
    info: dict[str, Any]

    @property
    def emulator(self) -> str:
        return str(self.info["emulator_url"])

    @property
    def child_pids(self) -> list[int]:
        return [int(pid) for pid in self.info["children"].values()]

    def ledger(self) -> dict[str, Any]:
        result: dict[str, Any] = httpx.get(f"{self.emulator}/_emulator/ledger", timeout=5).json()
        return result

    def emulator_call(self, call_id: str) -> dict[str, Any]:
        url = f"{self.emulator}/_emulator/calls/{call_id}"
        result: dict[str, Any] = httpx.get(url, params={"events": "0"}, timeout=5).json()
        return result

    def place_call(self, scenario: str, caller: str = "+14155550100") -> str:
        body = {"from": caller, "to": "+18005550100", "scenario": scenario}
        response = httpx.post(f"{self.emulator}/_emulator/calls", json=body, timeout=5)
        assert response.status_code == 200, response.text
        return str(response.json()["call_id"])

    def record(self, call_id: str) -> CallRecord | None:
        """The call's record straight from the stack's Redis (for cheap polling)."""
        client = redis.Redis.from_url(str(self.info["redis_url"]), decode_responses=True)
        try:
            return CallStore(client).get(call_id)
        finally:
            client.close()

    def runner_ids(self) -> set[str]:
        client = redis.Redis.from_url(str(self.info["redis_url"]), decode_responses=True)
        try:
            return {entry.runner_id for entry in list_runners(client)}
        finally:
            client.close()

    def output(self) -> str:
        return self.child.log_path.read_text(errors="replace")


@contextmanager
def running_up(workdir: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[UpStack]:
    """``switchboard up ARGS`` in ``workdir``; yields once ``up.json`` is written."""
    workdir.mkdir(parents=True, exist_ok=True)
    child = spawn("up", switchboard_argv("up", *args), workdir, env=env or clean_env(), cwd=workdir)
    up_file = workdir / ".switchboard" / "up.json"
    pgids: list[int] = []
    try:
        wait_until(up_file.exists, 60.0, "up.json", child)
        info = json.loads(up_file.read_text())
        pgids = [int(pid) for pid in info["children"].values()]
        yield UpStack(child, workdir, info)
    finally:
        if child.alive():
            child.proc.send_signal(signal.SIGTERM)
            try:
                child.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.stop(signal.SIGKILL)
        for pgid in pgids:
            # Belt and braces: a failing test must not leave the stack behind.
            with suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
