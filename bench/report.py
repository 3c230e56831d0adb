"""Benchmark results: figures beside their targets, the machine they ran on, JSON files.

Every benchmark builds a ``Report`` of ``Figure``s; a figure with a target says whether
it meets it. ``Report.save`` writes ``bench/results/NAME.json`` and prints the JSON;
``bench.summary`` gathers those files into the summary and the README table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinity replaced by ``None`` (JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def machine() -> dict[str, Any]:
    """What the figures were measured on: cores, CPU model, Python, load at the start."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


@dataclass(frozen=True)
class Figure:
    """One measured number; ``op``/``target`` is its target (``None``: for information)."""

    name: str
    value: float
    unit: str
    op: str | None = None
    target: float | None = None

    @property
    def passed(self) -> bool | None:
        if self.op is None or self.target is None:
            return None
        if math.isnan(self.value):
            return False
        if self.op == ">=":
            return self.value >= self.target
        if self.op == "<=":
            return self.value <= self.target
        if self.op == "==":
            return self.value == self.target
        raise ValueError(f"unknown comparison {self.op!r}")

    def as_json(self) -> dict[str, Any]:
        value = None if math.isnan(self.value) else round(self.value, 3)
        target = f"{self.op} {self.target:g} {self.unit}".strip() if self.op else None
        return {
            "name": self.name,
            "value": value,
            "unit": self.unit,
            "target": target,
            "pass": self.passed,
        }


@dataclass
class Report:
    """The result of one benchmark."""

    name: str
    title: str
    command: str
    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    plot: str | None = None

    def add(
        self, name: str, value: float, unit: str, op: str | None = None, target: float | None = None
    ) -> Figure:
        figure = Figure(name, float(value), unit, op, target)
        self.figures.append(figure)
        return figure

    @property
    def passed(self) -> bool:
        return all(f.passed is not False for f in self.figures)

    def as_json(self) -> dict[str, Any]:
        return {
            "benchmark": self.name,
            "title": self.title,
            "command": self.command,
            "machine": machine(),
            "passed": self.passed,
            "figures": [f.as_json() for f in self.figures],
            "details": self.details,
            "notes": self.notes,
            "plot": self.plot,
        }

    def save(self) -> Path:
        """Write ``results/NAME.json``, print it, and return its path."""
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"{self.name}.json"
        text = json.dumps(finite(self.as_json()), indent=2, allow_nan=False, default=str)
        path.write_text(text + "\n")
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
        return path


DEFAULT_WINDOW_S = 30.0
"""The steady measuring window performance.md asks for."""


def main_for(run: Callable[[float], Report]) -> None:
    """The ``python -m bench.NAME [--window S]`` entry point of one benchmark."""
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--window",
        type=float,
        default=float(os.environ.get("BENCH_WINDOW_S", DEFAULT_WINDOW_S)),
        help="seconds of steady measurement per phase (default 30, or $BENCH_WINDOW_S)",
    )
    args = parser.parse_args()
    report = run(args.window)
    report.details.setdefault("window_s", args.window)
    report.save()
