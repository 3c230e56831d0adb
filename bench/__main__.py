"""``python -m bench [NAME ...] [--window S]``: run benchmarks, then write the summary.

Each benchmark runs as its own process (``python -m bench.NAME``), one after the other,
so that one's leftovers cannot slow the next. With no NAME, all of them run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from bench.report import DEFAULT_WINDOW_S, RESULTS
from bench.summary import write_summary

BENCHMARKS = (
    "ingest",
    "call_setup",
    "runner_density",
    "tool_overhead",
    "command_latency",
    "failover",
    "emulator_scale",
)
FINDINGS = RESULTS / "FINDINGS.md"
"""Hand-written analysis appended to the README table when present."""


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME", help=", ".join(BENCHMARKS))
    parser.add_argument("--window", type=float, default=DEFAULT_WINDOW_S)
    args = parser.parse_args()
    unknown = sorted(set(args.names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    failed = []
    for name in args.names or BENCHMARKS:
        print(f"== bench {name} (window {args.window:g} s)", file=sys.stderr, flush=True)
        argv = [sys.executable, "-m", f"bench.{name}", "--window", str(args.window)]
        if subprocess.run(argv, check=False).returncode != 0:
            failed.append(name)
    notes = FINDINGS.read_text() if FINDINGS.exists() else ""
    path = write_summary(list(BENCHMARKS), notes)
    print(f"summary: {path}", file=sys.stderr)
    if failed:
        print(f"benchmarks that did not finish: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
