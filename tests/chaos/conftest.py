"""Chaos and soak tests: sizes, markers and where results go.

``make test`` runs every test here at its short size (a few calls each); ``make chaos``
sets ``SWITCHBOARD_CHAOS_SIZE=full``: the same tests with more calls. The soak's length and
concurrency come from ``SWITCHBOARD_SOAK_S`` and ``SWITCHBOARD_SOAK_CALLS``.

The reconciliations of each chaos test (the soak writes its own file) are summed per
test into ``results/last_chaos.json`` at the full size, ``last_chaos_short.json``
otherwise: calls placed and accounted for, and what was lost, doubled or leaked.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import reconcile

FULL = os.environ.get("SWITCHBOARD_CHAOS_SIZE", "short") == "full"
RESULTS = Path(__file__).parent / "results"
SUMMED = (
    "calls_placed",
    "calls_accounted_for",
    "lost",
    "doubled_accepts",
    "doubled_tool_calls",
    "doubled_tool_runs",
    "tool_results_without_a_run",
    "unanswered_tool_calls",
    "tool_calls_lost_with_a_runner",
    "overlapping_attachments",
    "leaked_admission_slots",
    "defective_calls",
    "cost_mismatches",
)
_by_test: dict[str, dict[str, Any]] = {}


def size(short: int, full: int) -> int:
    """How many calls (or rounds) a test uses at the current size."""
    return full if FULL else short


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "chaos: process-level faults (more calls in `make chaos`)")
    config.addinivalue_line("markers", "soak: the soak test (`make soak`; 60 s in `make test`)")


@pytest.fixture(autouse=True)
def _record_reconciliations(request: pytest.FixtureRequest) -> Iterator[None]:
    first = len(reconcile.SEEN)
    yield
    found = [result.as_json() for result in reconcile.SEEN[first:]]
    if found and request.node.get_closest_marker("soak") is None:
        figures = {name: sum(int(one[name]) for one in found) for name in SUMMED}
        figures["problems"] = sum(len(one["problems"]) for one in found)
        _by_test[request.node.name] = figures


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _by_test:
        return
    totals = {name: sum(one[name] for one in _by_test.values()) for name in SUMMED}
    report = {
        "size": "full" if FULL else "short",
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "tests": _by_test,
        "totals": totals,
    }
    name = "last_chaos.json" if FULL else "last_chaos_short.json"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / name).write_text(json.dumps(report, indent=2) + "\n")
