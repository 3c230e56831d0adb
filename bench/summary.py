"""The summary of all benchmark results: ``results/summary.json`` and ``results/README.md``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.report import RESULTS, machine

HEADER = """\
# Benchmark results

Produced by `make bench` (`python -m bench`); each row's command reproduces its figure
alone. Targets are those of `docs/performance.md`. Each benchmark runs the system
under test, the emulator producing its load, the load generator and Redis on the same
cores, so tails include time spent waiting for a core.

Machine: {nproc} cores, {cpu_model}, Python {python} ({platform}); load average at
the start of the summary: {loadavg_1m}.

| benchmark | figure | value | target | pass | command |
| --- | --- | --- | --- | --- | --- |
"""


def _value(figure: dict[str, Any]) -> str:
    value = figure["value"]
    if value is None:
        return "n/a"
    return (
        f"{value:,.3g} {figure['unit']}" if abs(value) < 100 else f"{value:,.0f} {figure['unit']}"
    )


def _pass(figure: dict[str, Any]) -> str:
    return {True: "yes", False: "**no**", None: ""}[figure["pass"]]


def write_summary(names: list[str], notes: str = "") -> Path:
    """Gather ``results/NAME.json`` of ``names`` (those present) into the summary files."""
    results = []
    for name in names:
        path = RESULTS / f"{name}.json"
        if path.exists():
            results.append(json.loads(path.read_text()))
    info = machine()
    (RESULTS / "summary.json").write_text(
        json.dumps({"machine": info, "results": results}, indent=2) + "\n"
    )
    lines = [HEADER.format(**info)]
    for result in results:
        for figure in result["figures"]:
            lines.append(
                f"| {result['benchmark']} | {figure['name']} | {_value(figure)} | "
                f"{figure['target'] or ''} | {_pass(figure)} | `{result['command']}` |\n"
            )
    lines.append("\nPlots: " + ", ".join(f"`{r['plot']}`" for r in results if r["plot"]) + "\n")
    if notes:
        lines.append("\n" + notes)
    path = RESULTS / "README.md"
    path.write_text("".join(lines))
    return path
