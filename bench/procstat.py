"""CPU time and resident memory of a process, read from ``/proc`` (Linux)."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path

_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S


def machine_cpu_s() -> tuple[float, float]:
    """CPU seconds of the whole machine so far, summed over cores: (busy, all)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / _TICKS_PER_S, sum(fields[:8]) / _TICKS_PER_S


def rss_bytes(pid: int) -> int:
    """Resident set size in bytes."""
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE_BYTES


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (a Celery worker's pool processes, for example)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat[1]) == pid:
            found.append(int(entry.name))
    return found


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process and its direct children (a Celery worker and its pool)."""
    total = cpu_s(pid)
    for child in children(pid):
        with contextlib.suppress(OSError):  # a pool process that just exited
            total += cpu_s(child)
    return total


def child_running(pid: int, needle: str) -> int | None:
    """A direct child of ``pid`` whose command line contains ``needle``, if any."""
    for child in children(pid):
        with contextlib.suppress(OSError):
            if needle in Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode():
                return child
    return None


class CpuSampler:
    """Samples a process's CPU seconds in a thread, to read CPU used between two instants."""

    def __init__(self, pid: int, period_s: float = 0.2) -> None:
        self.pid = pid
        self.period_s = period_s
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while True:
            try:
                self.samples.append((time.time(), cpu_s(self.pid)))
            except OSError:
                return
            if self._stop.wait(self.period_s):
                return

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def at(self, when: float) -> float:
        """CPU seconds used by ``when`` (wall clock), interpolated between samples."""
        earlier = [s for s in self.samples if s[0] <= when]
        later = [s for s in self.samples if s[0] >= when]
        if not earlier:
            return self.samples[0][1]
        if not later:
            return self.samples[-1][1]
        (t0, c0), (t1, c1) = earlier[-1], later[0]
        return c0 if t1 == t0 else c0 + (c1 - c0) * (when - t0) / (t1 - t0)

    def between(self, start: float, end: float) -> float:
        return self.at(end) - self.at(start)
