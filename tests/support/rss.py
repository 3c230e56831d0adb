"""Resident memory of processes over a run: samples by name, and what they add up to.

``rss_kib(pid)`` reads it from ``/proc`` (``bench.procstat``); ``RssSamples`` keeps
``(seconds into the run, KiB)`` per process name and ``report()`` gives, per process,
its first, last and peak values, its growth over the life it was sampled for, and that
growth per hour.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench.procstat import rss_bytes


def rss_kib(pid: int) -> int | None:
    """The resident set size of ``pid`` in KiB; None if the process is gone."""
    try:
        return rss_bytes(pid) // 1024
    except OSError:
        return None


@dataclass
class RssSamples:
    """Samples of several processes' resident memory, by name."""

    by_name: dict[str, list[tuple[float, int]]] = field(default_factory=dict)

    def add(self, name: str, at_s: float, kib: int | None) -> None:
        """Record one sample (a process already gone, ``kib`` None, is skipped)."""
        if kib is not None:
            self.by_name.setdefault(name, []).append((at_s, kib))

    def first_at_or_after(self, name: str, at_s: float) -> tuple[float, int] | None:
        """The first sample of ``name`` taken at ``at_s`` or later."""
        return next((s for s in self.by_name.get(name, []) if s[0] >= at_s), None)

    def report(self) -> dict[str, dict[str, Any]]:
        """Per process: first, last and peak KiB, growth over its sampled life and per hour."""
        report: dict[str, dict[str, Any]] = {}
        for name, samples in sorted(self.by_name.items()):
            (first_at, first), (last_at, last) = samples[0], samples[-1]
            life_s = last_at - first_at
            growth = last - first
            report[name] = {
                "samples": len(samples),
                "first_at_s": round(first_at, 1),
                "last_at_s": round(last_at, 1),
                "first_kib": first,
                "last_kib": last,
                "peak_kib": max(kib for _, kib in samples),
                "growth_kib": growth,
                "growth_pct": round(100.0 * growth / first, 1),
                "growth_kib_per_hour": round(growth * 3600.0 / life_s) if life_s > 0 else None,
            }
        return report
